"""Template rendering: numeric format specs on CSV strings, Hangul, missing-field errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from loralab.data import RowValueError, compile_template, read_rows, render
from loralab.errors import ConfigError

KOREAN = "거래일자: {date} | 금액: {amount:,} | 적요: {memo} | 거래처: {vendor}"
ROW = {"date": "2025-10-14", "amount": "1500000", "memo": "사무용품 구입", "vendor": "(주)한빛문구"}


def test_korean_template_formats_numeric_strings() -> None:
    assert (
        render(KOREAN, ROW)
        == "거래일자: 2025-10-14 | 금액: 1,500,000 | 적요: 사무용품 구입 | 거래처: (주)한빛문구"
    )


def test_numeric_specs_on_strings_and_numbers() -> None:
    assert render("{x:,.2f}", {"x": "1234.5"}) == "1,234.50"
    assert render("{x:,}", {"x": 1500000}) == "1,500,000"
    assert render("{x:,}", {"x": "1,500,000"}) == "1,500,000"
    assert render("{x:>5}", {"x": "7"}) == "    7"  # not a numeric spec: stays a string
    with pytest.raises(RowValueError, match="'abc' is not a number"):
        render("{x:,}", {"x": "abc"})


def test_hangul_field_names() -> None:
    assert render("{적요} / {금액:,}원", {"적요": "급여", "금액": "2500000"}) == "급여 / 2,500,000원"


def test_missing_field_names_it_lists_columns_and_suggests() -> None:
    with pytest.raises(ConfigError) as info:
        render("{memo} {vendr}", {"memo": "m", "vendor": "v", "date": "d"})
    message = info.value.message()
    assert "field 'vendr' is not a column; available columns: memo, vendor, date" in message
    assert "did you mean 'vendor'?" in message


def test_template_validated_up_front() -> None:
    with pytest.raises(ConfigError) as info:
        compile_template("{0} {a.b} {c:{w}}")
    message = info.value.message()
    assert "3 problems" in message and "'{0}'" in message and "'{a.b}'" in message and "nested" in message
    with pytest.raises(ConfigError, match="cannot be parsed"):
        compile_template("{oops")
    assert compile_template(KOREAN).fields == ["date", "amount", "memo", "vendor"]


def test_read_rows_with_template_reports_bad_amount(tmp_path: Path) -> None:
    path = tmp_path / "tx.csv"
    path.write_text(
        "거래일자,금액,적요,거래처,계정\n2025-01-02,1500000,택시비,카카오T,여비교통비\n2025-01-03,없음,커피,스타벅스,복리후생비\n",
        encoding="utf-8",
    )
    template = "거래일자: {거래일자} | 금액: {금액:,} | 적요: {적요} | 거래처: {거래처}"
    rs = read_rows(path, text_template=template, label_field="계정")
    assert rs.texts == ["거래일자: 2025-01-02 | 금액: 1,500,000 | 적요: 택시비 | 거래처: 카카오T"]
    assert rs.labels == ["여비교통비"]
    assert [(b.line, b.kind) for b in rs.bad_rows] == [(3, "bad-number")]
    with pytest.raises(ConfigError, match="did you mean '거래처'"):
        read_rows(path, text_template="{거래쳐}", label_field="계정")
