"""Data-specific errors; all are `LoralabError`s, so the CLI prints them without a traceback."""

from __future__ import annotations

from dataclasses import dataclass

from loralab.errors import LoralabError

MAX_LISTED = 10
# Kinds of bad rows that point to a wrong column, broken quoting or a nested record rather than to a
# few unusable rows: reading goes on to list them all, then they are an error even with on_bad_rows="skip".
FATAL_FIXES = {
    "csv-syntax": 'quote each field that holds a comma, quote or line break, and write "" for a quote in it',
    "not-a-scalar": "point data.text_field / data.label_field at the right column, or flatten nested values",
    "not-text": "point data.text_field at the column that holds the text",
}
FATAL_KINDS = frozenset(FATAL_FIXES)


@dataclass(frozen=True)
class BadRow:
    """One input row that could not be used: where it is and why.

    `line` is the 1-based line of the source file where the row starts (for Parquet: the 1-based
    row number). `kind` is a short category used for counting: "undecodable", "malformed-json",
    "duplicate-key", "not-an-object", "empty-text", "missing-label", "missing-field", "bad-number",
    "column-count", "repeated-header", and the fatal ones "not-a-scalar", "not-text", "csv-syntax"
    (see FATAL_KINDS).
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
    """Bad rows reported together: the first ten, and how many there were.

    Raised with `on_bad_rows="error"`, and always for rows of a fatal kind (a nested value, a number
    where text belongs, broken CSV quoting): those mean the file is read wrongly, not that a few rows
    are unusable, so skipping them would train on a misread file. `fix` replaces the closing advice.
    """

    def __init__(self, bad_rows: list[BadRow], *, fatal: bool = False, fix: str | None = None):
        self.bad_rows = list(bad_rows)
        self.fatal = fatal
        self.fix = fix
        super().__init__(self.message())

    def message(self) -> str:
        n = len(self.bad_rows)
        head = f"{n} bad row{'s' if n != 1 else ''}"
        if self.fatal:
            head += " (the file would be read wrongly, so an error, not skipped)"
        lines = [head + ":"]
        lines += ["  - " + b.text() for b in self.bad_rows[:MAX_LISTED]]
        if n > MAX_LISTED:
            lines.append(f"  ... and {n - MAX_LISTED} more")
        if self.fix is not None:
            fix = self.fix
        elif self.fatal:
            kinds = dict.fromkeys(b.kind for b in self.bad_rows)
            fix = "; ".join(FATAL_FIXES.get(k, "correct these rows") for k in kinds)
        else:
            fix = "correct these rows, or use on_bad_rows='skip' to leave them out"
        lines.append(f"  (fix: {fix})")
        return "\n".join(lines)


class RowValueError(LoralabError):
    """A single row's value cannot be rendered (e.g. a non-number under a numeric format spec)."""

    def __init__(self, message: str, kind: str = "other"):
        self.kind = kind
        super().__init__(message)
