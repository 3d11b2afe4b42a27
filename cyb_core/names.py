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
# `cyb train --report-to`: experiment trackers (cyb_core/trackers.py), each an extra of its name
TRACKERS = ("none", "tensorboard", "trackio", "wandb", "mlflow")
# a Hugging Face hub id: "name" or "org/name" (letters, digits, '-', '_', '.'; no '..' or leading
# '.'), for models (cyb_core.model) and datasets (cyb_core.hf_datasets)
HUB_ID = r"(?!\.)[\w.-]{1,96}(/(?!\.)[\w.-]{1,96})?"
