"""The app's Playground outside Streamlit: load a checkpoint, score typed text as `cyb eval
--text` does, lay it out for the Text page's views, generate with pauses, and save a result
as an ordinary evaluation.

Scoring goes through analysis.evaluation (`score_docs`: the same evaluation, tagging and
tables as `cyb eval`), so a playground evaluation stored with `save` holds the rows `cyb eval
--text` would store for the same text and checkpoint, under its own dataset and document
names. `view` runs the Text and Latency pages' own queries (analysis.text.doc_page,
analysis.queries.pause_histogram) over an in-memory DuckDB holding the unsaved result, so the playground shows
exactly what those pages will show once it is saved. Nothing touches the database file
before `save`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa

from cyb_core.names import LIVE_MODES

from . import evaluation, queries, schema, store, text
from .eval_inputs import EvalError
from .eval_model import load_model
from .eval_targets import Target, find_stored_checkpoint, read_train_log, resolve_target, run_row
from .store import StoreError

MAX_CHARS = 6000  # typed text to score: about 1,200 tokens, a second or two on a CPU
MAX_PROMPT_CHARS = 2000
MAX_NEW_TOKENS = 256
DOC_ID = "playground"  # the document id of a saved playground text
HIST_BINS = 20
# loading takes the weights and about as much again (a float32 copy, buffers); a tokenizer in
# memory takes a few times its JSON file
LOAD_FACTOR = 2.0
TOKENIZER_FACTOR = 4.0


def check_text(text: str, limit: int = MAX_CHARS, what: str = "text") -> str:
    """The text to score or continue, line ends normalised as `cyb eval --text` reads a file;
    StoreError for an empty or over-long one."""
    text = (text or "").replace("\r\n", "\n")
    if not text.strip():
        raise StoreError(f"the {what} is empty: type or paste some text")
    if "\x00" in text:  # as `cyb eval --text` refuses a file with one: it would be a token
        raise StoreError(
            f"the {what} contains a NUL character (at position {text.index(chr(0)):,}), so it is "
            "not text: remove it"
        )
    if len(text) > limit:
        raise StoreError(
            f"the {what} has {len(text):,} characters; the playground takes at most {limit:,}: "
            "shorten it, or evaluate the file with `cyb eval CHECKPOINT --text FILE`"
        )
    return text


def dataset_name(text: str) -> str:
    """`playground/<first words>-<hash>`: readable, and two texts that start alike do not
    replace each other's evaluation (the same text saved again does)."""
    words = re.findall(r"[A-Za-z0-9]+", text)[:5]
    head = "_".join(words)[:40] or "text"
    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:6]
    return f"playground/{head}-{digest}"


# ----------------------------------------------------------------------------- checkpoints


def run_checkpoints(runs: pd.DataFrame, roots: tuple[Path, ...] = ()) -> pd.DataFrame:
    """The stored runs (analysis.runs.run_rows) whose checkpoint is on disk: run_id, variant,
    w, checkpoint (an existing path). A relative path counts from the working directory, else
    from each of `roots` (e.g. the folder the database's project lives in)."""
    out = []
    for r in runs.to_dict("records"):
        params = json.loads(r["params"]) if isinstance(r.get("params"), str) else {}
        ckpt = params.get("checkpoint")
        if not ckpt:
            continue
        cyb = params.get("cyb") or {}
        p = find_stored_checkpoint(ckpt, roots)
        if p is None:  # (resolve_target would look a missing path up as a run id)
            continue
        try:
            found = resolve_target(p).checkpoint
        except EvalError:  # no longer a checkpoint
            continue
        out.append(
            {
                "run_id": r["run_id"],
                "variant": cyb.get("variant"),
                "w": cyb.get("w"),
                "checkpoint": str(found.resolve()),
            }
        )
    return pd.DataFrame(out, columns=["run_id", "variant", "w", "checkpoint"])


def weights_bytes(checkpoint: Path) -> int:
    return sum(f.stat().st_size for f in Path(checkpoint).glob("*.safetensors"))


