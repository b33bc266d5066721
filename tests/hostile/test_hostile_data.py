"""Hostile data files (issue 10, A): each is read right, or refused with the file, the line and a fix.

Every case is a file's exact bytes and what reading it must give: the usable rows (line, text, label)
and the skipped rows (line, kind), or the error class and the phrases its one-line message must hold.
Byte offsets and line numbers in the expectations are counted by hand from the bytes shown.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from loralab.cli_errors import format_error
from loralab.data import (
    BadRowsError,
    DataError,
    Row,
    build_label_map,
    check_label_aliases,
    encode_rows,
    leakage_note,
    read_rows,
    same_file,
    shared_texts,
    unseen_note,
)
from loralab.errors import ConfigError, LoralabError

TEXT_LABEL = {"text_field": "text", "label_field": "label"}


@dataclass(frozen=True)
class Case:
    name: str
    file: str
    data: bytes
    kwargs: dict[str, Any] = field(default_factory=lambda: dict(TEXT_LABEL))
    rows: list[tuple[int, str | None, str | None]] | None = None
    bad: list[tuple[int, str]] = field(default_factory=list)
    error: type[LoralabError] | None = None
    says: tuple[str, ...] = ()


def lines(*items: str) -> bytes:
    return "".join(i + "\n" for i in items).encode("utf-8")


CSV_CASES = [
    Case(
        "unterminated quote swallows the rest of the file",
        "t.csv",
        lines("text,label", "ok,a", '"never closed,b', "x,a", "y,b"),
        error=BadRowsError,
        says=("t.csv:3:", "never closed", "lines 3-5", "not skipped", 'write ""'),
    ),
    Case(
        "stray quote closes later with text after it",
        "t.csv",
        lines("text,label", '"bad,a', "ok,b", '"x" y,c', "z,a"),
        error=BadRowsError,
        says=("t.csv:2:", "unbalanced quote", "from line 2 to line 4"),
    ),
    Case(
        "stray quote closes cleanly before a comma: merged rows found by their labels",
        "t.csv",
        lines("text,label", "p,a", '"bad,a', "ok,b", 'more text",c', "q,b", "r,c"),
        error=BadRowsError,
        says=("t.csv:3:", "from line 3 to line 5", "rows of their own", "'bad,a'"),
    ),
    Case(
        "a quoted field over two lines is one text, not a merge",
        "t.csv",
        lines("text,label", '"first line, with comma', 'second line",a', "z,a"),
        rows=[(2, "first line, with comma\nsecond line", "a"), (4, "z", "a")],
    ),
    Case(
        "CRLF line endings, with a quoted field over two lines",
        "t.csv",
        b'text,label\r\nx,a\r\n"two\r\nlines",b\r\ny,a\r\n',
        rows=[(2, "x", "a"), (3, "two\r\nlines", "b"), (5, "y", "a")],
    ),
    Case(
        "multi-line record with the wrong column count is a quoting error, not one short row",
        "t.csv",
        lines("text,label", "p,a", '"bad,a', 'ok,b"'),
        error=BadRowsError,
        says=("t.csv:3:", "spanning lines 3-4", "expected 2 columns, got 1"),
    ),
    Case(
        "duplicate column names",
        "t.csv",
        lines("text,text,category", "first,second,a"),
        kwargs={"text_field": "text", "label_field": "category"},
        error=DataError,
        says=("t.csv:1:", "'text' (columns 1, 2)", "rename"),
    ),
    Case(
        "duplicate column names after stripping spaces",
        "t.csv",
        lines("text, label ,label", "x,a,b"),
        error=DataError,
        says=("t.csv:1:", "'label' (columns 2, 3)"),
    ),
    Case(
        "latin-1 file: every row would be dropped",
        "t.csv",
        "text,label\ncafé,a\nrésumé,b\n".encode("latin-1"),
        error=DataError,
        # "text,label\n" is 11 bytes, "caf" 3 more: the é is at byte offset 14.
        says=("t.csv:2:", "not UTF-8", "byte offset 14", "2 lines", "Windows-1252", "iconv -f CP1252"),
    ),
    Case(
        "Korean CP949 file",
        "t.csv",
        "text,label\n점심 식대,복리후생비\n".encode("cp949"),
        error=DataError,
        says=("t.csv:2:", "not UTF-8", "byte offset 11", "CP949", "iconv -f CP949 -t UTF-8 't.csv'"),
    ),
    Case(
        "UTF-16 with a byte-order mark",
        "t.csv",
        "text,label\nx,a\n".encode("utf-16"),
        error=DataError,
        says=("is UTF-16", "byte-order mark", "iconv -f UTF-16"),
    ),
    Case(
        "UTF-32 with a byte-order mark",
        "t.csv",
        "text,label\nx,a\n".encode("utf-32"),
        error=DataError,
        says=("is UTF-32",),
    ),
    Case(
        "UTF-16 without a byte-order mark",
        "t.csv",
        "text,label\nx,a\n".encode("utf-16-le"),
        error=DataError,
        says=("NUL byte at byte offset 1", "UTF-16"),
    ),
    Case(
        "UTF-8 byte-order mark just works",
        "t.csv",
        b"\xef\xbb\xbf" + lines("text,label", "한글,a"),
        rows=[(2, "한글", "a")],
    ),
    Case(
        "an Excel workbook named .csv",
        "t.csv",
        b"PK\x03\x04\x14\x00\x06\x00" + b"\x00" * 40,
        error=DataError,
        says=("ZIP archive", "Excel", "CSV UTF-8"),
    ),
    Case(
        "a Parquet file named .csv",
        "t.csv",
        b"PAR1\x15\x04" + b"\x00" * 20,
        error=DataError,
        says=("Parquet file named '.csv'", "rename it to .parquet"),
    ),
    Case(
        "old Mac CR line endings",
        "t.csv",
        b"text,label\rx,a\ry,b\r",
        error=DataError,
        says=("t.csv:1:", "carriage return", "tr '\\r' '\\n'"),
    ),
    Case(
        "empty texts and labels are skipped and counted",
        "t.csv",
        lines("text,label", ",a", "x,", "  ,b", "y,c", '"",d'),
        rows=[(5, "y", "c")],
        bad=[(2, "empty-text"), (3, "missing-label"), (4, "empty-text"), (6, "empty-text")],
    ),
    Case(
        "every row skipped is an error that says why",
        "t.csv",
        lines("text,label", *[f"row {i}," for i in range(12)]),
        error=DataError,
        says=("t.csv: no usable rows", "all 12 rows were skipped (12 missing-label)", "first: line 2"),
    ),
    Case(
        "a repeated header line (files joined) is skipped, not a class named 'label'",
        "t.csv",
        lines("text,label", "x,a", "text,label", "y,b"),
        rows=[(2, "x", "a"), (4, "y", "b")],
        bad=[(3, "repeated-header")],
    ),
    Case(
        "missing label column names the columns found",
        "t.csv",
        lines("text,category", "x,a"),
        error=ConfigError,
        says=("data.label_field", "'label' is not a column; available columns: text, category"),
    ),
    Case(
        "missing text column names the columns found",
        "t.csv",
        lines("sentence,label", "x,a"),
        error=ConfigError,
        says=("data.text_field", "available columns: sentence, label"),
    ),
    Case(
        "semicolon-separated file",
        "t.csv",
        lines("text;label", "x;a"),
        error=ConfigError,
        says=("available columns: text;label", "separated by ';'"),
    ),
    Case("header only", "t.csv", lines("text,label"), error=DataError, says=("only a header (text, label)",)),
    Case("zero bytes", "t.csv", b"", error=DataError, says=("t.csv: the file is empty (0 bytes)",)),
    Case("only blank lines", "t.csv", b"\n\n  \n", error=DataError, says=("only blank lines",)),
    Case(
        "CSV labels 1 and 1.0 are read as written (the label map refuses them)",
        "t.csv",
        lines("text,label", "x,1", "y,1.0", "z,2"),
        rows=[(2, "x", "1"), (3, "y", "1.0"), (4, "z", "2")],
    ),
    Case(
        "a workbook by its extension",
        "t.xlsx",
        b"PK\x03\x04",
        error=DataError,
        says=("unknown data format '.xlsx'", "CSV UTF-8"),
    ),
]

JSONL_CASES = [
    Case(
        "nested label becomes no class",
        "t.jsonl",
        lines('{"text": "a", "label": "x"}', '{"text": "b", "label": {"nested": 1}}'),
        error=BadRowsError,
        says=("t.jsonl:2:", "'label' is an object ({'nested': 1}), not a class name", "not skipped"),
    ),
    Case(
        "list label",
        "t.jsonl",
        lines('{"text": "a", "label": ["x", "y"]}', '{"text": "b", "label": "x"}'),
        error=BadRowsError,
        says=("t.jsonl:1:", "'label' is a list"),
    ),
    Case(
        "number text: the wrong column",
        "t.jsonl",
        lines('{"text": 123, "label": "x"}', '{"text": "b", "label": "x"}'),
        error=BadRowsError,
        says=("t.jsonl:1:", "'text' is a number (123), not text"),
    ),
    Case(
        "object text",
        "t.jsonl",
        lines('{"text": {"body": "hi"}, "label": "x"}'),
        error=BadRowsError,
        says=("t.jsonl:1:", "'text' is an object"),
    ),
    Case(
        "NaN text",
        "t.jsonl",
        lines('{"text": NaN, "label": "x"}', '{"text": "b", "label": "x"}'),
        error=BadRowsError,
        says=("t.jsonl:1:", "'text' is a number (nan)"),
    ),
    Case(
        "object under a template field",
        "t.jsonl",
        lines('{"a": {"k": 1}, "label": "x"}'),
        kwargs={"text_template": "{a}", "label_field": "label"},
        error=BadRowsError,
        says=("t.jsonl:1:", "'a' is an object", "template"),
    ),
    Case(
        "label 1, 1.0 and '1' are one class; true is 'true'; NaN and null are missing",
        "t.jsonl",
        lines(
            '{"text": "a", "label": 1}',
            '{"text": "b", "label": "1"}',
            '{"text": "c", "label": 1.0}',
            '{"text": "d", "label": true}',
            '{"text": "e", "label": NaN}',
            '{"text": "f", "label": null}',
            '{"text": "g", "label": 2.5}',
        ),
        rows=[(1, "a", "1"), (2, "b", "1"), (3, "c", "1"), (4, "d", "true"), (7, "g", "2.5")],
        bad=[(5, "missing-label"), (6, "missing-label")],
    ),
    Case(
        "infinite label",
        "t.jsonl",
        lines('{"text": "a", "label": Infinity}'),
        error=BadRowsError,
        says=("t.jsonl:1:", "'label' is inf"),
    ),
    Case(
        "NFD and NFC Hangul labels are one class",
        "t.jsonl",
        (
            '{"text": "a", "label": "' + unicodedata.normalize("NFD", "복리후생비") + '"}\n'
            '{"text": "b", "label": "복리후생비"}\n'
        ).encode("utf-8"),
        rows=[(1, "a", "복리후생비"), (2, "b", "복리후생비")],
    ),
    Case(
        "broken lines are skipped and counted",
        "t.jsonl",
        lines('{"text": "a", "label": "x"}', '{"text": "b", "label": ', "[1, 2]", '"just a string"'),
        rows=[(1, "a", "x")],
        bad=[(2, "malformed-json"), (3, "not-an-object"), (4, "not-an-object")],
    ),
    Case(
        "every line broken is an error that says why",
        "t.jsonl",
        lines("{'text': 'a'}", "{'text': 'b'}", "{'text': 'c'}"),
        error=DataError,
        says=("no usable rows", "all 3 rows were skipped (3 malformed-json)", "first: line 1"),
    ),
    Case(
        "a repeated key is a bad row, not the last value silently",
        "t.jsonl",
        lines('{"text": "a", "label": "x", "label": "y"}', '{"text": "b", "label": "x"}'),
        rows=[(2, "b", "x")],
        bad=[(1, "duplicate-key")],
    ),
    Case(
        "a JSON array file named .jsonl",
        "t.jsonl",
        lines('[{"text": "a", "label": "x"}, {"text": "b", "label": "y"}]'),
        error=DataError,
        says=("t.jsonl:1:", "one JSON array of 2 objects", "jq -c '.[]'"),
    ),
    Case(
        "pretty-printed JSON named .jsonl",
        "t.jsonl",
        lines("[", '  {"text": "a", "label": "x"}', "]"),
        error=DataError,
        says=("t.jsonl:1:", "spread over several lines"),
    ),
    Case(
        "latin-1 JSON lines",
        "t.jsonl",
        '{"text": "café", "label": "x"}\n{"text": "thé", "label": "y"}\n'.encode("latin-1"),
        error=DataError,
        says=("t.jsonl:1:", "not UTF-8", "byte offset 13"),
    ),
    Case(
        "UTF-8 byte-order mark in JSON lines",
        "t.jsonl",
        b"\xef\xbb\xbf" + lines('{"text": "a", "label": "x"}'),
        rows=[(1, "a", "x")],
    ),
    Case("zero-byte JSON lines", "t.jsonl", b"", error=DataError, says=("empty (0 bytes)",)),
    Case(
        "JSON lines whose label key never occurs",
        "t.jsonl",
        lines('{"text": "a", "category": "x"}'),
        error=ConfigError,
        says=("'label' is not a column; available columns: text, category",),
    ),
]


@pytest.mark.parametrize("case", CSV_CASES + JSONL_CASES, ids=lambda c: c.name)
def test_hostile_text_files(case: Case, tmp_path: Path) -> None:
    path = tmp_path / case.file
    path.write_bytes(case.data)
    if case.error is not None:
        with pytest.raises(case.error) as info:
            read_rows(path, **case.kwargs)
        message, code = format_error(info.value)
        assert code == 2
        for phrase in case.says:
            assert phrase in message, f"{phrase!r} not in {message!r}"
        assert message.startswith(f"error: {path}") or str(path) in message
        return
    rs = read_rows(path, **case.kwargs)
    assert [(r.line, r.text, r.label) for r in rs.rows] == case.rows
    assert [(b.line, b.kind) for b in rs.bad_rows] == case.bad
    assert all(b.file == str(path) and b.reason for b in rs.bad_rows)


def test_skipped_rows_are_summarised_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(lines("text,label", ",a", "x,", "y,b", "  ,c"))
    rs = read_rows(path, **TEXT_LABEL)
    assert rs.skipped_summary() == (
        f"{path}: 3 rows skipped (2 empty-text, 1 missing-label); first: line 2: empty text in 'text'"
    )
    path.write_bytes(lines("text,label", "y,b"))
    assert read_rows(path, **TEXT_LABEL).skipped_summary() is None


def test_a_single_corrupt_byte_in_a_utf8_file_spoils_one_row(tmp_path: Path) -> None:
    # Valid UTF-8 Hangul elsewhere shows the file is UTF-8: the corrupt row is skipped, not the file.
    path = tmp_path / "t.csv"
    path.write_bytes(lines("text,label", "한글,a") + b"bad \xff,b\n" + lines("x,b"))
    rs = read_rows(path, **TEXT_LABEL)
    assert [(r.line, r.text) for r in rs.rows] == [(2, "한글"), (4, "x")]
    assert [(b.line, b.kind) for b in rs.bad_rows] == [(3, "undecodable")]


@pytest.mark.parametrize(
    ("labels", "says"),
    [
        (["1", "1.0", "2"], "'1' (line 2) and '1.0' (line 3)"),
        (["-3", "2", "-3.00"], "'-3' (line 2) and '-3.00' (line 4)"),
    ],
)
def test_one_class_id_written_two_ways_is_refused(tmp_path: Path, labels: list[str], says: str) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(lines("text,label", *[f"t{i},{lab}" for i, lab in enumerate(labels)]))
    rs = read_rows(path, **TEXT_LABEL)
    with pytest.raises(DataError, match="one class id written two ways") as info:
        check_label_aliases(rs)
    assert says in info.value.message() and info.value.message().startswith(f"{path}:")
    with pytest.raises(DataError, match="one class id written two ways"):
        build_label_map(rs.labels)


def test_section_style_labels_are_not_aliases(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(lines("text,label", "a,1.1", "b,1.10", "c,01", "d,1"))
    rs = read_rows(path, **TEXT_LABEL)
    check_label_aliases(rs)
    assert build_label_map(rs.labels).labels == ("01", "1", "1.1", "1.10")


def _pyarrow() -> tuple[Any, Any]:
    pa = pytest.importorskip("pyarrow", reason="pyarrow not installed; Parquet reading is optional")
    return pa, pytest.importorskip("pyarrow.parquet")


@pytest.mark.parametrize(
    ("name", "table", "rows", "bad", "error", "says"),
    [
        (
            "list text",
            {"text": [["a", "b"], ["c"]], "label": ["x", "y"]},
            None,
            None,
            ConfigError,
            ("data.text_field", "column 'text' holds list<element: string> values, not text"),
        ),
        (
            "integer text",
            {"text": [1, 2], "label": ["x", "y"]},
            None,
            None,
            ConfigError,
            ("column 'text' holds int64 values, not text",),
        ),
        (
            "struct label",
            {"text": ["a", "b"], "label": [{"k": 1}, {"k": 2}]},
            None,
            None,
            ConfigError,
            ("data.label_field", "column 'label' holds struct<k: int64> values, not class names"),
        ),
        (
            "integer labels are classes, '1' and 1 alike",
            {"text": ["a", "b", "c"], "label": [1, 2, None]},
            [(1, "a", "1"), (2, "b", "2")],
            [(3, "missing-label")],
            None,
            (),
        ),
        (
            "pandas' float64 class ids with a gap",
            {"text": ["a", "b", "c"], "label": [1.0, float("nan"), 2.0]},
            [(1, "a", "1"), (3, "c", "2")],
            [(2, "missing-label")],
            None,
            (),
        ),
        (
            "dictionary-encoded (categorical) strings",
            lambda pa: {"text": pa.array(["a", "b"]).dictionary_encode(), "label": ["x", "y"]},
            [(1, "a", "x"), (2, "b", "y")],
            [],
            None,
            (),
        ),
        (
            "zero rows",
            lambda pa: {"text": pa.array([], pa.string()), "label": pa.array([], pa.string())},
            None,
            None,
            DataError,
            ("no data rows", "only a header (text, label)"),
        ),
    ],
)
def test_hostile_parquet(
    tmp_path: Path,
    name: str,
    table: Any,
    rows: Any,
    bad: Any,
    error: type[LoralabError] | None,
    says: tuple[str, ...],
) -> None:
    pa, pq = _pyarrow()
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table(table(pa) if callable(table) else table), path)
    if error is not None:
        with pytest.raises(error) as info:
            read_rows(path, **TEXT_LABEL)
        for phrase in says:
            assert phrase in info.value.message(), info.value.message()
        return
    rs = read_rows(path, **TEXT_LABEL)
    assert [(r.line, r.text, r.label) for r in rs.rows] == rows
    assert [(b.line, b.kind) for b in rs.bad_rows] == bad


@pytest.mark.parametrize(
    ("name", "data", "says"),
    [
        (
            "CSV text named .parquet",
            lines("text,label", "x,a"),
            ("not a Parquet file", "b'text'", "looks like text"),
        ),
        ("binary junk named .parquet", b"\x00\x01\x02\x03junk", ("not a Parquet file",)),
        ("truncated Parquet", b"PAR1" + b"\x00" * 16 + b"PAR1", ("cannot be read as Parquet",)),
        ("zero bytes", b"", ("empty (0 bytes)",)),
    ],
)
def test_a_parquet_file_that_is_not_parquet(
    tmp_path: Path, name: str, data: bytes, says: tuple[str, ...]
) -> None:
    _pyarrow()
    path = tmp_path / "t.parquet"
    path.write_bytes(data)
    with pytest.raises(DataError) as info:
        read_rows(path, **TEXT_LABEL)
    assert info.value.message().startswith(f"{path}: ")
    for phrase in says:
        assert phrase in info.value.message(), info.value.message()


def test_parquet_with_a_repeated_column_name(tmp_path: Path) -> None:
    pa, pq = _pyarrow()
    path = tmp_path / "t.parquet"
    table = pa.Table.from_arrays(
        [pa.array(["first"]), pa.array(["second"]), pa.array(["a"])], ["text", "text", "label"]
    )
    pq.write_table(table, path)
    with pytest.raises(DataError, match=r"'text' \(columns 1, 2\)"):
        read_rows(path, **TEXT_LABEL)


def test_same_file_by_content(tmp_path: Path) -> None:
    train = tmp_path / "train.csv"
    train.write_bytes(lines("text,label", "x,a", "y,b"))
    copy = tmp_path / "copy.csv"
    shutil.copyfile(train, copy)
    link = tmp_path / "link.csv"
    os.symlink(train, link)
    other = tmp_path / "other.csv"
    other.write_bytes(lines("text,label", "x,a", "z,b"))  # same size, different bytes
    assert same_file(train, train) and same_file(train, copy) and same_file(link, train)
    assert not same_file(train, other)
    assert train.stat().st_size == other.stat().st_size


def test_leakage_and_unseen_labels_notes(tmp_path: Path) -> None:
    train = tmp_path / "train.csv"
    train.write_bytes(lines("text,label", "x,a", "y,b"))
    test = tmp_path / "test.csv"
    test.write_bytes(lines("text,label", "x,a", "new,zz", " y ,b", "q,zz", "r,new"))
    shutil.copyfile(train, tmp_path / "copy.csv")
    tr, te = read_rows(train, **TEXT_LABEL), read_rows(test, **TEXT_LABEL)
    assert shared_texts(tr.rows, te.rows) == [2, 4]
    assert leakage_note(train, tr.rows, test, te.rows) == (
        f"{test}: 2 of 5 rows have a text that also occurs in training (lines 2, 4); "
        "their scores are inflated"
    )
    assert "holds the same bytes as the training file" in str(
        leakage_note(train, tr.rows, tmp_path / "copy.csv", [])
    )
    assert leakage_note(train, tr.rows, test, [Row(9, {}, "fresh", "a")]) is None
    enc = encode_rows(te.rows, build_label_map(tr.labels))
    assert unseen_note(test, enc) == (
        f"{test}: 3 rows with labels that never occur in training, left out of evaluation: "
        "'zz' (2 rows, first at line 3), 'new' (1 row, first at line 6)"
    )
    assert unseen_note(test, encode_rows(tr.rows, build_label_map(tr.labels))) is None


def test_cli_reports_a_hostile_file_in_one_line(tmp_path: Path) -> None:
    """End to end: `loralab plan` on a config whose training file is latin-1 exits 2 with no traceback."""
    data = tmp_path / "train.csv"
    data.write_bytes("text,label\ncafé,a\nrésumé,b\n".encode("latin-1"))
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(
        "model:\n  name_or_path: gpt2\n  task: seq-cls\n"
        "lora:\n  config:\n    r: 8\n    target_modules: [c_attn]\n"
        "data:\n  train_file: train.csv\n  text_field: text\n  label_field: label\n",
        encoding="utf-8",
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "loralab", "plan", str(cfg)],
        capture_output=True, text=True, env=env, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and "not UTF-8" in r.stderr and "byte offset 14" in r.stderr
