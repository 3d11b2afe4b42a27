"""Atomic writes: a file or a directory appears whole under its final name, or not at all.

Both write under a temporary name next to the target and rename it into place, so a reader
(or a run resumed after a kill) never sees a half-written file, checkpoint or export.

A directory is swapped in by `atomic_save_dir` in four phases; a process killed at any
instruction leaves one of these states, which `recover_dir` turns back into one valid directory:

| killed while / after       | on disk                               | valid copy | recover_dir        |
|----------------------------|---------------------------------------|------------|--------------------|
| writing `path.tmp`         | path (or nothing), partial path.tmp   | path       | drop path.tmp      |
| `path` -> `path.old`       | path.old, complete path.tmp           | path.old   | path.old -> path   |
| `path.tmp` -> `path`       | path, path.old                        | path       | drop path.old      |
| removing `path.old`        | path, partial path.old                | path       | drop path.old      |

Invariant: `path.old` is complete whenever `path` is missing, because `path.old` is only ever
(partly) removed while `path` exists. A renamed directory is never half renamed (rename(2)).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

# Test hook: called with (phase, path) at each phase of atomic_save_dir, so a test can stop a
# save there (raise, or os._exit in a child process) exactly as a kill would. Phases, in order:
# "written" (tmp complete), "renamed-old" (path -> path.old done), "renamed-new"
# (tmp -> path done), "removing-old" (about to remove path.old), "done".
PHASES = ("written", "renamed-old", "renamed-new", "removing-old", "done")
_phase_hook: Callable[[str, Path], None] | None = None


def _phase(name: str, path: Path) -> None:
    if _phase_hook is not None:
        _phase_hook(name, path)


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


def write_target(directory: str | Path) -> tuple[Path, str | None]:
    """Where creating `directory` (or a file in it) would write, and why it cannot, or None:
    the nearest existing ancestor, and "file" (it is not a folder) or "read-only". Checks
    before any work; writes nothing (os.access honours read-only mounts; root may write)."""
    base = Path(directory).absolute()
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        return base, "file"
    if not os.access(base, os.W_OK | os.X_OK):
        return base, "read-only"
    return base, None


def _siblings(path: Path) -> tuple[Path, Path]:
    return path.with_name(path.name + ".tmp"), path.with_name(path.name + ".old")


def atomic_save_dir(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` to create the directory `tmp`, then swap it in for `path`.

    Two renames: path -> path.old, tmp -> path, then path.old is removed. Leftovers of an
    earlier save that was killed are cleared first (see the module docstring), so a stale
    `path.old` never blocks a save; `recover_dir` restores the valid copy before a read.
    """
    path = Path(path)
    tmp, old = _siblings(path)
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    _phase("written", path)
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)  # stale: path is the valid copy while it exists
        path.rename(old)
    _phase("renamed-old", path)
    tmp.rename(path)
    _phase("renamed-new", path)
    _phase("removing-old", path)
    shutil.rmtree(old, ignore_errors=True)
    _phase("done", path)


def recover_dir(path: Path) -> bool:
    """Leave the one valid copy of a directory saved by `atomic_save_dir` under `path`.

    Returns whether `path` exists afterwards. Call it before reading `path` in a process that
    may follow a killed save (resume); it only removes leftovers and renames, never writes data.
    """
    path = Path(path)
    tmp, old = _siblings(path)
    if not path.exists() and old.exists():  # killed between the two renames
        old.rename(path)
    shutil.rmtree(old, ignore_errors=True)  # path exists: old is stale (maybe partly removed)
    shutil.rmtree(tmp, ignore_errors=True)  # never complete without a rename after it
    return path.exists()


def remove_dir(path: Path) -> None:
    """Remove a directory saved by `atomic_save_dir` together with its leftovers.

    `path` goes last, so a kill midway leaves at most leftovers that `recover_dir` clears.
    """
    path = Path(path)
    for p in (*_siblings(path), path):
        shutil.rmtree(p, ignore_errors=True)
