"""The one base of every error a user can fix, and the one reader of a user's text file.

Every checked error (`cyb.parser.CLIError`, `StoreError`, `CorpusError`, `FolderBusy`,
`ResultsError`, ...) inherits `UserError`; `cyb.errors.user_message` turns any of them into the one
line the command line and the app print. Anything else that escapes is a bug and keeps its
traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path


class UserError(Exception):
    """An error the user can fix; its first line is what they read."""


def read_user_text(src: str | Path, *, what: str = "text file", error=UserError) -> str:
    """A user's file (or standard input for "-") as text: UTF-8 with a leading BOM dropped and
    CRLF -> LF. Missing, empty, binary (NUL bytes) and non-UTF-8 input raise `error` in one line
    that names the file, the offending byte and line, and the fix."""
    if str(src) == "-":
        raw, label = sys.stdin.buffer.read(), "standard input"
    else:
        path = Path(src)
        if not path.is_file():
            raise error(f"no {what} at {path}; check the path")
        raw, label = path.read_bytes(), str(path)
    return decode_user_text(label, raw, error=error)


def decode_user_text(label: str, raw: bytes, *, error=UserError) -> str:
    """`raw` as text (see `read_user_text`); `label` names it in the message."""
    if not raw.strip():
        raise error(f"{label} is empty: add text to it or leave it out")
    if (nul := raw.find(b"\x00")) >= 0:  # anywhere: a NUL past the start would become a token
        raise error(
            f"{label} contains NUL bytes (first at byte {nul}), so it is binary: give UTF-8 text"
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise error(
            f"{label} is not UTF-8 (byte 0x{raw[e.start]:02x} on line {line}): convert it in "
            "place, e.g. iconv -f latin1 -t utf-8 FILE -o FILE.tmp && mv FILE.tmp FILE"
        ) from None
    if not text.strip():  # e.g. only a byte order mark
        raise error(f"{label} is empty: add text to it or leave it out")
    return text.replace("\r\n", "\n")
