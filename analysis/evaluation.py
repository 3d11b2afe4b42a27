"""`cyb eval`: evaluate a run or checkpoint, tag the text with spaCy, store it in one write.

run_id (one rule, `run_id_of`): for a run directory (runs/NAME, with final/ or ckpt/) or one of
its checkpoints (runs/NAME/final, runs/NAME/ckpt), the id the directory records in run.json
(the experiment runner records `<experiment>.<run>`, e.g. demo.cyb-ap-1x1-s0) or else its name;
otherwise the checkpoint directory's name (data/base -> "base"). `--run-id` overrides it.
TARGET may also be a run id the database knows: its stored checkpoint is evaluated again.
dataset: the split name for the default corpus root (heldout), ROOTNAME/split for another
root (fixture/heldout), text/FILENAME for a text file; truncation with max_docs/max_chars
adds .dN / .cN so a partial evaluation never replaces a full one.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from cyb_core import synthetic
from cyb_core.errors import read_user_text
from cyb_core.names import mode_name

from . import pos, store
from .store import StoreError

DEFAULT_ROOT = Path("data/corpus")
LOG_COLUMNS = ("step", "tokens_seen", "loss", "lr", "mean_expected_pauses", "elapsed_s")


@dataclass
class Target:
    run_id: str
    checkpoint: Path
    run_dir: Path | None  # None for a bare checkpoint
    status: str  # complete | partial | checkpoint
    config: dict | None  # the run's config.json (TrainConfig), when known
    log_path: Path | None


def _is_checkpoint(p: Path) -> bool:
    return (p / "config.json").is_file() and any(p.glob("*.safetensors"))


RUN_FILE = "run.json"  # in a run directory: {"run_id": ...}, written by record_run_id


def record_run_id(run_dir: str | Path, run_id: str) -> None:
    """Make `run_id` the id of the run directory, whichever command registers it later."""
    from cyb_core.atomic import atomic_write

    run_dir = Path(run_dir)
    if run_id_of(run_dir) != run_id:
        text = json.dumps({"run_id": run_id}) + "\n"
        atomic_write(run_dir / RUN_FILE, lambda p: p.write_text(text))


def run_id_of(run_dir: str | Path) -> str:
    """The id of a run directory: the one recorded in its run.json, else the directory's name."""
    run_dir = Path(run_dir)
    try:
        return json.loads((run_dir / RUN_FILE).read_text())["run_id"]
    except (OSError, ValueError, KeyError, TypeError):
        return run_dir.resolve().name


def find_stored_checkpoint(stored: str, roots: tuple[Path, ...] = ()) -> Path | None:
    """A checkpoint path as a run stored it, found on disk, or None: a relative path counts from
    the working directory, else from each of `roots`. A stored run/final or run/ckpt gives the
    run directory, so a run evaluated while partial is found complete later."""
    for base in (Path("."), *roots):
        p = base / stored  # an absolute `stored` ignores base
        if p.name in ("final", "ckpt") and (p.parent / "log.jsonl").is_file():
            return p.parent
        if p.exists():
            return p
    return None


def _stored_checkpoint(run_id: str, db: str | Path | None) -> Path | None:
    """The checkpoint the database stored for `run_id`, found on disk, or None. A relative path
    counts from the working directory, else from the folder that holds the database's folder
    (data/cyb.duckdb -> the project), by find_stored_checkpoint."""
    from .runs import run_checkpoint

    path = store.default_db_path(db)
    if not path.is_file():
        return None
    with store.reading(path) as con:
        stored = run_checkpoint(con, run_id)
    if stored is None:
        return None
    found = find_stored_checkpoint(stored, (path.resolve().parent.parent,))
    if found is not None:
        return found
    raise StoreError(
        f"run {run_id} was evaluated from {stored}, which is gone: give its directory instead"
    )


