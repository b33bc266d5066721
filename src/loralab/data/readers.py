"""Reading CSV, TSV, JSONL (and Parquet when pyarrow is installed) into a `RowSet`.

Every row keeps the 1-based line where it starts (a CSV record with a quoted newline spans several
lines; Parquet rows are numbered 1, 2, ...). What `sources` refuses outright (empty, UTF-16, not UTF-8,
an Excel or Parquet file named .csv, a repeated column name) is a `DataError`. The rest is per row:

- rows that cannot be used (not UTF-8 in a UTF-8 file, malformed JSON, a JSON line that is not an
  object or repeats a key, a wrong column count, an empty text, a missing label, a repeated header
  line) are `BadRow`s with file, line and reason, skipped, and counted in `RowSet.bad_rows`; with
  `on_bad_rows="error"` they are reported together after the whole file has been read;
- rows that mean the file is read wrongly (broken CSV quoting that merges rows, an object or list
  where a text or label belongs, a number where text belongs) are reported together and are an error
  whatever `on_bad_rows` says (see `errors.FATAL_KINDS`);
- a file with no usable row is an error that says why every row was skipped.

How JSON and Parquet values become texts and labels (the integer 1 and the string "1" are one class)
is in `values`.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from loralab.data.errors import FATAL_KINDS, BadRow, BadRowsError, DataError, RowValueError
from loralab.data.sources import (
    Decoding,
    Record,
    delimited_records,
    jsonl_records,
    not_utf8,
    parquet_source,
    sniff,
)
from loralab.data.template import Template, compile_template, missing_field_problem
from loralab.data.values import check_template_value, label_value, text_value
from loralab.errors import ConfigError, Problem

OnBadRows = Literal["skip", "error"]
FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
FORMATS |= {".parquet": "parquet", ".pq": "parquet"}
_SPREADSHEETS = (".xlsx", ".xls", ".xlsm", ".ods")


@dataclass
class Row:
    """One usable row: its source line, all its fields, and the rendered text and label (if asked)."""

    line: int
    fields: dict[str, Any]
    text: str | None = None
    label: str | None = None


@dataclass
class RowSet:
    """The usable rows of one file, the rows left out, and the columns seen."""

    file: str
    rows: list[Row] = field(default_factory=list)
    bad_rows: list[BadRow] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        return [r.label for r in self.rows if r.label is not None]

    @property
    def texts(self) -> list[str]:
        return [r.text for r in self.rows if r.text is not None]

    def skipped_summary(self) -> str | None:
        """One line for the person running: how many rows were left out, by kind, and the first one."""
        if not self.bad_rows:
            return None
        n = len(self.bad_rows)
        first = self.bad_rows[0]
        return (
            f"{self.file}: {n} row{'s' if n != 1 else ''} skipped ({_by_kind(self.bad_rows)}); "
            f"first: line {first.line}: {first.reason}"
        )


def _by_kind(bad_rows: list[BadRow]) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in Counter(b.kind for b in bad_rows).most_common())


@dataclass
class _Spec:
    """What makes a row usable: where its text and label come from."""

    text_field: str | None
    template: Template | None
    label_field: str | None

    def required(self) -> list[str]:
        names = self.template.fields if self.template else [self.text_field] if self.text_field else []
        return [*names, *([self.label_field] if self.label_field else [])]

    def key(self, name: str) -> str:
        """The config key a missing or mistyped column came from."""
        if name == self.text_field:
            return "data.text_field"
        return "data.label_field" if name == self.label_field else "data.text_template"


def detect_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(sorted(FORMATS))
        hint = "; save a workbook as 'CSV UTF-8'" if path.suffix.lower() in _SPREADSHEETS else ""
        raise DataError(
            f"{path}: unknown data format '{path.suffix}' (known: {known}; JSON must be JSON lines{hint})"
        )
    return fmt


def read_rows(
    path: str | Path,
    *,
    text_field: str | None = None,
    text_template: str | Template | None = None,
    label_field: str | None = None,
    on_bad_rows: OnBadRows = "skip",
    fmt: str | None = None,
) -> RowSet:
    """Read a data file; rows with no usable text or label become `BadRow`s (see module docstring).

    With neither `text_field` nor `text_template` the rows keep only their fields (text is None).
    A column named by the template, `text_field` or `label_field` that the file lacks is a ConfigError
    listing the available columns and the closest match.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: data file not found")
    if text_field and text_template:
        raise DataError("give text_field or text_template, not both")
    template = compile_template(text_template) if isinstance(text_template, str) else text_template
    spec = _Spec(text_field, template, label_field)
    fmt = fmt or detect_format(p)
    sniff(p, fmt)
    rowset = RowSet(file=str(p))
    dec = Decoding()
    records: Iterator[Record]
    if fmt == "parquet":
        rowset.columns, kinds, records = parquet_source(p)
        _check_parquet_types(rowset, spec, kinds)
    elif fmt == "jsonl":
        records = jsonl_records(p, dec)
    else:
        records = delimited_records(p, fmt, dec, rowset.columns)
    for line, fields in records:
        bad = _build_row(rowset, spec, line, fields)
        if bad is not None:
            rowset.bad_rows.append(bad)
    if dec.wrong_encoding(len(rowset.rows)):
        raise not_utf8(p, dec)
    if not rowset.rows and not rowset.bad_rows:
        what = f"only a header ({', '.join(rowset.columns)})" if rowset.columns else "only blank lines"
        raise DataError(f"{p}: no data rows: the file holds {what}")
    if rowset.columns:
        _check_columns(rowset, spec)
    fatal = [b for b in rowset.bad_rows if b.kind in FATAL_KINDS]
    if fmt == "csv":
        fatal += _merged_rows(rowset, spec)
    if fatal:
        raise BadRowsError(sorted(fatal, key=lambda b: b.line), fatal=True)
    if not rowset.rows:
        n, first = len(rowset.bad_rows), rowset.bad_rows[0]
        raise DataError(
            f"{p}: no usable rows: all {n} rows were skipped ({_by_kind(rowset.bad_rows)}); "
            f"first: line {first.line}: {first.reason}"
        )
    if rowset.bad_rows and on_bad_rows == "error":
        raise BadRowsError(rowset.bad_rows)
    return rowset


