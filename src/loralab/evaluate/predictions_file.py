"""`loralab evaluate --predictions FILE`: score predictions made elsewhere (CSV or JSONL).

The same functions score a training run (evaluate_classification / generation_metrics), so the numbers
of `train`, `evaluate RUN_DIR` and `evaluate --predictions` agree by construction.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from loralab.errors import ConfigError, LoralabError, Problem
from loralab.evaluate.classification import evaluate_classification
from loralab.evaluate.generation import generation_metrics
from loralab.evaluate.guards import check_metrics


def _read_table(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise LoralabError(f"{path}: predictions file not found")
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        rows = []
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise LoralabError(f"{path}:{i}: not JSON ({e.msg})") from e
        return rows
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _columns(rows: list[dict[str, Any]], path: Path, want: tuple[str, str]) -> tuple[list[str], list[str]]:
    have = set(rows[0]) if rows else set()
    missing = [c for c in want if c not in have]
    if missing:
        raise ConfigError(
            [
                Problem(
                    str(path),
                    "",
                    f"missing column(s) {', '.join(missing)}; found: {', '.join(sorted(have)) or 'nothing'}",
                    f"name the columns {want[0]} and {want[1]}",
                )
            ]
        )
    return [str(r[want[0]] or "") for r in rows], [str(r[want[1]] or "") for r in rows]


def score_predictions(path: Path, *, task: str, rouge_tokenizer: str = "auto") -> dict[str, Any]:
    rows = _read_table(path)
    if task == "classification":
        pred, gold = _columns(rows, path, ("pred", "gold"))
        labels = sorted(set(gold) | set(pred))
        ids = {lab: i for i, lab in enumerate(labels)}
        id2label = dict(enumerate(labels))
        # Without the training set, buckets rank classes by their frequency among the gold labels.
        counts: dict[int, int] = {}
        for g in gold:
            counts[ids[g]] = counts.get(ids[g], 0) + 1
        conf = [float(r["prob"]) for r in rows] if rows and "prob" in rows[0] else None
        m = evaluate_classification([ids[g] for g in gold], [ids[p] for p in pred], conf, id2label, counts)
        m["bucket_basis"] = "gold-label frequency in this file"
        return m
    if task == "generation":
        pred, ref = _columns(rows, path, ("prediction", "reference"))
        m = generation_metrics(pred, ref, tokenizer=rouge_tokenizer)
        m["warnings"] = check_metrics(m, task="generation", predictions=pred, references=ref)
        return m
    raise ConfigError([Problem("--task", "", f"unknown task {task!r}", "use classification or generation")])