def resolve_target(
    path: str | Path, run_id: str | None = None, db: str | Path | None = None
) -> Target:
    """Find the checkpoint to evaluate and what is known about its run (see module docstring).
    A `path` that does not exist is looked up as a run id in the database `db`, then as a hub
    id in the local Hugging Face cache (never downloaded: a mistyped run id must not go online).
    """
    path = Path(path)
    if not path.exists():
        known = _stored_checkpoint(str(path), db)
        if known is None:
            from cyb_core.model import cached

            known = cached(str(path))
        if known is None:
            raise StoreError(
                f"no run or checkpoint at {path}, no run {str(path)!r} in "
                f"{store.default_db_path(db)} and no such model in the local Hugging Face "
                "cache: give a directory, a stored run id or a cached hub id"
            )
        return resolve_target(known, run_id or str(path))
    run_dir, ckpt, status = None, None, "checkpoint"
    if _is_checkpoint(path / "final"):
        run_dir, ckpt, status = path, path / "final", "complete"
    elif _is_checkpoint(path / "ckpt"):
        run_dir, ckpt, status = path, path / "ckpt", "partial"
    elif _is_checkpoint(path):
        ckpt = path
        if path.name in ("final", "ckpt") and (path.parent / "log.jsonl").is_file():
            run_dir, status = path.parent, "complete" if path.name == "final" else "partial"
    else:
        raise StoreError(
            f"{path} is neither a run directory (with final/ or ckpt/) nor a checkpoint "
            "(config.json + *.safetensors)"
        )
    config, log_path = None, None
    if run_dir is not None:
        cfg = run_dir / "config.json"
        config = json.loads(cfg.read_text()) if cfg.is_file() else None
        log_path = run_dir / "log.jsonl"
    else:  # a published checkpoint (cyb pretrain's data/base) carries its config and log
        summary = ckpt / "summary.json"
        if summary.is_file():
            config = json.loads(summary.read_text()).get("config")
            status = "complete"
        log_path = ckpt / "train_log.jsonl"
    name = run_id or (run_id_of(run_dir) if run_dir is not None else ckpt.resolve().name)
    return Target(name, ckpt, run_dir, status, config, log_path if log_path.is_file() else None)


def read_train_log(path: Path | None) -> pa.Table | None:
    """log.jsonl -> Arrow table of the train_log columns; a torn last line is skipped."""
    if path is None:
        return None
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    types = {"step": pa.int32(), "tokens_seen": pa.int64()}
    return pa.table(
        {
            c: pa.array([r.get(c) for r in rows], type=types.get(c, pa.float64()))
            for c in LOG_COLUMNS
        }
    )


def run_row(target: Target, settings, train_log: pa.Table | None) -> dict:
    cfg = target.config or {}
    seen = (
        train_log["tokens_seen"][-1].as_py()
        if train_log is not None and train_log.num_rows
        else None
    )
    return {
        "run_id": target.run_id,
        "variant": settings.variant,
        "recipe": settings.recipe,
        "w_max": settings.w,
        "params": {
            "cyb": asdict(settings),
            "config": target.config,
            "checkpoint": str(target.checkpoint),
        },
        "seed": cfg.get("seed"),
        "train_tokens": seen if seen is not None else cfg.get("tokens"),
        "base": cfg.get("init"),
        "status": target.status,
    }


# ----------------------------------------------------------------------------- inputs


def read_text_file(path: str | Path) -> str:
    """A user's text file (or "-", standard input) as one document."""
    return read_user_text(path, error=StoreError)


def load_docs(
    split: str | None = None,
    text: str | Path | None = None,
    root: str | Path = DEFAULT_ROOT,
    max_docs: int | None = None,
    max_chars: int | None = None,
) -> tuple[str, list[dict]]:
    """(dataset name, [{doc_id, text}]) for a split of `root` or one text file."""
    if (split is None) == (text is None):
        raise StoreError("give exactly one of a split (--split) or a text file (--text)")
    for flag, value in (("--max-docs", max_docs), ("--max-chars", max_chars)):
        if value is not None and value < 1:
            raise StoreError(f"{flag} must be at least 1, got {value} (leave it out for all)")
    if text is not None:
        name = "stdin" if str(text) == "-" else re.sub(r"[\s:]+", "_", Path(text).name)
        docs, dataset = [{"doc_id": name, "text": read_text_file(text)}], f"text/{name}"
    else:
        from cyb_core.corpus import load_split

        if split == "heldout_brown_pos":
            raise StoreError(
                "heldout_brown_pos holds gold tags, not text; evaluate the heldout split"
            )
        docs = [{"doc_id": d["doc_id"], "text": d["text"]} for d in load_split(split, Path(root))]
        same = Path(root).resolve() == DEFAULT_ROOT.resolve()
        dataset = split if same else f"{Path(root).resolve().name}/{split}"
    if max_docs is not None:
        docs, dataset = docs[:max_docs], f"{dataset}.d{max_docs}"
    if max_chars is not None:
        docs, dataset = (
            [{**d, "text": d["text"][:max_chars]} for d in docs],
            f"{dataset}.c{max_chars}",
        )
    docs = [d for d in docs if d["text"].strip()]
    if not docs:
        raise StoreError(f"{dataset}: no text to evaluate")
    return dataset, docs


