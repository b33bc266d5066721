"""One place that turns exceptions into what a person reads (like huggingface_hub's CLI `_errors.py`).

User errors (`LoralabError`) become their one-line message and exit code 2; an interrupted command
exits 130; anything else is a bug and is shown with a pointer to `--debug` for the traceback.
"""

from __future__ import annotations

from loralab.errors import LoralabError


def format_error(exc: BaseException) -> tuple[str, int]:
    if isinstance(exc, LoralabError):
        return f"error: {exc.message()}", exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", 130
    if isinstance(exc, FileNotFoundError):
        return f"error: file not found: {exc.filename}", 2
    if isinstance(exc, PermissionError):
        return f"error: permission denied: {exc.filename}", 2
    return f"internal error: {type(exc).__name__}: {exc} (run again with --debug for the traceback)", 1
