"""Atomic writes: a file or a directory appears whole under its final name, or not at all.

Both write under a temporary name next to the target and rename it into place, so a reader
(or a run resumed after a kill) never sees a half-written file, checkpoint or export.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` to fill a temporary file beside `path`, then rename it to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp creates 0600 files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_save_dir(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` to create the directory `tmp`, then swap it in for `path`.

    Two renames: path -> path.old, tmp -> path. A process killed between them leaves
    path.old, which the caller may move back (cyb_core.train does for its checkpoint).
    """
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    old = path.with_name(path.name + ".old")
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)