# ----------------------------------------------------------------------------- tables


def _vectors(a: np.ndarray) -> pa.ListArray:
    """(N, K) floats -> list<double> with NaN (steps not taken) as NULL."""
    n, k = a.shape
    flat = np.ascontiguousarray(a, dtype=np.float64).reshape(-1)
    return pa.ListArray.from_arrays(
        pa.array(np.arange(n + 1, dtype=np.int32) * k),
        pa.array(flat, mask=np.isnan(flat), type=pa.float64()),
    )


def decode_table(tokenizer, ids: np.ndarray) -> dict[int, str]:
    """id -> its text, each id decoded on its own (byte-level: may hold a partial character)."""
    uniq = np.unique(ids).tolist()
    texts = tokenizer.batch_decode(
        [[i] for i in uniq], skip_special_tokens=False, clean_up_tokenization_spaces=False
    )
    return dict(zip(uniq, texts, strict=True))


def build_tables(
    result, docs: list[dict], words: list[pos.Words], tokenizer
) -> dict[str, pa.Table]:
    """EvalResult + documents + their spaCy words -> the tokens, docs and words tables (no eval_id)."""
    texts = [d["text"] for d in docs]
    ann = {
        k: np.empty(len(result.nll), dtype=object)
        for k in ("word", "upos", "tag", "morph", "word_start")
    }
    for j, text in enumerate(texts):
        sel = np.flatnonzero(result.doc == j)
        for k, v in pos.align(text, result.char_start[sel], result.char_end[sel], words[j]).items():
            ann[k][sel] = v
    classes = np.zeros(len(result.nll), dtype=np.int8)  # of the next (predicted) token
    for j, text in enumerate(texts):
        sel = np.flatnonzero(result.doc == j)  # rows of a document are in token order
        classes[sel] = synthetic.predicted_classes(
            text, result.char_start[sel], result.char_end[sel]
        )
    vocab = decode_table(tokenizer, np.concatenate([result.token_id, result.next_id]))
    doc_ids = np.array([d["doc_id"] for d in docs], dtype=object)
    pauses = result.pauses
    tokens = pa.table(
        {
            "doc_id": pa.array(doc_ids[result.doc], type=pa.string()),
            "idx": pa.array(result.idx, type=pa.int32()),
            "token_id": pa.array(result.token_id, type=pa.int32()),
            "token": pa.array([vocab[i] for i in result.token_id.tolist()], type=pa.string()),
            "next_id": pa.array(result.next_id, type=pa.int32()),
            "next_token": pa.array([vocab[i] for i in result.next_id.tolist()], type=pa.string()),
            "char_start": pa.array(result.char_start, type=pa.int32()),
            "char_end": pa.array(result.char_end, type=pa.int32()),
            **{k: pa.array(ann[k], type=pa.string()) for k in ("word", "upos", "tag", "morph")},
            "word_start": pa.array(ann["word_start"], type=pa.bool_()),
            "dk": _vectors(result.d),
            "t": _vectors(result.t),
            "s": _vectors(result.s),
            "expected_pauses": pa.array(result.expected_pauses, type=pa.float64()),
            "greedy_pauses": pa.array(result.greedy_pauses, type=pa.int32()),
            "pauses": pa.array(
                pauses if pauses is not None else np.full(len(result.nll), None), type=pa.int32()
            ),
            "nll": pa.array(result.nll, type=pa.float64()),
            "correct": pa.array(result.correct, type=pa.bool_()),
            "token_class": pa.array(np.array(synthetic.CLASSES)[classes], type=pa.string()),
        }
    )
    docs_t = pa.table({"doc_id": pa.array(doc_ids.tolist(), type=pa.string()), "text": texts})
    parts = []
    for d, w in zip(docs, words, strict=True):
        n = len(w.start)
        parts.append(
            pa.table(
                {
                    "doc_id": pa.array([d["doc_id"]] * n, type=pa.string()),
                    "widx": pa.array(np.arange(n), type=pa.int32()),
                    "char_start": pa.array(w.start, type=pa.int32()),
                    "char_end": pa.array(w.end, type=pa.int32()),
                    "word": pa.array(w.word, type=pa.string()),
                    "upos": pa.array(w.upos, type=pa.string()),
                    "tag": pa.array(w.tag, type=pa.string()),
                    "morph": pa.array(w.morph, type=pa.string()),
                    "sent_start": pa.array(w.sent_start, type=pa.bool_()),
                    "space_after": pa.array(w.space_after, type=pa.bool_()),
                }
            )
        )
    return {"tokens": tokens, "docs": docs_t, "words": pa.concat_tables(parts)}


