"""`cyb eval`: evaluate a run or checkpoint, tag the text with spaCy, store it in one write.

The evaluation's parts: which checkpoint and run (eval_targets), the documents (eval_inputs),
the model (eval_model), the tables it stores (eval_tables); here they are run in order, scored
in the requested mode (`score_docs`, shared with the app's Playground) and written.
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

import numpy as np

from cyb_core import distributed
from cyb_core.names import mode_name

from . import pos, store
from .eval_inputs import DEFAULT_ROOT, EvalError, load_docs
from .eval_model import load_model
from .eval_tables import build_tables
from .eval_targets import Target, read_train_log, resolve_target, run_row
from .store import StoreError


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

        kw = dict(seq_len=seq_len, batch_size=batch_size, progress=progress, bf16=bf16)
        result = (
            distributed.shard_eval(dense_eval, model, texts, **kw)
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
        raise EvalError(
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
        raise EvalError(f"--mode shuffled: {e}") from e
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
            raise EvalError(f"{flag} must be at least 1, got {value}")
    if dk_threshold is not None and not 0.0 <= dk_threshold <= 1.0:
        raise EvalError(f"--dk-threshold must be in [0, 1], got {dk_threshold:g}")
    if lock_timeout < 0:
        raise EvalError(f"--lock-timeout must be at least 0 seconds, got {lock_timeout:g}")


def _check_request(mode, pauses, w, psi, seq_len, batch_size, lock_timeout, dk_threshold):
    """(the stored mode name, the CYB settings to override) of a request, every setting checked
    before any work."""
    check_settings(seq_len, batch_size, lock_timeout, dk_threshold)
    try:
        stored_mode = mode_name(mode, pauses)
    except ValueError as e:
        raise EvalError(str(e)) from e
    overrides = {k: v for k, v in (("w", w), ("psi", psi)) if v is not None}
    if overrides:
        from cyb_core.model import CYBSettings

        try:
            CYBSettings(**overrides)
        except ValueError as e:
            raise EvalError(f"--{str(e)}") from e
    return stored_mode, overrides


def _checked_model(tgt: Target, device, allow_resize: bool, overrides: dict, seq_len: int):
    """The target's model, its settings notes printed; a --seq-len its context cannot hold is
    refused before any forward pass."""
    model = load_model(tgt.checkpoint, device, allow_resize=allow_resize, **overrides)
    from cyb_core.model import settings_notes

    for note in settings_notes(model, w_given="w" in overrides):
        print(f"cyb eval: warning: {note}", file=sys.stderr)
    ctx = model.max_positions  # a window holds seq_len tokens and the end-of-text target
    if ctx is not None and model.positions_needed(seq_len) > ctx:
        raise EvalError(
            f"--seq-len {seq_len} needs {model.positions_needed(seq_len)} positions but the "
            f"model's context is {ctx}: pass --seq-len {ctx // model.positions_needed(1)} or less"
        )
    return model


def _join_ranks(mode: str, parallel: bool | None, device) -> bool:
    """Whether the ranks of a launcher split this evaluation's documents (a dense one, and
    `parallel` or, when None, WORLD_SIZE > 1); if so, the process group is set up."""
    sharded = mode == "dense" and (distributed.env_world()[1] > 1 if parallel is None else parallel)
    if sharded:
        distributed.setup(str(device))
    return sharded


def _write(db, tgt: Target, settings, log, eval_row: dict, tables: dict, lock_timeout) -> None:
    """The evaluation, its run and the run's training log, in the store's one transaction."""
    store.write_eval(
        db,
        run=run_row(tgt, settings, log),
        train_log=log,
        eval_row=eval_row,
        timeout=lock_timeout,
        **tables,
    )


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
    stored_mode, overrides = _check_request(
        mode, pauses, w, psi, seq_len, batch_size, lock_timeout, dk_threshold
    )
    tgt = resolve_target(target, run_id, db)
    if overrides and run_id is None:
        tgt.run_id += "".join(f".{k}{v:g}" for k, v in overrides.items())
    name, docs = load_docs(split, text, root, max_docs, max_chars)
    dataset = dataset or name
    eval_id = store.make_eval_id(tgt.run_id, dataset, stored_mode)  # validated before the work
    store.check_database(db)  # a foreign, read-only or garbage --db: refused before the work
    own = _own_counts(tgt.run_id, dataset, docs, db) if mode == "shuffled" else None
    sharded = _join_ranks(mode, parallel, device)
    model = _checked_model(tgt, device, allow_resize, overrides, seq_len)
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
    eval_row = {"run_id": tgt.run_id, "dataset": dataset, "mode": stored_mode}
    t_eval = time.perf_counter()
    _write(db, tgt, model.settings, log, eval_row, tables, lock_timeout)
    summary = {
        "eval_id": eval_id,
        "db": str(store.default_db_path(db)),
        **result.summary(),
        "mode": stored_mode,
        "eval_s": t_eval - t0,
        "write_s": time.perf_counter() - t_eval,
    }
    return distributed.broadcast_object(summary) if sharded else summary
