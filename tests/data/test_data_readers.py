"""read_rows on CSV, TSV, JSONL and Parquet, with bad rows reported by file and line."""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import Any

import pytest

from loralab.data import BadRowsError, DataError, read_rows
from loralab.errors import ConfigError


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def kinds(rowset: Any) -> list[tuple[int, str]]:
    return [(b.line, b.kind) for b in rowset.bad_rows]


def test_csv_bad_rows_reported_with_lines(tmp_path: Path) -> None:
    data = (
        b"text,label\n"
        b"good one,a\n"
        b"bad \xff byte,b\n"
        b'"two\nlines",b\n'
        b",a\n"
        b"no label,\n"
        b"\xed\x95\x9c\xea\xb8\x80,c\n"
    )
    rs = read_rows(write(tmp_path / "t.csv", data), text_field="text", label_field="label")
    assert [(r.line, r.text, r.label) for r in rs.rows] == [
        (2, "good one", "a"),
        (4, "two\nlines", "b"),
        (8, "한글", "c"),
    ]
    assert kinds(rs) == [(3, "undecodable"), (6, "empty-text"), (7, "missing-label")]
    assert all(b.file == str(tmp_path / "t.csv") for b in rs.bad_rows)
    assert "byte 5" in rs.bad_rows[0].reason


def test_csv_short_row_and_bom(tmp_path: Path) -> None:
    rs = read_rows(
        write(tmp_path / "t.csv", b"\xef\xbb\xbftext,label\nx,a\ny\n"), text_field="text", label_field="label"
    )
    assert rs.columns == ["text", "label"]
    assert [r.text for r in rs.rows] == ["x"]
    assert kinds(rs) == [(3, "column-count")]


def test_tsv(tmp_path: Path) -> None:
    data = b'text\tlabel\n"quoted start\ta\n\tb\nplain\t\n'
    rs = read_rows(write(tmp_path / "t.tsv", data), text_field="text", label_field="label")
    assert [(r.line, r.text) for r in rs.rows] == [(2, '"quoted start')]
    assert kinds(rs) == [(3, "empty-text"), (4, "missing-label")]


def test_jsonl_bad_lines(tmp_path: Path) -> None:
    data = (
        b'{"text": "ok", "label": 3}\n'
        b'{"text": "broken", "label": \n'
        b"\n"
        b'{"text": "caf\xe9", "label": "x"}\n'
        b'["not", "object"]\n'
        b'{"text": "no label"}\n'
        b'{"label": "x"}\n'
        b'{"text": "  ", "label": "x"}\n'
    )
    rs = read_rows(write(tmp_path / "t.jsonl", data), text_field="text", label_field="label")
    assert [(r.line, r.text, r.label) for r in rs.rows] == [(1, "ok", "3")]
    assert kinds(rs) == [
        (2, "malformed-json"),
        (4, "undecodable"),
        (5, "not-an-object"),
        (6, "missing-label"),
        (7, "missing-field"),
        (8, "empty-text"),
    ]


def test_on_bad_rows_error_lists_first_ten_and_count(tmp_path: Path) -> None:
    lines = [b"text,label"] + [b",a"] * 12 + [b"fine,a"]
    path = write(tmp_path / "t.csv", b"\n".join(lines) + b"\n")
    with pytest.raises(BadRowsError) as info:
        read_rows(path, text_field="text", label_field="label", on_bad_rows="error")
    message = info.value.message()
    assert message.startswith("12 bad rows:")
    assert f"{path}:2: empty text" in message and f"{path}:11:" in message
    assert f"{path}:12:" not in message and "... and 2 more" in message


def test_missing_column_names_columns_and_suggests(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", b"text,category\nx,a\n")
    with pytest.raises(ConfigError) as info:
        read_rows(path, text_field="text", label_field="categroy")
    assert "field 'categroy' is not a column; available columns: text, category" in info.value.message()
    assert "did you mean 'category'?" in info.value.message()


def test_unknown_format_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"unknown data format '\.json'"):
        read_rows(write(tmp_path / "t.json", b"[]"))
    with pytest.raises(DataError, match="not found"):
        read_rows(tmp_path / "absent.csv")


def test_parquet_without_pyarrow_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def fake_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("pyarrow"):
            raise ImportError("no pyarrow")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(DataError, match="pip install pyarrow"):
        read_rows(write(tmp_path / "t.parquet", b"PAR1"), text_field="text")


def test_parquet_round_trip(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow", reason="pyarrow not installed; Parquet reading is optional")
    import pyarrow.parquet as pq

    table = pa.table({"text": ["a", "", "c"], "label": ["x", "y", None]})
    pq.write_table(table, tmp_path / "t.parquet")
    rs = read_rows(tmp_path / "t.parquet", text_field="text", label_field="label")
    assert [(r.line, r.text) for r in rs.rows] == [(1, "a")]
    assert kinds(rs) == [(2, "empty-text"), (3, "missing-label")]
