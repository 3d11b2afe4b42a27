"""Check the spaCy alignment against the Brown corpus gold tags of the held-out Brown files.

For every model token (project tokenizer, character offsets) the annotation comes from the
spaCy token covering its first non-space character (analysis.pos.align, the same code as
`cyb eval`); the gold tag from the Brown token covering that character. Compared are the
word-initial tokens (the character starts both the spaCy and the gold word) where both
schemes cut the same word (same end; Brown's "$1,500", "50%", "2-year-old" are one token,
spaCy's are two) or the gold word is a contraction (wasn't = bedz*, it's = pps+bez: the
first part is compared), and whose Brown tag has a Penn Treebank counterpart. Agreement:
spaCy's fine tag is one of the PTB tags the Brown tag maps to. Words in titles and names
(Brown -tl: "Judge", "Criminal Court") are proper nouns in PTB, so NNP/NNPS also count for
them; `agreement_strict` does not allow that.
Run: python benchmarks/pos_gold_check.py [--root data/corpus]
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from . import pos

# Brown tags with a Penn Treebank counterpart, for the word a model token starts. Brown "vb"
# covers both the base form and the non-3rd-person present (PTB VB / VBP); the forms of
# be/have/do have their own Brown tags. Left out as not shared: ap (many, several), abn/abx
# (all, both), ql (very, enough), cs (subordinators, PTB IN or WDT), od (first), nr (home,
# today), jjs (chief), rn (here), punctuation and quotes.
BROWN_TO_PTB: dict[str, set[str]] = {
    "nn": {"NN"},
    "nn$": {"NN"},
    "nns": {"NNS"},
    "nns$": {"NNS"},
    "np": {"NNP"},
    "np$": {"NNP"},
    "nps": {"NNPS"},
    "nps$": {"NNPS"},
    "vb": {"VB", "VBP"},
    "vbd": {"VBD"},
    "vbz": {"VBZ"},
    "vbg": {"VBG"},
    "vbn": {"VBN"},
    "be": {"VB"},
    "bem": {"VBP"},
    "ber": {"VBP"},
    "bez": {"VBZ"},
    "bed": {"VBD"},
    "bedz": {"VBD"},
    "ben": {"VBN"},
    "beg": {"VBG"},
    "hv": {"VB", "VBP"},
    "hvz": {"VBZ"},
    "hvd": {"VBD"},
    "hvn": {"VBN"},
    "hvg": {"VBG"},
    "do": {"VB", "VBP"},
    "doz": {"VBZ"},
    "dod": {"VBD"},
    "jj": {"JJ"},
    "jjr": {"JJR"},
    "jjt": {"JJS"},
    "rb": {"RB"},
    "rbr": {"RBR"},
    "rbt": {"RBS"},
    "in": {"IN"},
    "cc": {"CC"},
    "md": {"MD"},
    "to": {"TO"},
    "cd": {"CD"},
    "ex": {"EX"},
    "uh": {"UH"},
    "at": {"DT"},
    "dt": {"DT"},
    "dti": {"DT"},
    "dts": {"DT"},
    "pps": {"PRP"},
    "ppss": {"PRP"},
    "ppo": {"PRP"},
    "ppl": {"PRP"},
    "ppls": {"PRP"},
    "pp$": {"PRP$"},
    "wdt": {"WDT"},
    "wps": {"WP"},
    "wpo": {"WP"},
    "wp$": {"WP$"},
    "wrb": {"WRB"},
    "rp": {"RP"},
}
_SUFFIXES = ("-tl", "-hl", "-nc")  # title, headline, cited: same word class


def normalize(tag: str) -> str | None:
    """Brown tag -> the key of BROWN_TO_PTB for the word's first part, or None.

    Suffixes -tl/-hl/-nc are dropped; contractions keep their first part (pps+bez "it's" ->
    pps, bedz* "wasn't" -> bedz); foreign words (fw-) are skipped."""
    tag = tag.lower()
    if tag.startswith("fw-"):
        return None
    tag = tag.split("+")[0]
    for s in _SUFFIXES:
        tag = tag.replace(s, "")
    tag = tag.rstrip("*")
    return tag if tag in BROWN_TO_PTB else None


def _compare_doc(g: dict, text: str, w, offs, counts: Counter) -> list[tuple]:
    """(gold PTB tags, Brown tag, spaCy tag, agree, agree strictly) for the compared model tokens
    of one document (`g` its gold tokens, `w` its spaCy words, `offs` its model tokens' character
    offsets); the other tokens are counted in `counts` by why they were left out."""
    rows = []
    offs = np.asarray(offs, dtype=np.int64).reshape(-1, 2)
    ann = pos.align(text, offs[:, 0], offs[:, 1], w)
    p = pos.first_nonspace(text, offs[:, 0], offs[:, 1])
    gs = np.array([t[0] for t in g["tokens"]], dtype=np.int64)
    ge = np.array([t[1] for t in g["tokens"]], dtype=np.int64)
    gtags = [t[3] for t in g["tokens"]]
    k = pos.covering(gs, ge, p)
    counts["model_tokens"] += len(p)
    wk = pos.covering(w.start, w.end, p)
    for i in np.flatnonzero(ann["word_start"] == True):  # noqa: E712 - object array of True/False/None
        counts["spacy_word_initial"] += 1
        if k[i] < 0 or gs[k[i]] != p[i]:
            continue
        counts["both_word_initial"] += 1
        gtag = gtags[k[i]].lower()
        if ge[k[i]] != w.end[wk[i]] and not ("+" in gtag or "*" in gtag):
            counts["different_extent"] += 1
            continue
        key = normalize(gtag)
        if key is None:
            continue
        ptb, tag = BROWN_TO_PTB[key], ann["tag"][i]
        title = "-tl" in gtag and key.startswith(("nn", "jj", "vb"))
        strict = tag in ptb
        rows.append(
            (
                "/".join(sorted(ptb)),
                key,
                tag,
                strict or (title and tag in ("NNP", "NNPS")),
                strict,
            )
        )
    return rows


def brown_agreement(
    root: str | Path = "data/corpus",
    tokenizer: str | Path = "data/tokenizer",
    nlp=None,
    max_docs: int | None = None,
    progress: bool = False,
) -> dict:
    """Agreement of spaCy's fine tag with the gold Brown tag on word-initial model tokens.

    Returns counts and rates plus `per_tag` (a DataFrame by PTB tag: n, agree, rate, strict
    rate, the most frequent spaCy tag when they disagree) and `confusions` (top gold -> spaCy
    pairs among the disagreements)."""
    from cyb_core import tokenizer as tok_lib
    from cyb_core.corpus import load_split

    gold = load_split("heldout_brown_pos", Path(root))[:max_docs]
    texts = {d["doc_id"]: d["text"] for d in load_split("heldout", Path(root))}
    gold = [g for g in gold if g["doc_id"] in texts]
    docs = [texts[g["doc_id"]] for g in gold]
    tok = tok_lib.load(tokenizer)
    words = pos.tag_texts(docs, nlp, progress=progress)
    enc = tok(docs, add_special_tokens=False, return_offsets_mapping=True)
    counts = Counter()
    rows = []
    for g, text, w, offs in zip(gold, docs, words, enc["offset_mapping"], strict=True):
        rows += _compare_doc(g, text, w, offs, counts)
    df = pd.DataFrame(rows, columns=["gold", "brown", "spacy", "agree", "agree_strict"])
    per_tag = (
        df.groupby("gold")
        .agg(n=("agree", "size"), agree=("agree", "sum"), strict=("agree_strict", "mean"))
        .assign(rate=lambda x: x["agree"] / x["n"])
        .sort_values("n", ascending=False)
    )
    wrong = df[~df["agree"]]
    per_tag["most_common_other"] = wrong.groupby("gold")["spacy"].agg(
        lambda s: s.value_counts().index[0]
    )
    per_tag = per_tag[["n", "agree", "rate", "strict", "most_common_other"]]
    confusions = wrong.groupby(["gold", "spacy"]).size().sort_values(ascending=False).head(15)
    return {
        "docs": len(docs),
        "model_tokens": counts["model_tokens"],
        "spacy_word_initial": counts["spacy_word_initial"],
        "both_word_initial": counts["both_word_initial"],
        "boundary_agreement": counts["both_word_initial"] / max(counts["spacy_word_initial"], 1),
        "different_extent": counts["different_extent"],
        "compared": len(df),
        "agreement": float(df["agree"].mean()) if len(df) else float("nan"),
        "agreement_strict": float(df["agree_strict"].mean()) if len(df) else float("nan"),
        "per_tag": per_tag.reset_index(),
        "confusions": confusions.rename("n").reset_index(),
    }