def _check_columns(rowset: RowSet, spec: _Spec) -> None:
    missing = [name for name in spec.required() if name not in rowset.columns]
    if not missing:
        return
    problems = [missing_field_problem(m, rowset.columns, rowset.file, spec.key(m)) for m in missing]
    if len(rowset.columns) == 1:
        # One column whose name holds a separator: the file is delimited by something else.
        only = rowset.columns[0]
        sep = next((s for s in (";", "\t", "|", ",") if s in only), None)
        if sep is not None:
            how = {"\t": "tab-separated: name it .tsv", ",": "comma-separated: name it .csv"}.get(
                sep, f"separated by '{sep}': save it separated by ','"
            )
            fix = f"the header is one column '{only}'; the file seems {how}"
            problems = [Problem(p.file, p.key, p.message, fix) for p in problems]
    raise ConfigError(problems)


def _check_parquet_types(rowset: RowSet, spec: _Spec, kinds: dict[str, tuple[str, str]]) -> None:
    """Refuse a used column of the wrong Arrow type once, instead of once per row."""
    allowed: dict[str, tuple[set[str], str, str]] = {}
    scalar = {"string", "integer", "float", "bool", "null"}
    for name in spec.template.fields if spec.template else ():
        allowed[name] = (scalar | {"other"}, "a value a template can show", "use a column of plain values")
    if spec.text_field:
        allowed[spec.text_field] = (
            {"string", "null"},
            "text",
            "point data.text_field at the column that holds the text (numbers: use data.text_template)",
        )
    if spec.label_field:
        allowed[spec.label_field] = (scalar, "class names", "point data.label_field at the label column")
    problems = [
        Problem(rowset.file, spec.key(name), f"column '{name}' holds {arrow} values, not {what}", fix)
        for name, (ok, what, fix) in allowed.items()
        if name in kinds and kinds[name][0] not in ok
        for arrow in [kinds[name][1]]
    ]
    if problems:
        raise ConfigError(problems)


