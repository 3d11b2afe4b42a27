"""The files below a user's folder, read as a user expects: nothing skipped without a word.

`cyb data import FOLDER` takes every file below FOLDER. Symbolic links to folders are followed
(a user who links a folder in means its files), with each folder read once: a link back to a
folder being read (a loop) or a second way to reach the same folder is refused, naming both
paths, so no file is read twice and the walk ends. A broken link, a file name that is not
UTF-8 (it could not be stored in the manifest) and anything that is neither a file nor a
folder are refused by name too. Hidden names (a leading dot) are skipped, as `ls` does.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def printable(path: str | Path) -> str:
    """`path` with the bytes of a name that is not UTF-8 shown as \\xNN escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def files_below(folder: str | Path, error: type[Exception] = ValueError) -> list[Path]:
    """Every non-hidden file below `folder`, symlinked folders followed once, sorted by path.

    Raises `error` with a one-line message naming the path for a symlink loop, a folder reached
    twice, a broken link, a name that is not UTF-8, or a special file (socket, FIFO, device).
    """
    folder = Path(folder)
    reached: dict[tuple[int, int], Path] = {}  # (device, inode) of each folder -> how we got there
    out: list[Path] = []

    def visit(d: Path, ancestors: frozenset) -> None:
        st = d.stat()
        key = (st.st_dev, st.st_ino)
        if key in ancestors:
            raise error(
                f"{printable(d)} links back to {printable(reached[key])}, a folder it is inside "
                "(a symbolic link loop): remove the link"
            )
        if key in reached:
            raise error(
                f"{printable(d)} and {printable(reached[key])} are the same folder (a symbolic "
                "link): remove one, or every file in it would be imported twice"
            )
        reached[key] = d
        with os.scandir(d) as it:
            entries = sorted(it, key=lambda e: os.fsencode(e.name))
        for e in entries:
            if e.name.startswith("."):
                continue
            path = Path(e.path)
            try:
                e.name.encode("utf-8")
            except UnicodeEncodeError:
                raise error(
                    f"{printable(path)}: the name is not UTF-8 text; rename it (e.g. `convmv -f "
                    "latin1 -t utf-8 -r --notest FOLDER`) or move it out"
                ) from None
            try:
                mode = path.stat().st_mode  # follows links
            except FileNotFoundError:
                raise error(
                    f"{printable(path)} is a broken symbolic link: fix or remove it"
                ) from None
            if stat.S_ISDIR(mode):
                visit(path, ancestors | {key})
            elif stat.S_ISREG(mode):
                out.append(path)
            else:
                raise error(
                    f"{printable(path)} is not a regular file (a socket, pipe or device): move it out"
                )

    visit(folder, frozenset())
    return sorted(out)