def available_memory(device) -> int | None:
    """Bytes free for a model on `device` (None: unknown)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:  # Linux: what can be had without swapping
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (ValueError, UnicodeDecodeError):
        return {}  # the loader names a broken file in its own words
    return data if isinstance(data, dict) else {}


def tokenizer_size(checkpoint: Path) -> int:
    """Ids in the checkpoint's tokenizer.json (its vocabulary plus added tokens); 0 without one."""
    tok = _json(Path(checkpoint) / "tokenizer.json")
    vocab = (tok.get("model") or {}).get("vocab") or {}
    ids = set(vocab.values()) if isinstance(vocab, dict) else set(range(len(vocab)))
    ids |= {t.get("id") for t in tok.get("added_tokens") or [] if isinstance(t, dict)}
    return len(ids)


def memory_need(checkpoint: Path) -> int:
    """Bytes loading the checkpoint takes: its weights (LOAD_FACTOR), the rows a larger tokenizer
    adds to the embeddings (float32, twice when input and output are not tied, from config.json's
    shapes), and the tokenizer itself (TOKENIZER_FACTOR x its files)."""
    checkpoint = Path(checkpoint)
    cfg = _json(checkpoint / "config.json")
    cfg = {**(cfg.get("text_config") or {}), **cfg}
    hidden = next((cfg[k] for k in ("hidden_size", "n_embd", "d_model") if k in cfg), 0)
    vocab = cfg.get("vocab_size") or 0
    grow = 0
    if isinstance(hidden, int) and isinstance(vocab, int):
        tied = cfg.get("tie_word_embeddings", True)
        grow = max(0, tokenizer_size(checkpoint) - vocab) * hidden * 4 * (1 if tied else 2)
    tok_files = sum(f.stat().st_size for f in checkpoint.glob("*token*") if f.is_file())
    return int(LOAD_FACTOR * (weights_bytes(checkpoint) + grow) + TOKENIZER_FACTOR * tok_files)


def check_fits(checkpoint: Path, device) -> None:
    """StoreError when loading the checkpoint would not fit in the device's free memory."""
    need = memory_need(checkpoint)
    free = available_memory(device)
    if free is not None and need > free:
        raise StoreError(
            f"{checkpoint} is too big to load here: about {need / 2**30:.1f} GiB needed, "
            f"{free / 2**30:.1f} GiB free on {device}; free memory or pick a smaller model "
            "(`cyb app --device` chooses where models are loaded)"
        )


@dataclass
class Loaded:
    target: Target
    model: object  # cyb_core.model.CYBModel

    @property
    def w(self) -> int:
        return self.model.settings.w


def load(path: str | Path, device="cpu", run_id: str | None = None) -> Loaded:
    """A run directory or checkpoint, loaded for scoring and generation; every problem (no
    such path, not a checkpoint, too big, weights of another shape, a corrupt file) is one
    StoreError that says what to do."""
    from safetensors import SafetensorError

    if not str(path).strip():
        raise StoreError("no checkpoint given: pick a run or type a checkpoint path")
    target = resolve_target(Path(str(path).strip()), run_id)
    check_fits(target.checkpoint, device)
    corrupt = (
        f"cannot read the weights in {target.checkpoint}: the file is corrupt or truncated; "
        "copy the checkpoint again"
    )
    try:
        model = load_model(target.checkpoint, device)
    except EvalError as e:  # load_model's own message, in the page's words for a bad file
        if isinstance(e.__cause__, SafetensorError):
            raise StoreError(f"{corrupt} ({str(e.__cause__).splitlines()[0]})") from e
        raise
    except RuntimeError as e:  # torch: size mismatch between config.json and the weights
        raise StoreError(
            f"the weights in {target.checkpoint} do not fit its config.json (a model of another "
            "shape); re-save the checkpoint with `save_pretrained`"
        ) from e
    except MemoryError as e:
        raise StoreError(f"{target.checkpoint} does not fit in memory on {device}") from e
    return Loaded(target, model)


# ----------------------------------------------------------------------------- scoring


@dataclass
class Scored:
    """One checkpoint's evaluation of one text, ready to view or save."""

    target: Target
    settings: object  # the model's CYBSettings
    mode: str
    text: str
    tables: dict[str, pa.Table]  # tokens, docs, words (analysis.eval_tables.build_tables)
    summary: dict  # EvalResult.summary()

    @property
    def w(self) -> int:
        return self.settings.w


