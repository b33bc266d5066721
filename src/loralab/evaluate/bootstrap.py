"""Bootstrap resampling of classification metrics: the one implementation behind a run's 95%
intervals (`evaluate`) and the paired differences between runs (`report`, `ablate`).

Per-class F1 of many resamples at once, vectorised with bincount (rows = resamples, columns = the
evaluated items); every metric is then a reduction of that matrix, so the CI of a run and the paired
difference of two runs compute F1 the same way scikit-learn does (tests check it on each resample).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

DEFAULT_RESAMPLES = 1000
METRICS = ("accuracy", "weighted_f1", "macro_f1", "tail_f1")


def per_class_f1(gold: np.ndarray, pred: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-class F1 and support for each row of label ids (rows x items)."""
    rows = gold.shape[0]
    offs = (np.arange(rows) * n)[:, None]
    tp = np.bincount((offs + gold)[gold == pred], minlength=rows * n).reshape(rows, n)
    support = np.bincount((offs + gold).ravel(), minlength=rows * n).reshape(rows, n)
    predicted = np.bincount((offs + pred).ravel(), minlength=rows * n).reshape(rows, n)
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros(tp.shape, dtype=float), where=denom > 0)
    return f1, support


def metric_from_f1(
    f1: np.ndarray, support: np.ndarray, metric: str, class_ids: Sequence[int] | None = None
) -> np.ndarray:
    """One F1-based metric per row. Macro F1 averages over all n classes (absent ones count 0, as
    scikit-learn's does with `labels=` all classes); tail F1 (a bucket's mean) over `class_ids`."""
    if metric == "weighted_f1":
        return np.asarray((f1 * support).sum(axis=1) / np.maximum(support.sum(axis=1), 1), dtype=float)
    if metric == "macro_f1":
        return np.asarray(f1.mean(axis=1), dtype=float)
    if metric == "tail_f1" and class_ids:
        return np.asarray(f1[:, list(class_ids)].mean(axis=1), dtype=float)
    raise ValueError(f"unknown metric {metric!r}")


def metric_values(
    gold: np.ndarray, pred: np.ndarray, n: int, metric: str, class_ids: Sequence[int] | None = None
) -> np.ndarray:
    """One metric per row of label ids (rows x items)."""
    if metric == "accuracy":
        return np.asarray((gold == pred).mean(axis=1), dtype=float)
    f1, support = per_class_f1(gold, pred, n)
    return metric_from_f1(f1, support, metric, class_ids)


def bootstrap_cis(
    gold: Sequence[int],
    pred: Sequence[int],
    n_classes: int,
    bucket_ids: list[list[int]],
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    batch: int = 200,
) -> dict[str, Any]:
    """95% percentile-bootstrap intervals (Efron & Tibshirani 1993) for accuracy, weighted F1, macro F1
    and each bucket's mean F1: resample the evaluated rows with replacement, recompute, take the 2.5th
    and 97.5th percentiles. Macro F1 here averages over classes present in the original evaluation set,
    as scikit-learn's does with `labels=` all classes (absent ones count 0)."""
    g = np.asarray(gold, dtype=np.int64)
    p = np.asarray(pred, dtype=np.int64)
    rng = np.random.default_rng(seed)
    acc, wf1, mf1 = [], [], []
    buckets: list[list[float]] = [[] for _ in bucket_ids]
    for start in range(0, n_resamples, batch):
        k = min(batch, n_resamples - start)
        idx = rng.integers(0, len(g), size=(k, len(g)))
        gs, ps = g[idx], p[idx]
        f1, support = per_class_f1(gs, ps, n_classes)
        acc.extend(metric_values(gs, ps, n_classes, "accuracy").tolist())
        wf1.extend(metric_from_f1(f1, support, "weighted_f1").tolist())
        mf1.extend(metric_from_f1(f1, support, "macro_f1").tolist())
        for b, ids in enumerate(bucket_ids):
            if ids:
                buckets[b].extend(metric_from_f1(f1, support, "tail_f1", ids).tolist())

    def interval(v: list[float]) -> dict[str, Any]:
        lo, hi = np.percentile(v, [2.5, 97.5]) if v else (float("nan"), float("nan"))
        return {"low": float(lo), "high": float(hi), "n_resamples": n_resamples, "seed": seed}

    out: dict[str, Any] = {"accuracy": interval(acc), "weighted_f1": interval(wf1), "macro_f1": interval(mf1)}
    out["buckets"] = [interval(v) for v in buckets]
    return out
