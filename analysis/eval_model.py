"""The model `cyb eval` and the Playground evaluate: a checkpoint loaded, or one line on why not."""

from __future__ import annotations

import json
from pathlib import Path

from .eval_inputs import EvalError


def load_model(checkpoint: str | Path, device="cpu", allow_resize: bool = False, **settings):
    """The checkpoint's CYBModel (keyword `settings`, e.g. w, psi, override its CYB settings);
    a checkpoint that cannot be read, needs its own code or does not fit its tokenizer ->
    EvalError."""
    from safetensors import SafetensorError

    from cyb_core import model as model_lib
    from cyb_core import variants

    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        f = Path(checkpoint) / name
        try:
            json.loads(f.read_text(encoding="utf-8")) if f.is_file() else None
        except (ValueError, UnicodeDecodeError) as e:  # the loaders would not name the file
            raise EvalError(
                f"{f} is not valid JSON ({e}); restore or re-save the checkpoint"
            ) from e
    try:
        model = model_lib.load(checkpoint, device=device, allow_resize=allow_resize, **settings)
        variants.get(model.settings.variant)  # an unknown variant is never stored under its name
    except SafetensorError as e:
        raise EvalError(
            f"cannot read the weights in {checkpoint} ({str(e).splitlines()[0]}): the "
            ".safetensors file is damaged or truncated; copy or save the checkpoint again"
        ) from e
    except (OSError, ValueError) as e:
        raise EvalError(f"cannot load the checkpoint {checkpoint}: {str(e).splitlines()[0]}") from e
    return model
