"""What a training log and record say about the run, read without the model: the epoch of the best
evaluation, and which device a peak-memory number was measured on.

Training writes these (`loralab.train.record`) and reports read them back from older run directories
(`loralab.report`); both use these functions, so the two agree.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def _eval_rows(log: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The evaluation rows of a log, train_log.jsonl's (`kind: "eval"`) or the Trainer's
    `state.log_history` (any `eval_*` key). A resumed run appends to train_log.jsonl from its
    checkpoint's step again: when the step goes back, the evaluations the interrupted attempt logged
    from that step on are superseded (the resumed run repeats them)."""
    rows: list[Mapping[str, Any]] = []
    latest = -math.inf
    for row in log:
        if not isinstance(row, Mapping):
            continue
        step = _number(row.get("step"))
        if step is not None:
            if step < latest:
                rows = [r for r in rows if (_number(r.get("step")) or 0.0) < step]
            latest = step
        kind = row.get("kind")
        if kind == "eval" or (kind is None and any(str(k).startswith("eval_") for k in row)):
            rows.append(row)
    return rows


def best_epoch(
    log: Iterable[Mapping[str, Any]], metric: str | None = None, greater_is_better: bool | None = None
) -> float | None:
    """The epoch of the best evaluation in `log` (train_log.jsonl rows or `state.log_history`).

    Best by `metric` (TrainingArguments' `metric_for_best_model`, with or without the `eval_`
    prefix) in the direction `greater_is_better`, which defaults as in the Trainer: higher is better
    unless the metric's name ends in "loss". Without a metric: the lowest validation loss. A tie keeps
    the earlier epoch (the Trainer only moves its best on a strict improvement). None when no
    evaluation logged that metric with an epoch."""
    name = metric or "loss"
    key = name if name.startswith("eval_") else f"eval_{name}"
    greater = greater_is_better if greater_is_better is not None else not key.endswith("loss")
    best: tuple[float, float] | None = None  # (value, epoch)
    for row in _eval_rows(log):
        value, epoch = _number(row.get(key)), _number(row.get("epoch"))
        if value is None or epoch is None:
            continue
        if best is None or (value > best[0] if greater else value < best[0]):
            best = (value, epoch)
    return None if best is None else best[1]


def memory_device(kind: str | None) -> str | None:
    """Device of a `peak_memory_bytes` kind ("cuda_max_allocated", "cpu_peak_rss"): "cuda" or "cpu"."""
    if not kind:
        return None
    if kind.startswith("cuda"):
        return "cuda"
    if kind.startswith("cpu"):
        return "cpu"
    return None
