"""`loralab evaluate --predictions FILE`: score predictions made elsewhere (CSV, TSV, JSONL or Parquet).

The same functions score a training run (evaluate_classification / generation_metrics), so the numbers
of `train`, `evaluate RUN_DIR` and `evaluate --predictions` agree by construction. The file is read by
the training data reader, so it is refused or reported for the same reasons (not UTF-8, UTF-16, broken
CSV quoting, a repeated column, a JSON line that is not an object), and every row must be usable: a
skipped prediction would change the score, so any bad row is an error naming its line.

Labels follow the training data's rules (`loralab.data.values`): the integer 1, the float 1.0 and the
string "1" are one class; "1" beside "1.0" written as text is an error, not two classes. `prob`, when
the column is there, is a number in [0, 1] on every row.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from loralab.data import BadRow, BadRowsError, DataError, RowValueError, read_rows
from loralab.data.readers import FORMATS
from loralab.data.values import integer_float_aliases, label_value
from loralab.errors import ConfigError, Problem
from loralab.evaluate.classification import evaluate_classification
from loralab.evaluate.generation import generation_metrics
from loralab.evaluate.guards import check_metrics

T = TypeVar("T")
TASK_COLUMNS = {"classification": ("pred", "gold"), "generation": ("prediction", "reference")}
PROB = "prob"
_ROW_FIX = "correct these rows; every row of a predictions file is scored, none is skipped"


def _read_table(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], list[str]]:
    """(line, fields) of every row and the columns seen; any bad row is an error."""
    if not path.is_file():
        raise DataError(f"{path}: predictions file not found")
    # Any other name is read as CSV, as before formats were detected.
    rowset = read_rows(path, fmt=FORMATS.get(path.suffix.lower(), "csv"))
    if rowset.bad_rows:
        raise BadRowsError(rowset.bad_rows, fix=_ROW_FIX)
    return [(r.line, r.fields) for r in rowset.rows], rowset.columns


def _check_columns(path: Path, columns: list[str], want: tuple[str, ...]) -> None:
    missing = [c for c in want if c not in columns]
    if missing:
        raise ConfigError(
            [
                Problem(
                    str(path),
                    "",
                    f"missing column(s) {', '.join(missing)}; found: {', '.join(columns) or 'nothing'}",
                    f"name the columns {want[0]} and {want[1]}",
                )
            ]
        )


def _label(fields: dict[str, Any], name: str) -> str:
    if fields.get(name) is None:
        raise RowValueError(f"no '{name}' value", "missing-field")
    value = label_value(fields[name], name)
    if value is None:
        raise RowValueError(f"empty '{name}' (write the label; for no prediction, a placeholder)", "empty")
    return value


def _probability(fields: dict[str, Any]) -> float:
    raw = fields.get(PROB)
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise RowValueError(f"no '{PROB}' value (give every row one, or drop the column)", "missing-field")
    if isinstance(raw, bool):
        raise RowValueError(f"'{PROB}' is true/false, not a number", "bad-number")
    if not isinstance(raw, int | float | str):
        raise RowValueError(f"'{PROB}' is a {type(raw).__name__}, not a number", "bad-number")
    try:
        p = float(raw)
    except ValueError:
        raise RowValueError(f"'{PROB}' {raw!r} is not a number", "bad-number") from None
    if not math.isfinite(p) or not 0.0 <= p <= 1.0:
        raise RowValueError(
            f"'{PROB}' {raw!r} is not a probability in [0, 1] (the predicted class's probability, not a "
            "percentage or a logit)",
            "bad-number",
        )
    return p


def _text(fields: dict[str, Any], name: str) -> str:
    """A generation text: a string as is; a number or true/false as written; empty is allowed."""
    value = fields.get(name)
    if value is None:
        raise RowValueError(f"no '{name}' value", "missing-field")
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    raise RowValueError(f"'{name}' is a {type(value).__name__}, not text", "not-a-scalar")


def _per_row(
    path: Path, rows: list[tuple[int, dict[str, Any]]], read: Callable[[dict[str, Any]], T]
) -> list[T]:
    """`read(fields)` for every row; every row that fails is listed in one error."""
    out: list[T] = []
    bad: list[BadRow] = []
    for line, fields in rows:
        try:
            out.append(read(fields))
        except RowValueError as e:
            bad.append(BadRow(str(path), line, str(e), e.kind))
    if bad:
        raise BadRowsError(bad, fix=_ROW_FIX)
    return out


def _check_aliases(
    path: Path, rows: list[tuple[int, dict[str, Any]]], gold: list[str], pred: list[str]
) -> None:
    first: dict[str, tuple[int, str]] = {}
    for (line, _), g, p in zip(rows, gold, pred, strict=True):
        first.setdefault(g, (line, "gold"))
        first.setdefault(p, (line, "pred"))
    pairs = integer_float_aliases(first)
    if pairs:
        listed = "; ".join(
            f"'{a}' ({first[a][1]}, line {first[a][0]}) and '{b}' ({first[b][1]}, line {first[b][0]})"
            for a, b in pairs
        )
        raise DataError(
            f"{path}:{first[pairs[0][1]][0]}: labels {listed} are one class id written two ways and would "
            "be scored as different classes (fix: write gold and pred the same way, e.g. as integers)"
        )


def score_predictions(path: Path, *, task: str, rouge_tokenizer: str = "auto") -> dict[str, Any]:
    if task not in TASK_COLUMNS:
        raise ConfigError(
            [Problem("--task", "", f"unknown task {task!r}", "use classification or generation")]
        )
    rows, columns = _read_table(path)
    want = TASK_COLUMNS[task]
    _check_columns(path, columns, want)
    if task == "classification":
        has_prob = PROB in columns

        def read(fields: dict[str, Any]) -> tuple[str, str, float | None]:
            pred, gold = _label(fields, "pred"), _label(fields, "gold")
            return pred, gold, _probability(fields) if has_prob else None

        parsed = _per_row(path, rows, read)
        pred = [p for p, _, _ in parsed]
        gold = [g for _, g, _ in parsed]
        _check_aliases(path, rows, gold, pred)
        labels = sorted(set(gold) | set(pred))
        ids = {lab: i for i, lab in enumerate(labels)}
        id2label = dict(enumerate(labels))
        # Without the training set, buckets rank classes by their frequency among the gold labels.
        counts: dict[int, int] = {}
        for g in gold:
            counts[ids[g]] = counts.get(ids[g], 0) + 1
        conf = [c for _, _, c in parsed if c is not None] if has_prob else None
        m = evaluate_classification([ids[g] for g in gold], [ids[p] for p in pred], conf, id2label, counts)
        m["bucket_basis"] = "gold-label frequency in this file"
        return m
    texts = _per_row(path, rows, lambda fields: (_text(fields, want[0]), _text(fields, want[1])))
    pred, ref = [p for p, _ in texts], [r for _, r in texts]
    m = generation_metrics(pred, ref, tokenizer=rouge_tokenizer)
    m["warnings"] = check_metrics(m, task="generation", predictions=pred, references=ref)
    return m