def _build_row(rowset: RowSet, spec: _Spec, line: int, fields: dict[str, Any] | BadRow) -> BadRow | None:
    """Append the row to `rowset` when usable; else return why not."""
    for name in fields if isinstance(fields, dict) else ():
        if name not in rowset.columns:
            rowset.columns.append(name)
    if isinstance(fields, BadRow):
        return fields
    needed = [n for n in spec.required() if n != spec.label_field]
    absent = [n for n in needed if fields.get(n) is None]
    if absent:
        return BadRow(rowset.file, line, f"missing field(s) {', '.join(absent)}", "missing-field")
    text: str | None = None
    try:
        # Types first: a nested label next to an empty text is a misread file, not one empty row.
        label = label_value(fields.get(spec.label_field), spec.label_field) if spec.label_field else None
        if spec.template is not None:
            for name in spec.template.fields:
                check_template_value(fields[name], name)
            if all(str(fields[n]).strip() == "" for n in spec.template.fields):
                return BadRow(rowset.file, line, "empty text (every template field is empty)", "empty-text")
            text = spec.template.render(fields)
        elif spec.text_field is not None:
            text = text_value(fields[spec.text_field], spec.text_field)
            if not text.strip():
                return BadRow(rowset.file, line, f"empty text in '{spec.text_field}'", "empty-text")
    except RowValueError as e:
        return BadRow(rowset.file, line, str(e), e.kind)
    if spec.label_field is not None and label is None:
        return BadRow(rowset.file, line, f"missing label in '{spec.label_field}'", "missing-label")
    rowset.rows.append(Row(line, fields, text, label))
    return None


def _holds_rows(pieces: list[str], width: int, at: int, label_at: int, labels: set[str]) -> bool:
    """Whether the lines of a field (starting in column `at`) all split into the cells of a row's rest
    and at least one ends in a known label, as the rows an unbalanced quote swallows do."""
    cells = [next(csv.reader([p]), []) for p in pieces]
    widths = [width - at] + [width] * (len(pieces) - 1)
    if any(len(c) != w for c, w in zip(cells, widths, strict=True)):
        return False
    label_cells = [c[label_at - at] for c in cells[:1] if label_at >= at]
    label_cells += [c[label_at] for c in cells[1:]]
    # Exact match: a tool writes "text,label", while prose that ends in ", 1" has a space.
    return any(cell in labels for cell in label_cells)


def _merged_rows(rowset: RowSet, spec: _Spec) -> list[BadRow]:
    """Rows holding other rows: a quoted field over several lines whose every line but the last splits
    into a row's cells, one of them ending in a known label. A stray quote that happens to close
    cleanly (just before a comma) leaves exactly this, and strict CSV parsing cannot see it."""
    if spec.label_field is None or spec.label_field not in rowset.columns:
        return []
    labels, width = set(rowset.labels), len(rowset.columns)
    label_at = rowset.columns.index(spec.label_field)
    found = []
    for row in rowset.rows:
        line = row.line
        for j, value in enumerate(row.fields.values()):
            pieces = value.split("\n") if isinstance(value, str) else [""]
            if len(pieces) > 1 and _holds_rows(pieces[:-1], width, j, label_at, labels):
                reason = (
                    f"a quoted field from line {line} to line {line + len(pieces) - 1} holds lines that "
                    f"read as rows of their own ({pieces[0]!r}, ...): an unbalanced quote merged them "
                    '(write "" for a quote inside a quoted field)'
                )
                found.append(BadRow(rowset.file, row.line, reason, "csv-syntax"))
                break
            line += len(pieces) - 1
    return found