# ----------------------------------------------------------------------------- orchestration


def load_model(checkpoint: str | Path, device="cpu", allow_resize: bool = False, **settings):
    """The checkpoint's CYBModel (keyword `settings`, e.g. w, psi, override its CYB settings);
    a checkpoint that cannot be read, needs its own code or does not fit its tokenizer ->
    StoreError."""
    from safetensors import SafetensorError

    from cyb_core import model as model_lib
    from cyb_core import variants

    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        f = Path(checkpoint) / name
        try:
            json.loads(f.read_text(encoding="utf-8")) if f.is_file() else None
        except (ValueError, UnicodeDecodeError) as e:  # the loaders would not name the file
            raise StoreError(
                f"{f} is not valid JSON ({e}); restore or re-save the checkpoint"
            ) from e
    try:
        model = model_lib.load(checkpoint, device=device, allow_resize=allow_resize, **settings)
        variants.get(model.settings.variant)  # an unknown variant is never stored under its name
    except SafetensorError as e:
        raise StoreError(
            f"cannot read the weights in {checkpoint} ({str(e).splitlines()[0]}): the "
            ".safetensors file is damaged or truncated; copy or save the checkpoint again"
        ) from e
    except (OSError, ValueError) as e:
        raise StoreError(
            f"cannot load the checkpoint {checkpoint}: {str(e).splitlines()[0]}"
        ) from e
    return model


def score_docs(
    model,
    docs: list[dict],
    *,
    mode: str = "dense",
    seq_len: int = 128,
    batch_size: int = 16,
    dk_threshold: float | None = 0.5,
    seed: int = 0,
    progress: bool = False,
    nlp=None,
    sharded: bool = False,
    counts: list | None = None,
):
    """Evaluate documents ([{doc_id, text}]) and tag them: (EvalResult, the tables of
    `build_tables`), everything `store.write_eval` needs but the run and eval rows. `cyb eval`
    and the app's playground (analysis.playground) both score text through here.
    mode: dense, adaptive, or forced (shuffled / uniformK: `counts`, pauses per input token of
    each document, cyb_core.forced).
    sharded (dense, in a process group): the ranks split the documents; rank 0 gets the result
    and the tables, the other ranks (None, None)."""
    texts = [d["text"] for d in docs]
    bf16 = model.device.type == "cuda"  # as in training: bf16 autocast on a GPU, fp32 elsewhere
    if mode == "dense":
        from cyb_core.dense import dense_eval
        from cyb_core.distributed import shard_eval

        kw = dict(seq_len=seq_len, batch_size=batch_size, progress=progress, bf16=bf16)
        result = (
            shard_eval(dense_eval, model, texts, **kw)
            if sharded
            else dense_eval(model, texts, **kw)
        )
        if result is None:  # another rank's share is scored; rank 0 tags and stores
            return None, None
    elif mode == "adaptive":
        from cyb_core.adaptive import adaptive_eval

        result = adaptive_eval(
            model,
            texts,
            seq_len=seq_len,
            batch_size=batch_size,
            dk_threshold=dk_threshold,
            seed=seed,
            progress=progress,
            bf16=bf16,
        )
    else:
        from cyb_core.forced import forced_eval

        result = forced_eval(
            model,
            texts,
            counts,
            seq_len=seq_len,
            batch_size=batch_size,
            progress=progress,
            bf16=bf16,
        )
    words = _tagged(texts, nlp, progress)
    return result, build_tables(result, docs, words, model.tokenizer)


