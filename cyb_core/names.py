"""Choice lists the command line offers, in a torch-free home so that `cyb --help` loads no torch.

The modules that act on these names (model, engine) import them from here; the loss variants
and their read-outs have their own registry, cyb_core/variants.py.
"""

# Recipe 1 (constant): W-1 pauses after every token; Recipe 2 (variable): a pause when asked for
RECIPES = ("constant", "variable")
# how generation answers from the don't-know probability d (cyb_core/engine.py)
GENERATION_READOUTS = ("greedy", "threshold", "sample")
# base-model sizes; cyb_core/model.py PRESETS holds their shapes under the same keys
MODEL_PRESETS = ("tiny", "tiny-deep", "small", "medium")
# how an evaluation places pauses (analysis/evaluation.py); stored as the evaluation's mode, with
# uniform's count appended (uniform2: two pauses after every token)
#   dense     Recipe 1: W-1 pauses after every token, read out by the variant (one pass)
#   adaptive  Recipe 2: a pause only while the model says don't-know (its own placement)
#   shuffled  the model's adaptive counts permuted within each document (the placement control)
#   uniform   K pauses after every token, read out at step K (`--pauses K`)
EVAL_MODES = ("dense", "adaptive", "shuffled", "uniform")


def mode_name(mode: str, pauses: int | None = None) -> str:
    """The stored name of an evaluation mode: uniform with K pauses is uniformK."""
    if mode not in EVAL_MODES:
        raise ValueError(f"mode must be one of {', '.join(EVAL_MODES)}, got {mode!r}")
    if (mode == "uniform") != (pauses is not None):
        raise ValueError("--pauses K goes with --mode uniform, and only with it")
    if pauses is not None and pauses < 0:
        raise ValueError(f"--pauses must be 0 or more, got {pauses}")
    return f"uniform{pauses}" if mode == "uniform" else mode


def parse_mode(name: str) -> tuple[str, int | None]:
    """(mode, pauses) of a stored mode name: uniform2 -> ("uniform", 2), dense -> ("dense", None)."""
    if name in EVAL_MODES and name != "uniform":
        return name, None
    k = name.removeprefix("uniform")
    if k != name and k.isdigit():
        return "uniform", int(k)
    raise ValueError(
        f"mode must be one of {', '.join(m for m in EVAL_MODES if m != 'uniform')} or uniformK "
        f"(K pauses after every token, e.g. uniform2), got {name!r}"
    )


def observes_pauses(name: str) -> bool:
    """Whether an evaluation in this mode has the pauses actually in context per token."""
    return parse_mode(name)[0] != "dense"


# the modes that score a text on its own (the Playground's); the placement controls need more
LIVE_MODES = EVAL_MODES[:2]
# `cyb train --report-to`: experiment trackers (cyb_core/trackers.py), each an extra of its name
TRACKERS = ("none", "tensorboard", "trackio", "wandb", "mlflow")
# a Hugging Face hub id: "name" or "org/name" (letters, digits, '-', '_', '.'; no '..' or leading
# '.'), for models (cyb_core.model) and datasets (cyb_core.hf_datasets)
HUB_ID = r"(?!\.)[\w.-]{1,96}(/(?!\.)[\w.-]{1,96})?"
