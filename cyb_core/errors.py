"""The one base of every error a user can fix, the one place where an error becomes the line a
user reads, and the one reader of a user's text file.

Every checked error (`cyb.parser.CLIError`, `StoreError`, `EvalError`, `CorpusError`,
`FolderBusy`, `ResultsError`, ...) inherits `UserError`. `user_message(e)` returns the line's text
for an error the user can fix (those, and bad input, a missing, damaged or unwritable file, a
foreign database) and None for anything else, which is a bug and keeps its traceback; the command
line prints it as `cyb COMMAND: error: ...`, the app in a box. Library errors (safetensors, DuckDB,
tokenizers, the OS) are matched by type, looked up in `sys.modules` so that building the parser
never imports those libraries.
"""

from __future__ import annotations

import errno
import json
import sys
import traceback
from pathlib import Path


class UserError(Exception):
    """An error the user can fix; its first line is what they read."""


# errno -> what to do about it (the OS's own words say what went wrong)
_OS_FIXES = {
    errno.EACCES: "make it writable (or readable) or choose another path",
    errno.EPERM: "make it writable (or readable) or choose another path",
    errno.EROFS: "the file system is read-only; choose another path",
    errno.ENOSPC: "free some disk space and run the command again",
    errno.EDQUOT: "free some disk space and run the command again",
    errno.ENOTDIR: "a part of the path is a file, not a directory; fix the path",
    errno.EISDIR: "it is a directory; give a file",
    errno.ENAMETOOLONG: "shorten the path",
    errno.EMFILE: "too many open files; raise `ulimit -n`",
}


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _os_message(e: OSError) -> str:
    what = e.strerror or _first_line(e)
    where = f": {e.filename}" if e.filename else ""
    fix = _OS_FIXES.get(e.errno)
    return f"{what}{where}" + (f"; {fix}" if fix else "")


def _library_message(e: BaseException) -> str | None:
    """Errors of optional libraries, checked only when the library is already imported."""
    safetensors = sys.modules.get("safetensors")
    if safetensors is not None and isinstance(e, safetensors.SafetensorError):
        return (
            f"the model weights cannot be read ({_first_line(e)}): the .safetensors file is "
            "damaged or truncated; copy or save the checkpoint again"
        )
    duckdb = sys.modules.get("duckdb")
    if duckdb is not None and isinstance(e, duckdb.Error):
        return (
            f"database error ({type(e).__name__}: {_first_line(e)}); check that --db names a "
            "cyb database (or a new file) and that no other program is writing it"
        )
    # the tokenizers library raises plain Exception from Rust: recognise it by where it came from
    if type(e) is Exception and "tokenizers" in sys.modules:
        frames = traceback.extract_tb(e.__traceback__)
        if frames and any("tokeniz" in f.filename for f in frames[-3:]):
            return (
                f"the tokenizer cannot be used ({_first_line(e)}); check the checkpoint's "
                "tokenizer files (tokenizer.json, tokenizer_config.json)"
            )
    return None


def user_message(e: BaseException) -> str | None:
    """The text of the one-line error for an error the user can fix; None for a bug."""
    if isinstance(e, UserError):
        return _first_line(e)
    lib = _library_message(e)
    if lib is not None:
        return lib
    if isinstance(e, UnicodeDecodeError):  # a ValueError that names no file
        return (
            f"a file is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
            "convert it, e.g. with iconv -t utf-8"
        )
    if isinstance(e, json.JSONDecodeError):
        return f"a JSON file is malformed ({e.msg} at line {e.lineno}); restore or re-create it"
    if isinstance(e, FileNotFoundError) and e.filename and not str(e).startswith("no "):
        return f"no such file or directory: {e.filename}; check the path"
    if isinstance(e, OSError) and e.errno is not None and e.strerror:
        return _os_message(e)
    if isinstance(e, (ValueError, OSError)):
        return _first_line(e)
    return None


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
