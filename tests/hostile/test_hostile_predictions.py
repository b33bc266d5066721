"""Hostile predictions files (issue 10, B): `evaluate --predictions` scores them right or refuses them
with the file and the line, never with a ValueError/KeyError/TypeError or an `ece` of nan.

Each case is a file's exact bytes and either the error class and the phrases of its one-line message,
or metrics computed by hand from the rows shown.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from loralab.cli_errors import format_error
from loralab.data import BadRowsError, DataError
from loralab.errors import ConfigError, LoralabError
from loralab.evaluate.predictions_file import score_predictions


@dataclass(frozen=True)
class Case:
    name: str
    file: str
    data: bytes
    error: type[LoralabError]
    says: tuple[str, ...]
    task: str = "classification"


def lines(*items: str) -> bytes:
    return "".join(i + "\n" for i in items).encode("utf-8")


CASES = [
    Case(
        "prob that is a word",
        "p.csv",
        lines("gold,pred,prob", "a,a,0.9", "b,a,high"),
        BadRowsError,
        ("p.csv:3:", "'prob' 'high' is not a number"),
    ),
    Case(
        "prob above 1 (a percentage or a logit)",
        "p.csv",
        lines("gold,pred,prob", "a,a,7.5", "b,b,0.2"),
        BadRowsError,
        ("p.csv:2:", "'prob' '7.5' is not a probability in [0, 1]"),
    ),
    Case(
        "prob nan in CSV",
        "p.csv",
        lines("gold,pred,prob", "a,a,nan", "b,b,0.2"),
        BadRowsError,
        ("p.csv:2:", "'prob' 'nan' is not a probability"),
    ),
    Case(
        "prob NaN in JSON lines",
        "p.jsonl",
        lines('{"gold": "a", "pred": "a", "prob": NaN}'),
        BadRowsError,
        ("p.jsonl:1:", "'prob' nan is not a probability"),
    ),
    Case(
        "negative prob",
        "p.jsonl",
        lines('{"gold": "a", "pred": "a", "prob": -0.1}'),
        BadRowsError,
        ("p.jsonl:1:", "'prob' -0.1 is not a probability"),
    ),
    Case(
        "prob true/false",
        "p.jsonl",
        lines('{"gold": "a", "pred": "a", "prob": true}'),
        BadRowsError,
        ("p.jsonl:1:", "'prob' is true/false, not a number"),
    ),
    Case(
        "prob missing on one row",
        "p.csv",
        lines("gold,pred,prob", "a,a,0.9", "b,b,"),
        BadRowsError,
        ("p.csv:3:", "no 'prob' value", "drop the column"),
    ),
    Case(
        "every bad row is listed at once",
        "p.csv",
        lines("gold,pred,prob", "a,a,x", "b,b,2", "c,c,0.5", "d,,0.5"),
        BadRowsError,
        ("3 bad rows", "p.csv:2:", "p.csv:3:", "p.csv:5: empty 'pred'", "none is skipped"),
    ),
    Case(
        "JSON line without pred",
        "p.jsonl",
        lines('{"gold": "a", "pred": "a"}', '{"gold": "b"}'),
        BadRowsError,
        ("p.jsonl:2:", "no 'pred' value"),
    ),
    Case(
        "JSON line that is not an object",
        "p.jsonl",
        lines('{"gold": "a", "pred": "a"}', '["b", "b"]'),
        BadRowsError,
        ("p.jsonl:2:", "a JSON array, not an object", "none is skipped"),
    ),
    Case(
        "malformed JSON line",
        "p.jsonl",
        lines('{"gold": "a", "pred": "a"}', '{"gold": "b", "pred": '),
        BadRowsError,
        ("p.jsonl:2:", "malformed JSON"),
    ),
    Case(
        "nested label",
        "p.jsonl",
        lines('{"gold": {"id": 1}, "pred": "a"}'),
        BadRowsError,
        ("p.jsonl:1:", "'gold' is an object"),
    ),
    Case(
        "gold 1 and pred 1.0 written as text",
        "p.csv",
        lines("gold,pred", "1,1.0", "2,2"),
        DataError,
        ("p.csv:2:", "'1' (gold, line 2) and '1.0' (pred, line 2)", "one class id written two ways"),
    ),
    Case(
        "latin-1 file",
        "p.csv",
        "gold,pred\ncafé,café\nthé,thé\n".encode("latin-1"),
        DataError,
        ("p.csv:2:", "not UTF-8", "byte offset 13", "iconv -f CP1252"),
    ),
    Case(
        "UTF-16 file",
        "p.csv",
        "gold,pred\na,a\n".encode("utf-16"),
        DataError,
        ("is UTF-16",),
    ),
    Case("empty file", "p.csv", b"", DataError, ("p.csv: the file is empty (0 bytes)",)),
    Case(
        "header only", "p.csv", lines("gold,pred"), DataError, ("no data rows", "only a header (gold, pred)")
    ),
    Case(
        "short CSV row",
        "p.csv",
        lines("gold,pred", "a,a", "b"),
        BadRowsError,
        ("p.csv:3: expected 2 columns, got 1",),
    ),
    Case(
        "unterminated quote",
        "p.csv",
        lines("gold,pred", 'a,"a', "b,b", "c,c"),
        BadRowsError,
        ("p.csv:2:", "never closed"),
    ),
    Case(
        "repeated column",
        "p.csv",
        lines("gold,pred,pred", "a,a,b"),
        DataError,
        ("p.csv:1:", "'pred' (columns 2, 3)"),
    ),
    Case(
        "columns missing",
        "p.csv",
        lines("id,label,guess", "1,a,b"),
        ConfigError,
        ("missing column(s) pred, gold; found: id, label, guess",),
    ),
    Case(
        "generation row without reference",
        "p.jsonl",
        lines('{"prediction": "x", "reference": "x"}', '{"prediction": "y"}'),
        BadRowsError,
        ("p.jsonl:2:", "no 'reference' value"),
        task="generation",
    ),
    Case(
        "generation prediction that is a list",
        "p.jsonl",
        lines('{"prediction": ["x"], "reference": "x"}'),
        BadRowsError,
        ("p.jsonl:1:", "'prediction' is a list, not text"),
        task="generation",
    ),
    Case(
        "unknown task",
        "p.csv",
        lines("gold,pred", "a,a"),
        ConfigError,
        ("unknown task 'regression'",),
        "regression",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_hostile_predictions_files(case: Case, tmp_path: Path) -> None:
    path = tmp_path / case.file
    path.write_bytes(case.data)
    with pytest.raises(case.error) as info:
        score_predictions(path, task=case.task)
    message, code = format_error(info.value)
    assert code == 2
    for phrase in case.says:
        assert phrase in message, f"{phrase!r} not in {message!r}"


def _ece_by_hand(correct: list[bool], conf: list[float]) -> float:
    """15 equal-width bins over (0, 1]; here every confidence falls in a bin of its own."""
    bins = [min(int(c * 15), 14) for c in conf]
    assert len(set(bins)) == len(bins)
    return sum(abs(float(ok) - c) for ok, c in zip(correct, conf, strict=True)) / len(conf)


@pytest.mark.parametrize(
    ("name", "file", "data", "accuracy"),
    [
        (
            "integer gold and float pred are one class in JSON lines",
            "p.jsonl",
            lines(
                '{"gold": 1, "pred": 1.0, "prob": 0.9}',
                '{"gold": 2, "pred": "2", "prob": 0.6}',
                '{"gold": 2, "pred": 1, "prob": 0.35}',
            ),
            2 / 3,
        ),
        (
            "the same rows as CSV",
            "p.csv",
            lines("gold,pred,prob", "1,1,0.9", "2,2,0.6", "2,1,0.35"),
            2 / 3,
        ),
        (
            "a UTF-8 byte-order mark and a .txt name (read as CSV)",
            "p.txt",
            b"\xef\xbb\xbf" + lines("gold,pred,prob", "1,1,0.9", "2,2,0.6", "2,1,0.35"),
            2 / 3,
        ),
    ],
)
def test_predictions_that_read_right(
    tmp_path: Path, name: str, file: str, data: bytes, accuracy: float
) -> None:
    path = tmp_path / file
    path.write_bytes(data)
    m = score_predictions(path, task="classification")
    assert m["accuracy"] == pytest.approx(accuracy)
    assert m["ece"] == pytest.approx(_ece_by_hand([True, True, False], [0.9, 0.6, 0.35]))
    assert m["ece"] == pytest.approx((0.1 + 0.4 + 0.35) / 3) and not math.isnan(m["ece"])


def test_generation_numbers_are_texts_and_empty_predictions_count(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_bytes(
        lines('{"prediction": 42, "reference": "42"}', '{"prediction": "", "reference": "nothing said"}')
    )
    m = score_predictions(path, task="generation", rouge_tokenizer="whitespace")
    # Row 1 matches exactly, row 2 shares no token: ROUGE-1 F1 averages 1 and 0.
    assert m["rouge1"] == pytest.approx(0.5)


def test_cli_hostile_predictions_exit_2_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_bytes(lines('{"gold": "a", "pred": "a", "prob": 0.9}', '{"gold": "b", "prob": "high"}'))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "loralab", "evaluate", "--predictions", str(path), "--json"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and f"{path}:2: no 'pred' value" in r.stderr
    assert f"{path}:2: 'prob'" not in r.stderr  # one reason per row: the first thing wrong with it
    assert not r.stdout.strip() or "ece" not in json.loads(r.stdout)


def test_only_loralab_errors_escape(tmp_path: Path) -> None:
    """Whatever the bytes, reading a predictions file raises a LoralabError or nothing."""
    junk = [
        b"\x00\xff" * 8,
        b'{"gold": [1], "pred": {"a": null}, "prob": []}\n',
        b"gold,pred,prob\n\xff,a,0.5\n",
        b'gold,pred,prob\n"a""b",a,1e400\n',
        b"gold,pred\n" + b"a,a\n" * 3 + b"\r",
    ]
    for i, data in enumerate(junk):
        for suffix in (".csv", ".jsonl"):
            path = tmp_path / f"j{i}{suffix}"
            path.write_bytes(data)
            try:
                m: Any = score_predictions(path, task="classification")
            except LoralabError:
                continue
            assert not math.isnan(m.get("ece", 0.0))
