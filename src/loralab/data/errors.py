"""Data-specific errors; both are `LoralabError`s, so the CLI prints them without a traceback."""

from __future__ import annotations

from dataclasses import dataclass

from loralab.errors import LoralabError

MAX_LISTED = 10


@dataclass(frozen=True)
class BadRow:
    """One input row that could not be used: where it is and why.

    `line` is the 1-based line of the source file where the row starts (for Parquet: the 1-based
    row number). `kind` is a short category ("undecodable", "malformed-json", "empty-text",
    "missing-label", "missing-field", "bad-number", "column-count", "not-an-object") used for counting.
    """

    file: str
    line: int
    reason: str
    kind: str = "other"

    def text(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


class DataError(LoralabError):
    """A data file that cannot be read at all (missing, unknown format, missing column)."""


class BadRowsError(LoralabError):
    """Raised with `on_bad_rows="error"`: lists the first ten bad rows and how many there were."""

    def __init__(self, bad_rows: list[BadRow]):
        self.bad_rows = list(bad_rows)
        super().__init__(self.message())

    def message(self) -> str:
        n = len(self.bad_rows)
        lines = [f"{n} bad row{'s' if n != 1 else ''}:"]
        lines += ["  - " + b.text() for b in self.bad_rows[:MAX_LISTED]]
        if n > MAX_LISTED:
            lines.append(f"  ... and {n - MAX_LISTED} more")
        lines.append("  (fix: correct these rows, or use on_bad_rows='skip' to leave them out)")
        return "\n".join(lines)


class RowValueError(LoralabError):
    """A single row's value cannot be rendered (e.g. a non-number under a numeric format spec)."""

    def __init__(self, message: str, kind: str = "other"):
        self.kind = kind
        super().__init__(message)
