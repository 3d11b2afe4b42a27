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
A reader that may not write (a corpus read) takes `valid_dir(path)`: `path`, else `path.old`.

`exclusive(folder)` makes one process the only writer of a folder (a run, a corpus): an
`fcntl.flock` on `.NAME.lock` beside it, which the OS releases when the process dies, so a
killed run is resumed without any cleanup; a second writer gets one line naming the holder.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import UserError

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
    try:
        write(tmp)
    except BaseException:  # a refused or failed write leaves nothing behind (a kill: recover_dir)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
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


def valid_dir(path: Path) -> Path:
    """The valid copy of a directory saved by `atomic_save_dir`, found without writing: `path`,
    or `path.old` when a save was killed between its two renames (see the module docstring)."""
    path = Path(path)
    old = _siblings(path)[1]
    return old if not path.exists() and old.is_dir() else path


class FolderBusy(UserError, ValueError):
    """Another process holds the folder's lock; the message names its pid."""


@contextlib.contextmanager
def exclusive(folder: str | Path, flag: str = "--out") -> Iterator[Path]:
    """Hold the exclusive lock of `folder` for the `with` block: one writer per run or corpus.

    A second holder (another process, or another `with` in this one) gets FolderBusy naming the
    holder's pid. The lock lives as long as the open file: the OS drops it when the process
    dies (SIGKILL included), so the next run needs no cleanup. The file is removed on release
    (with the folders made to hold it, if still empty); an acquirer checks it still locked the
    file on disk, so a removal racing it is harmless.
    """
    import fcntl

    folder = Path(folder).absolute().resolve()
    lock = folder.parent / f".{folder.name}.lock"
    made = [p for p in (lock.parent, *lock.parent.parents) if not p.exists()]  # deepest first
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            who = f"pid {holder}" if holder.isdigit() else "another process"
            raise FolderBusy(
                f"{folder} is in use by another cyb process ({who}, lock {lock}): wait for it "
                f"to finish, or choose another {flag}"
            ) from None
        try:  # the file we locked is still the one on disk (a releasing holder removes it)
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield lock
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)
        for p in made:  # folders made only to hold the lock: a refused run leaves nothing
            try:
                p.rmdir()
            except OSError:  # not empty: the run wrote there
                break
