"""One module per `cyb` command, each with `register(subparsers)` (its flags; nothing heavy is
imported) and `run(args)` (the work; imports what it needs). `COMMANDS` is their order in
`cyb --help`."""

COMMANDS = (
    "data",
    "tokenizer",
    "pretrain",
    "train",
    "experiment",
    "eval",
    "export",
    "generate",
    "app",
    "lm_eval",
    "results",
)