def _own_counts(run_id: str, dataset: str, docs: list[dict], db) -> list[np.ndarray]:
    """Pauses per input token of each document from the run's stored adaptive evaluation of
    the same dataset (what `--mode shuffled` permutes)."""
    source = store.make_eval_id(run_id, dataset, "adaptive")
    stored = store.stored_pauses(db, source)
    if stored is None:
        raise StoreError(
            f"--mode shuffled permutes the pauses of the adaptive evaluation {source}, which "
            f"{store.default_db_path(db)} does not hold: run `cyb eval` with --mode adaptive "
            "on the same text first"
        )
    missing = [d["doc_id"] for d in docs if d["doc_id"] not in stored]
    if missing or any(None in stored[d["doc_id"]] for d in docs):
        raise StoreError(
            f"the adaptive evaluation {source} has no pause counts for document "
            f"{(missing or ['?'])[0]}: evaluate it again with --mode adaptive"
        )
    return [np.array(stored[d["doc_id"]], dtype=np.int64) for d in docs]


def _forced_counts(model, docs, mode: str, pauses: int | None, own, seed: int):
    """The pauses per input token a forced mode evaluates with (None for dense and adaptive),
    checked against the model and the text before any forward pass."""
    from cyb_core import forced

    W = model.settings.w
    if mode == "uniform" and pauses > W - 1:
        raise StoreError(
            f"--pauses {pauses} needs W > {pauses}, the model has W = {W}: pass --pauses "
            f"{W - 1} or less (or --w)"
        )
    if mode == "uniform":
        return forced.uniform_counts(model, [d["text"] for d in docs], pauses)
    if mode != "shuffled":
        return None
    counts = forced.shuffle_counts(own, seed)
    try:
        forced.check_counts(model, [d["text"] for d in docs], counts)
    except ValueError as e:
        raise StoreError(f"--mode shuffled: {e}") from e
    return counts


_TAGGED: dict[str, list] = {}  # the default pipeline's words of the texts tagged last


def _tagged(texts: list[str], nlp, progress: bool) -> list:
    """spaCy's words of `texts`; a process that evaluates one text in many modes and runs
    (`cyb experiment`) tags it once. Only the default pipeline is cached (a caller's nlp may
    differ), and only the last few texts."""
    if nlp is not None:
        return pos.tag_texts(texts, nlp, progress=progress)
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass") + b"\0")
    key = h.hexdigest()
    if key not in _TAGGED:
        while len(_TAGGED) >= 4:
            _TAGGED.pop(next(iter(_TAGGED)))
        _TAGGED[key] = pos.tag_texts(texts, None, progress=progress)
    return _TAGGED[key]


def check_settings(
    seq_len: int = 128,
    batch_size: int = 16,
    lock_timeout: float = 0.0,
    dk_threshold: float | None = 0.5,
) -> None:
    """Refuse, before any work, numeric settings that cannot be evaluated with."""
    for flag, value in (("--seq-len", seq_len), ("--batch-size", batch_size)):
        if value < 1:
            raise StoreError(f"{flag} must be at least 1, got {value}")
    if dk_threshold is not None and not 0.0 <= dk_threshold <= 1.0:
        raise StoreError(f"--dk-threshold must be in [0, 1], got {dk_threshold:g}")
    if lock_timeout < 0:
        raise StoreError(f"--lock-timeout must be at least 0 seconds, got {lock_timeout:g}")


