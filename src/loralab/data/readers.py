"""Reading CSV, TSV, JSONL (and Parquet when pyarrow is installed) into a `RowSet`.

Files are streamed line by line as bytes and each line is decoded as UTF-8 on its own, so one bad
byte spoils one row, not the file. Every row keeps the 1-based line where it starts (a CSV record
with a quoted newline spans several lines; Parquet rows are numbered 1, 2, ...). Rows that cannot be
used are collected as `BadRow`s and skipped, or with `on_bad_rows="error"` reported all together
after the whole file has been read. Labels are kept as strings (JSON `3` becomes "3").
TSV is read without quote handling: one line is one row.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from loralab.data.errors import BadRow, BadRowsError, DataError, RowValueError
from loralab.data.template import Template, compile_template, missing_field_problem
from loralab.errors import ConfigError

OnBadRows = Literal["skip", "error"]
Record = tuple[int, "dict[str, Any] | BadRow"]
FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
FORMATS |= {".parquet": "parquet", ".pq": "parquet"}


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


@dataclass
class _Spec:
    """What makes a row usable: where its text and label come from."""

    text_field: str | None
    template: Template | None
    label_field: str | None

    def required(self) -> list[str]:
        names = self.template.fields if self.template else [self.text_field] if self.text_field else []
        return [*names, *([self.label_field] if self.label_field else [])]


def detect_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(sorted(FORMATS))
        raise DataError(
            f"{path}: unknown data format '{path.suffix}' (known: {known}; JSON must be JSON lines)"
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
    rowset = RowSet(file=str(p))
    source = {"csv": _csv_records, "tsv": _tsv_records, "jsonl": _jsonl_records, "parquet": _parquet_records}
    records = source[fmt or detect_format(p)](p, rowset)
    for line, fields in records:
        bad = _build_row(rowset, spec, line, fields)
        if bad is not None:
            rowset.bad_rows.append(bad)
    _check_columns(rowset, spec)
    if rowset.bad_rows and on_bad_rows == "error":
        raise BadRowsError(rowset.bad_rows)
    return rowset


def _check_columns(rowset: RowSet, spec: _Spec) -> None:
    missing = [name for name in spec.required() if name not in rowset.columns]
    if missing:
        keys = {spec.text_field: "data.text_field", spec.label_field: "data.label_field"}
        problems = [
            missing_field_problem(m, rowset.columns, rowset.file, keys.get(m, "data.text_template"))
            for m in missing
        ]
        raise ConfigError(problems)


def _build_row(rowset: RowSet, spec: _Spec, line: int, fields: dict[str, Any] | BadRow) -> BadRow | None:
    """Append the row to `rowset` when usable; else return why not."""
    for name in fields if isinstance(fields, dict) else ():
        if name not in rowset.columns:
            rowset.columns.append(name)
    if isinstance(fields, BadRow):
        return fields
    if any(
        name not in fields or fields[name] is None for name in spec.required() if name != spec.label_field
    ):
        absent = [n for n in spec.required() if n != spec.label_field and fields.get(n) is None]
        return BadRow(rowset.file, line, f"missing field(s) {', '.join(absent)}", "missing-field")
    text: str | None = None
    try:
        if spec.template is not None:
            if all(str(fields[n]).strip() == "" for n in spec.template.fields):
                return BadRow(rowset.file, line, "empty text (every template field is empty)", "empty-text")
            text = spec.template.render(fields)
        elif spec.text_field is not None:
            text = str(fields[spec.text_field])
            if not text.strip():
                return BadRow(rowset.file, line, f"empty text in '{spec.text_field}'", "empty-text")
    except RowValueError as e:
        return BadRow(rowset.file, line, str(e), e.kind)
    label: str | None = None
    if spec.label_field is not None:
        raw = fields.get(spec.label_field)
        label = "" if raw is None else str(raw).strip()
        if not label:
            return BadRow(rowset.file, line, f"missing label in '{spec.label_field}'", "missing-label")
    rowset.rows.append(Row(line, fields, text, label))
    return None


def _decoded_lines(path: Path, bad: dict[int, str]) -> Iterator[str]:
    """Each physical line decoded as UTF-8; a line that is not UTF-8 is recorded in `bad` and replaced."""
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as e:
                bad[number] = f"bytes that are not UTF-8 at byte {e.start + 1} of the line"
                yield raw.decode("utf-8", errors="replace")


def _delimited_records(
    path: Path, rowset: RowSet, reader: Iterator[list[str]], bad: dict[int, str]
) -> Iterator[Record]:
    header: list[str] | None = None
    previous_end = 0
    for record in reader:
        end = reader.line_num  # type: ignore[attr-defined]
        start, previous_end = previous_end + 1, end
        if not record or (len(record) == 1 and not record[0].strip() and header is not None):
            continue
        undecodable = [bad[n] for n in range(start, end + 1) if n in bad]
        if header is None:
            if undecodable:
                raise DataError(f"{path}:{start}: header line {undecodable[0]}")
            header = [h.strip() for h in record]
            rowset.columns = list(header)
            continue
        if undecodable:
            yield start, BadRow(str(path), start, undecodable[0], "undecodable")
        elif len(record) != len(header):
            reason = f"expected {len(header)} columns, got {len(record)}"
            yield start, BadRow(str(path), start, reason, "column-count")
        else:
            yield start, dict(zip(header, record, strict=True))


def _csv_records(path: Path, rowset: RowSet) -> Iterator[Record]:
    bad: dict[int, str] = {}
    reader = csv.reader(_decoded_lines(path, bad))
    return _delimited_records(path, rowset, reader, bad)


def _tsv_records(path: Path, rowset: RowSet) -> Iterator[Record]:
    bad: dict[int, str] = {}
    reader = csv.reader(_decoded_lines(path, bad), delimiter="\t", quoting=csv.QUOTE_NONE)
    return _delimited_records(path, rowset, reader, bad)


def _jsonl_records(path: Path, rowset: RowSet) -> Iterator[Record]:
    bad: dict[int, str] = {}
    for number, text in enumerate(_decoded_lines(path, bad), start=1):
        if not text.strip():
            continue
        if number in bad:
            yield number, BadRow(str(path), number, bad[number], "undecodable")
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            yield number, BadRow(str(path), number, f"malformed JSON: {e.msg}", "malformed-json")
            continue
        if not isinstance(value, dict):
            reason = f"a JSON {type(value).__name__}, not an object"
            yield number, BadRow(str(path), number, reason, "not-an-object")
            continue
        yield number, value


def _parquet_records(path: Path, rowset: RowSet) -> Iterator[Record]:
    try:
        import pyarrow.parquet as pq  # type: ignore[import-not-found,unused-ignore]
    except ImportError as e:
        raise DataError(
            f"{path}: reading Parquet needs pyarrow, which is not installed (fix: pip install pyarrow, "
            "or convert the file to CSV or JSONL)"
        ) from e
    parquet = pq.ParquetFile(path)
    rowset.columns = list(parquet.schema_arrow.names)
    number = 0
    for batch in parquet.iter_batches():
        for record in batch.to_pylist():
            number += 1
            yield number, record