def score(
    loaded: Loaded,
    text: str,
    mode: str = "dense",
    *,
    seq_len: int = 128,
    batch_size: int = 16,
    dk_threshold: float | None = 0.5,
    seed: int = 0,
    nlp=None,
) -> Scored:
    """Score `text` as `cyb eval CHECKPOINT --text FILE` with the same settings does."""
    text = check_text(text)
    if mode not in LIVE_MODES:
        raise StoreError(f"mode must be one of {', '.join(LIVE_MODES)}, got {mode!r}")
    docs = [{"doc_id": DOC_ID, "text": text}]
    result, tables = evaluation.score_docs(
        loaded.model,
        docs,
        mode=mode,
        seq_len=seq_len,
        batch_size=batch_size,
        dk_threshold=dk_threshold,
        seed=seed,
        nlp=nlp,
    )
    return Scored(loaded.target, loaded.model.settings, mode, text, tables, result.summary())


def _memory_store(scored: list[Scored]):
    """An in-memory DuckDB with the store's schema holding each result as evaluation "0", "1"..."""
    con = duckdb.connect()
    schema.apply_schema(con)
    for i, s in enumerate(scored):
        eid = str(i)
        con.execute(
            "INSERT INTO runs (run_id, variant, w_max) VALUES (?, ?, ?)",
            [eid, s.settings.variant, s.w],
        )
        con.execute(
            "INSERT INTO evals (eval_id, run_id, dataset, mode, n_tokens, status) "
            "VALUES (?, ?, 'playground', ?, ?, 'complete')",
            [eid, eid, s.mode, s.tables["tokens"].num_rows],
        )
        con.register("staged", s.tables["docs"])
        con.execute("INSERT INTO docs BY NAME SELECT ? AS eval_id, * FROM staged", [eid])
        con.register("staged", s.tables["tokens"])
        source = f"(SELECT '{eid}' AS eval_id, * FROM staged)"  # eid: a number
        for statement in schema.lean_tokens(source, s.tables["tokens"].column_names):
            con.execute(statement)
        con.unregister("staged")
    return con


def view(scored: list[Scored], bins: int = HIST_BINS) -> tuple[list[pd.DataFrame], pd.DataFrame]:
    """(the Text page's rows of each result, their expected-pause histograms stacked with a
    `run` column holding the index of the result), from the pages' own queries."""
    con = _memory_store(scored)
    try:
        rows = [
            text.doc_page(con, str(i), DOC_ID, 0, s.tables["tokens"].num_rows)
            for i, s in enumerate(scored)
        ]
        hist = pd.concat(
            [
                queries.pause_histogram(con, str(i), "expected", bins).assign(run=str(i))
                for i in range(len(scored))
            ],
            ignore_index=True,
        )
    finally:
        con.close()
    return rows, hist


def save(
    scored: Scored,
    db: str | Path | None = None,
    dataset: str | None = None,
    run_id: str | None = None,
    timeout: float = 30.0,
) -> str:
    """Store the result as an ordinary evaluation (analysis.store.write_eval, one transaction)
    of dataset `dataset` (default: dataset_name(text)); returns its eval_id."""
    tgt = scored.target
    if run_id:
        tgt = Target(run_id, tgt.checkpoint, tgt.run_dir, tgt.status, tgt.config, tgt.log_path)
    dataset = (dataset or dataset_name(scored.text)).strip()
    store.make_eval_id(tgt.run_id, dataset, scored.mode)  # a bad name fails before any write
    log = read_train_log(tgt.log_path)
    return store.write_eval(
        db,
        run=run_row(tgt, scored.settings, log),
        train_log=log,
        eval_row={"run_id": tgt.run_id, "dataset": dataset, "mode": scored.mode},
        timeout=timeout,
        **scored.tables,
    )


# ----------------------------------------------------------------------------- generation


def generate(
    loaded: Loaded,
    prompt: str,
    *,
    recipe: str = "constant",
    max_new_tokens: int = 40,
    sample: bool = False,
    readout: str = "greedy",
    seed: int = 0,
) -> Iterator[tuple[str, int]]:
    """Checked settings, then cyb_core.engine.stream: (text piece, pauses) per token as it is
    produced, the pauses as `cyb generate --show-pauses` prints them."""
    from cyb_core import engine

    prompt = check_text(prompt, MAX_PROMPT_CHARS, "prompt")
    if not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise StoreError(f"max new tokens must be in 1..{MAX_NEW_TOKENS}, got {max_new_tokens}")
    return engine.stream(
        loaded.model,
        prompt,
        recipe=recipe,
        max_new_tokens=max_new_tokens,
        do_sample=sample,
        readout=readout,
        seed=seed,
    )