def run_eval(
    target: str | Path,
    *,
    split: str | None = None,
    text: str | Path | None = None,
    mode: str = "dense",
    db: str | Path | None = None,
    root: str | Path = DEFAULT_ROOT,
    run_id: str | None = None,
    dataset: str | None = None,
    seq_len: int = 128,
    batch_size: int = 16,
    max_docs: int | None = None,
    max_chars: int | None = None,
    device="cpu",
    dk_threshold: float | None = 0.5,
    seed: int = 0,
    progress: bool = True,
    nlp=None,
    lock_timeout: float = 120.0,
    w: int | None = None,
    psi: float | None = None,
    parallel: bool | None = None,
    pauses: int | None = None,
    allow_resize: bool = False,
) -> dict:
    """Evaluate, tag and store; returns a summary. Everything is computed before the database
    is opened, so the write lock is held only for the final load. dk_threshold (adaptive):
    pause while d_i >= it; None samples DK with probability d_i (seeded). w, psi: override the
    checkpoint's CYB settings (a plain save_pretrained model has none: w=1); the default run id
    then ends in .wW / .psiPSI, so the checkpoint's own evaluation is not replaced.
    parallel (None: when a launcher set WORLD_SIZE > 1): the ranks of `torchrun ... cyb eval`
    split the documents of a dense evaluation and rank 0 alone tags and writes; `cyb
    experiment` passes False, its ranks evaluate different runs.
    mode shuffled: the run's adaptive evaluation of the same dataset, its pause counts permuted
    within each document (seeded by `seed`); mode uniform: `pauses` after every token. Stored
    under the mode's name (shuffled, uniformK; cyb_core.names.mode_name)."""
    t0 = time.perf_counter()
    check_settings(seq_len, batch_size, lock_timeout, dk_threshold)
    try:
        stored_mode = mode_name(mode, pauses)
    except ValueError as e:
        raise StoreError(str(e)) from e
    overrides = {k: v for k, v in (("w", w), ("psi", psi)) if v is not None}
    if overrides:
        from cyb_core.model import CYBSettings

        try:
            CYBSettings(**overrides)
        except ValueError as e:
            raise StoreError(f"--{str(e)}") from e
    tgt = resolve_target(target, run_id, db)
    if overrides and run_id is None:
        tgt.run_id += "".join(f".{k}{v:g}" for k, v in overrides.items())
    name, docs = load_docs(split, text, root, max_docs, max_chars)
    dataset = dataset or name
    eval_id = store.make_eval_id(tgt.run_id, dataset, stored_mode)  # validated before the work
    store.check_database(db)  # a foreign, read-only or garbage --db: refused before the work
    own = _own_counts(tgt.run_id, dataset, docs, db) if mode == "shuffled" else None

    from cyb_core import distributed

    world = distributed.env_world()[1]
    sharded = mode == "dense" and (world > 1 if parallel is None else parallel)
    if sharded:
        distributed.setup(str(device))
    model = load_model(tgt.checkpoint, device, allow_resize=allow_resize, **overrides)
    from cyb_core.model import settings_notes

    for note in settings_notes(model, w_given=w is not None):
        print(f"cyb eval: warning: {note}", file=sys.stderr)
    ctx = model.max_positions  # a window holds seq_len tokens and the end-of-text target
    if ctx is not None and model.positions_needed(seq_len) > ctx:
        raise StoreError(
            f"--seq-len {seq_len} needs {model.positions_needed(seq_len)} positions but the "
            f"model's context is {ctx}: pass --seq-len {ctx // model.positions_needed(1)} or less"
        )
    counts = _forced_counts(model, docs, mode, pauses, own, seed)
    result, tables = score_docs(
        model,
        docs,
        mode=mode,
        counts=counts,
        seq_len=seq_len,
        batch_size=batch_size,
        dk_threshold=dk_threshold,
        seed=seed,
        progress=progress,
        nlp=nlp,
        sharded=sharded,
    )
    if tables is None:  # not rank 0: its share is scored; rank 0 writes and shares the summary
        return distributed.broadcast_object(None)
    log = read_train_log(tgt.log_path)
    t_eval = time.perf_counter()
    store.write_eval(
        db,
        run=run_row(tgt, model.settings, log),
        train_log=log,
        eval_row={"run_id": tgt.run_id, "dataset": dataset, "mode": stored_mode},
        timeout=lock_timeout,
        **tables,
    )
    summary = {
        "eval_id": eval_id,
        "db": str(store.default_db_path(db)),
        **result.summary(),
        "mode": stored_mode,
        "eval_s": t_eval - t0,
        "write_s": time.perf_counter() - t_eval,
    }
    return distributed.broadcast_object(summary) if sharded else summary
