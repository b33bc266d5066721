"""One place that turns exceptions into what a person reads (like huggingface_hub's CLI `_errors.py`).

User errors (`LoralabError`) become their one-line message and exit code 2; an interrupted command
exits 130; anything else is a bug and is shown with a pointer to `--debug` for the traceback.

Some stdlib errors are a user's doing too, wherever they surface: a path that is a folder, a file
where a folder is needed, a file that is not UTF-8, a full disk. Those get one line naming the path
and exit code 2 here, so a command that forgot to check its input still never says "internal error"
for a person's mistake.
"""

from __future__ import annotations

import csv
import errno
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
import yaml

from loralab.errors import InputError, LoralabError, Problem
from loralab.io import redact_secrets

USER_EXIT = 2

# OSErrors whose cause is the machine or the paths the user gave, never loralab's code: (what, fix).
_USER_ERRNOS = {
    errno.ENOSPC: ("no space left on the device", "free disk space or choose another disk"),
    errno.EDQUOT: ("disk quota exceeded", "free disk space or choose another disk"),
    errno.EROFS: ("the file system is read-only", "choose a writable path"),
    errno.EACCES: ("permission denied", "check its permissions, or choose another path"),
    errno.EPERM: ("operation not permitted", "check its permissions, or choose another path"),
    errno.ENAMETOOLONG: ("the file name is too long", "choose a shorter path"),
    errno.ELOOP: ("too many symbolic links (a link loop)", "fix the link"),
}


def _path_message(exc: OSError) -> str | None:
    """One line for an OSError a user's path caused, or None when it is not one of those."""
    path = exc.filename
    where = f"{path}: " if path is not None else ""
    if isinstance(exc, FileNotFoundError):
        if path is None:
            return f"file not found ({exc.strerror or exc}) (fix: check the paths given)"
        return f"{path}: file or folder not found (fix: check the path)"
    if isinstance(exc, PermissionError):
        return f"{where}permission denied (fix: check its permissions, or choose another path)"
    if isinstance(exc, IsADirectoryError):
        return f"{where}is a folder, but a file is needed here (fix: name a file)"
    if isinstance(exc, NotADirectoryError):
        return f"{where}a part of this path is a file, not a folder (fix: choose a path inside a folder)"
    if isinstance(exc, FileExistsError):
        return f"{where}already exists and is in the way (fix: remove it or choose another path)"
    known = _USER_ERRNOS.get(exc.errno or 0)
    if known is not None:
        return f"{where}{known[0]} (fix: {known[1]})"
    if path is not None:  # I/O error, device busy...: the disk or the path, not loralab
        return f"{path}: {exc.strerror or exc} (fix: check the path and the disk)"
    return None


def _content_problem(exc: BaseException) -> tuple[str, str] | None:
    """(what is wrong, fix) for a parser's error on a file's content; such errors name no file, so
    `reading` adds the path where the caller knows it."""
    if isinstance(exc, UnicodeDecodeError):
        bad = exc.object[exc.start : exc.start + 1].hex()
        return f"not UTF-8 text (byte 0x{bad} at position {exc.start})", "save it as UTF-8"
    if isinstance(exc, yaml.YAMLError):
        return "not valid YAML (" + " ".join(str(exc).split()) + ")", "correct the YAML syntax"
    if isinstance(exc, json.JSONDecodeError):
        where = f"{exc.msg} at line {exc.lineno}, column {exc.colno}"
        return f"not valid JSON ({where})", "restore or rewrite the file"
    if isinstance(exc, csv.Error):
        return f"not readable as CSV ({exc})", "check its quoting and delimiters"
    return None


def format_error(exc: BaseException) -> tuple[str, int]:
    """(the message, the exit code). Credentials in URIs never reach stderr (issue 10)."""
    msg, code = _format(exc)
    return redact_secrets(msg), code


def _format(exc: BaseException) -> tuple[str, int]:
    if isinstance(exc, LoralabError):
        return f"error: {exc.message()}", exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", 130
    if isinstance(exc, click.UsageError):
        # raised inside a command body: keep click's meaning and exit code (2)
        return f"error: {exc.format_message()}", exc.exit_code
    if isinstance(exc, OSError):
        msg = _path_message(exc)
        if msg is not None:
            return f"error: {msg}", USER_EXIT
    content = _content_problem(exc)
    if content is not None:
        what, fix = content
        return f"error: a file is {what} (fix: {fix}; `loralab --debug ...` shows which file)", USER_EXIT
    return f"internal error: {type(exc).__name__}: {exc} (run again with --debug for the traceback)", 1


@contextmanager
def reading(path: Path | str) -> Iterator[None]:
    """Name `path` in the error when reading it fails with an error that names no file (a
    UnicodeDecodeError, a CSV, JSON or YAML parser's error): the caller knows which file it is."""
    try:
        yield
    except (UnicodeDecodeError, csv.Error, json.JSONDecodeError, yaml.YAMLError) as exc:
        what, fix = _content_problem(exc) or (str(exc), "check the file")
        raise InputError(Problem(str(path), "", what, fix)) from exc
