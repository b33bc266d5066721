"""From a file's bytes to records: `(line, fields)` pairs, or `(line, BadRow)` for a record that is broken.

Before a row is read, `sniff` refuses files that are not what their name says: empty, UTF-16/32 (by
their byte-order mark, or NUL bytes without one), an Excel workbook or a Parquet file named .csv, a
.parquet file that is not Parquet. Text files are streamed line by line as bytes and each line is
decoded as UTF-8 on its own, so one corrupt byte spoils one row; a file where no line holds valid
non-ASCII UTF-8 but some line fails to decode is in another encoding, and `not_utf8` says which it
looks like and how to convert it. A UTF-8 byte-order mark is dropped.

CSV is parsed with `strict=True`: an unbalanced quote, which a lenient reader turns into one field
holding the following rows, is a "csv-syntax" bad row naming the lines it spans. A header that repeats
a column name is an error (each row would keep only the last of the two). TSV is read without quote
handling: one line is one row.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loralab.data.errors import BadRow, DataError

Record = tuple[int, "dict[str, Any] | BadRow"]
UTF8_BOM = b"\xef\xbb\xbf"
# UTF-32's marks begin with UTF-16's, so they are tried first.
_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)
SNIFF_BYTES = 4096


def _converted_name(path: Path) -> str:
    return f"{path.stem}.utf8{path.suffix}"


def _convert_fix(path: Path, encoding: str) -> str:
    fix = f"fix: iconv -f {encoding} -t UTF-8 '{path.name}' > '{_converted_name(path)}'"
    if path.suffix.lower() in (".csv", ".tsv", ".tab"):
        fix += ", or save it from Excel as 'CSV UTF-8'"
    return fix


def sniff(path: Path, fmt: str) -> None:
    """Refuse a file whose first bytes show it is not `fmt` text (or not Parquet) before reading it."""
    with path.open("rb") as f:
        head = f.read(SNIFF_BYTES)
    if not head:
        raise DataError(f"{path}: the file is empty (0 bytes)")
    if fmt == "parquet":
        if not head.startswith(b"PAR1"):
            looks = " (it looks like text: name it .csv, .tsv or .jsonl)" if _looks_like_text(head) else ""
            raise DataError(
                f"{path}: not a Parquet file: Parquet files begin with the bytes PAR1, this one with "
                f"{head[:4]!r}{looks}"
            )
        return
    for bom, name in _BOMS:
        if head.startswith(bom):
            raise DataError(
                f"{path}: the file is {name} (it begins with a {name} byte-order mark); loralab reads "
                f"UTF-8 ({_convert_fix(path, name)})"
            )
    if head.startswith(b"PK\x03\x04"):
        raise DataError(
            f"{path}: a ZIP archive (an Excel .xlsx workbook?), not {fmt.upper()} text "
            "(fix: in Excel, save it as 'CSV UTF-8')"
        )
    if head.startswith(b"PAR1"):
        raise DataError(f"{path}: a Parquet file named '{path.suffix}' (fix: rename it to .parquet)")
    nul = head.find(b"\x00")
    if nul >= 0:
        raise DataError(
            f"{path}: a NUL byte at byte offset {nul}: UTF-16 text without a byte-order mark, or not a "
            f"text file ({_convert_fix(path, 'UTF-16LE')})"
        )


def _looks_like_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        # A multi-byte character cut at the end of the sample is still text.
        return e.start >= len(head) - 3 and b"\x00" not in head
    return b"\x00" not in head


@dataclass
class Decoding:
    """What decoding a text file line by line found.

    `bad`: line -> why it is not UTF-8. `first_bad`: (line, byte offset in the file, the raw line) of
    the first such line. `utf8_seen`: whether some line held valid non-ASCII UTF-8, which tells a UTF-8
    file with a few corrupt rows (skip them) from a file in another encoding (refuse it).
    """

    bad: dict[int, str] = field(default_factory=dict)
    first_bad: tuple[int, int, bytes] | None = None
    utf8_seen: bool = False

    def wrong_encoding(self, rows_left: int) -> bool:
        """Another encoding: lines fail and none holds valid non-ASCII UTF-8, and either more than one
        fails or nothing else is left. A single failing line in an ASCII file stays one bad row, as a
        corrupt byte would be."""
        return bool(self.bad) and not self.utf8_seen and (len(self.bad) > 1 or rows_left == 0)


def decoded_lines(path: Path, dec: Decoding) -> Iterator[str]:
    """Each physical line decoded as UTF-8; a line that is not UTF-8 is recorded in `dec` and replaced."""
    offset = 0
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            start = offset
            offset += len(raw)
            if number == 1 and raw.startswith(UTF8_BOM):
                raw, start = raw[len(UTF8_BOM) :], start + len(UTF8_BOM)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                dec.bad[number] = f"bytes that are not UTF-8 at byte {e.start + 1} of the line"
                if dec.first_bad is None:
                    dec.first_bad = (number, start + e.start, raw)
                text = raw.decode("utf-8", errors="replace")
            else:
                dec.utf8_seen = dec.utf8_seen or not raw.isascii()
            yield text


def _guess_encoding(raw: bytes) -> tuple[str, str] | None:
    """(what the line looks like, its iconv name): Korean CP949/EUC-KR or Western Windows-1252/Latin-1."""
    try:
        text = raw.decode("cp949")
    except UnicodeDecodeError:
        pass
    else:
        if any("\uac00" <= c <= "\ud7a3" for c in text):
            return "Korean CP949/EUC-KR", "CP949"
    try:
        raw.decode("cp1252")
    except UnicodeDecodeError:
        return None
    return "Western Windows-1252/Latin-1", "CP1252"


def not_utf8(path: Path, dec: Decoding) -> DataError:
    """The error for a file in another encoding: where the first non-UTF-8 byte is and how to convert."""
    assert dec.first_bad is not None
    line, offset, raw = dec.first_bad
    guess = _guess_encoding(raw)
    looks = f"; it looks like {guess[0]}" if guess else ""
    n = len(dec.bad)
    return DataError(
        f"{path}:{line}: the file is not UTF-8: byte offset {offset} (line {line}) is not UTF-8, and "
        f"{n} line{'s' if n != 1 else ''} in all{looks}. loralab reads UTF-8 "
        f"({_convert_fix(path, guess[1] if guess else 'ENCODING')})"
    )


def check_header(where: str, names: list[str]) -> None:
    """A column name given twice is an error: a row would keep only the value of the last one."""
    positions: dict[str, list[int]] = {}
    for i, name in enumerate(names, start=1):
        if name:
            positions.setdefault(name, []).append(i)
    repeated = {name: at for name, at in positions.items() if len(at) > 1}
    if repeated:
        listed = "; ".join(f"'{n}' (columns {', '.join(map(str, at))})" for n, at in repeated.items())
        raise DataError(
            f"{where}: column name repeated in the header: {listed}; each row would keep only the last "
            "of them (fix: rename the columns so that every name is unique)"
        )


def _csv_syntax(error: str, start: int, end: int) -> str:
    quote_fix = 'write "" for a quote inside a quoted field, or close the quote'
    if "unexpected end of data" in error:
        return (
            f"a quote in the row starting at line {start} is never closed: lines {start}-{end} (to the "
            f"end of the file) would be read as one field ({quote_fix})"
        )
    if "expected after" in error:
        if end > start:
            return (
                f"an unbalanced quote: a quoted field runs from line {start} to line {end}, merging "
                f"those lines into one row, and text follows its closing quote ({quote_fix})"
            )
        return f"text follows the closing quote of a quoted field ({quote_fix})"
    if "new-line character" in error:
        return (
            "a carriage return (\\r) inside an unquoted field (quote the field; a file with old Mac "
            "line endings needs converting first: tr '\\r' '\\n' < in.csv > out.csv)"
        )
    return f"not valid CSV: {error}"


def delimited_records(path: Path, fmt: str, dec: Decoding, columns: list[str]) -> Iterator[Record]:
    """CSV or TSV records after the header (whose names are put into `columns`)."""
    lines = decoded_lines(path, dec)
    if fmt == "tsv":
        reader = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE, strict=True)
    else:
        reader = csv.reader(lines, strict=True)
    header: list[str] | None = None
    previous_end = 0
    while True:
        error = ""
        try:
            record: list[str] = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            record, error = [], str(e)
        end = reader.line_num
        start, previous_end = previous_end + 1, end
        if error:
            if header is None:
                reason = _csv_syntax(error, start, end)
                raise DataError(f"{path}:{start}: the header is not valid {fmt.upper()}: {reason}")
            yield start, BadRow(str(path), start, _csv_syntax(error, start, end), "csv-syntax")
            continue
        if not record or (len(record) == 1 and not record[0].strip()):
            continue
        undecodable = [dec.bad[n] for n in range(start, end + 1) if n in dec.bad]
        if header is None:
            if undecodable:
                raise not_utf8(path, dec)
            header = [h.strip() for h in record]
            check_header(f"{path}:{start}", header)
            columns[:] = header
            continue
        if undecodable:
            yield start, BadRow(str(path), start, undecodable[0], "undecodable")
        elif [c.strip().lstrip("\ufeff") for c in record] == header:
            reason = "repeats the header line (files joined together?)"
            yield start, BadRow(str(path), start, reason, "repeated-header")
        elif len(record) != len(header):
            reason = f"expected {len(header)} columns, got {len(record)}"
            if end > start:
                reason += (
                    f", in a row spanning lines {start}-{end}: a quoted field ran over line ends "
                    '(an unbalanced quote? write "" for a quote inside a quoted field)'
                )
                yield start, BadRow(str(path), start, reason, "csv-syntax")
            else:
                yield start, BadRow(str(path), start, reason, "column-count")
        else:
            yield start, dict(zip(header, record, strict=True))


def _pairs_hook(duplicates: list[str]) -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                duplicates.append(key)
            out[key] = value
        return out

    return hook


def jsonl_records(path: Path, dec: Decoding) -> Iterator[Record]:
    """One JSON object per line; blank lines are not rows."""
    first = True
    for number, text in enumerate(decoded_lines(path, dec), start=1):
        stripped = text.strip()
        if not stripped:
            continue
        if number in dec.bad:
            yield number, BadRow(str(path), number, dec.bad[number], "undecodable")
            first = False
            continue
        duplicates: list[str] = []
        try:
            value = json.loads(text, object_pairs_hook=_pairs_hook(duplicates))
        except json.JSONDecodeError as e:
            if first and stripped in ("[", "{"):
                raise DataError(
                    f"{path}:{number}: JSON spread over several lines, not JSON lines (one object per "
                    f"line) (fix: jq -c '.[]' '{path.name}' > '{path.stem}.lines.jsonl' for an array, "
                    "jq -c . for objects)"
                ) from e
            reason = f"malformed JSON at column {e.colno}: {e.msg}"
            yield number, BadRow(str(path), number, reason, "malformed-json")
            first = False
            continue
        if first and isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            raise DataError(
                f"{path}:{number}: one JSON array of {len(value)} objects, not JSON lines (one object "
                f"per line) (fix: jq -c '.[]' '{path.name}' > '{path.stem}.lines.jsonl')"
            )
        first = False
        if not isinstance(value, dict):
            reason = f"a JSON {_json_type(value)}, not an object"
            yield number, BadRow(str(path), number, reason, "not-an-object")
        elif duplicates:
            names = ", ".join(f"'{k}'" for k in dict.fromkeys(duplicates))
            reason = f"key {names} given more than once; JSON would keep only the last"
            yield number, BadRow(str(path), number, reason, "duplicate-key")
        else:
            yield number, value


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "true/false", type(None): "null"}
    return names.get(type(value), "number")


def parquet_source(path: Path) -> tuple[list[str], dict[str, tuple[str, str]], Iterator[Record]]:
    """(column names, column -> (kind, Arrow type), the records).

    Kinds are "string", "integer", "float", "bool", "null", "nested" (list, struct, map) or "other",
    so a caller can refuse a column of the wrong type once instead of once per row.
    """
    try:
        # pyarrow is optional and large; only reading a Parquet file pays for importing it.
        import pyarrow as pa  # type: ignore[import-not-found,unused-ignore]
        import pyarrow.parquet as pq  # type: ignore[import-not-found,unused-ignore]
    except ImportError as e:
        raise DataError(
            f"{path}: reading Parquet needs pyarrow, which is not installed (fix: pip install pyarrow, "
            "or convert the file to CSV or JSONL)"
        ) from e
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: cannot be read as Parquet, the file is damaged or not Parquet ({e})") from e
    schema = parquet.schema_arrow
    names = list(schema.names)
    check_header(str(path), names)
    kinds = {f.name: (_arrow_kind(pa, f.type), str(f.type)) for f in schema}

    def records() -> Iterator[Record]:
        number = 0
        try:
            for batch in parquet.iter_batches():
                for record in batch.to_pylist():
                    number += 1
                    yield number, record
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"{path}: cannot be read past row {number} ({e})") from e

    return names, kinds, records()


def _arrow_kind(pa: Any, t: Any) -> str:
    types = pa.types
    if types.is_dictionary(t):
        t = t.value_type
    checks = (
        ("string", (types.is_string, types.is_large_string, getattr(types, "is_string_view", None))),
        ("integer", (types.is_integer,)),
        ("float", (types.is_floating,)),
        ("bool", (types.is_boolean,)),
        ("null", (types.is_null,)),
        ("nested", (types.is_nested,)),
    )
    for kind, predicates in checks:
        if any(p is not None and p(t) for p in predicates):
            return kind
    return "other"
