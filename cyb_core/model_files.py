"""Where a model's files come from, and the check before loading them: a local directory, or a
hub id ("org/name") in the local Hugging Face cache, downloaded only when the user has not set
HF_HUB_OFFLINE; a checkpoint that needs its own Python code is refused.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .names import HUB_ID

_HUB_ID = re.compile(HUB_ID)  # "name" or "org/name" (names.HUB_ID)
# Files a checkpoint needs; pickled weights (*.bin, *.pt) are never fetched.
_HUB_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "tokenizer*"]


def cached(name: str | Path, cache_dir: str | Path | None = None) -> Path | None:
    """A hub id's snapshot directory in the local HF cache, or None; never touches the network."""
    if not _HUB_ID.fullmatch(str(name)) or ".." in str(name):
        return None
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(name), cache_dir=cache_dir, local_files_only=True))
    except Exception:  # not cached (LocalEntryNotFoundError) or a malformed cache entry
        return None


def resolve(name: str | Path, cache_dir: str | Path | None = None) -> Path:
    """A local directory as it is, else a hub id's snapshot directory in the local HF cache.

    An id missing from the cache is downloaded unless the user set HF_HUB_OFFLINE (read, never
    set here); safetensors and JSON/tokenizer files only.
    """
    path = Path(name)
    if path.exists() or not _HUB_ID.fullmatch(str(name)) or ".." in str(name):
        return path
    from huggingface_hub import constants, snapshot_download

    where = cache_dir or constants.HF_HUB_CACHE
    found = cached(name, cache_dir)
    if found is not None:
        return found
    if constants.is_offline_mode():
        raise FileNotFoundError(
            f"no directory {name} and no hub model {name!r} in the local Hugging Face cache "
            f"({where}; HF_HUB_OFFLINE is set): pass a checkpoint directory, or download it "
            f"first with `hf download {name}`"
        )
    try:
        return Path(snapshot_download(str(name), cache_dir=cache_dir, allow_patterns=_HUB_FILES))
    except Exception as e:
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise FileNotFoundError(
            f"no directory {name}, {name!r} is not in the local Hugging Face cache ({where}) "
            f"and fetching it failed ({first}): pass a checkpoint directory, or download it "
            f"with `hf download {name}` where the hub is reachable"
        ) from None


def refuse_remote_code(path: Path) -> None:
    """ValueError, naming the field, when loading `path` would need the checkpoint's own Python
    code: `auto_map` in config.json or tokenizer_config.json, or a `model_type` transformers does
    not know. cyb never runs such code (every from_pretrained passes trust_remote_code=False)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    for name in ("config.json", "tokenizer_config.json"):
        f = Path(path) / name
        try:
            cfg = json.loads(f.read_text(encoding="utf-8")) if f.is_file() else {}
        except (ValueError, UnicodeDecodeError) as e:
            raise ValueError(
                f"{f} is not valid JSON ({e}); restore or re-save the checkpoint"
            ) from None
        if not isinstance(cfg, dict):
            raise ValueError(f"{f} is not a JSON object; restore or re-save the checkpoint")
        if "auto_map" in cfg:
            raise ValueError(
                f"{f} has an `auto_map` field: the checkpoint asks to run its own Python code, "
                "which cyb never does; use a checkpoint of a model type transformers ships"
            )
        model_type = cfg.get("model_type")
        if name == "config.json" and model_type is not None and model_type not in CONFIG_MAPPING:
            raise ValueError(
                f"{f} has `model_type` {model_type!r}, which this transformers does not know "
                "(it would need the checkpoint's own code, which cyb never runs): use a "
                "supported model type or upgrade transformers"
            )
