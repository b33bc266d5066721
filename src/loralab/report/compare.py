"""Confidence intervals for one run and paired-bootstrap differences between runs on one test set.

Paired bootstrap (Koehn 2004; Berg-Kirkpatrick et al. 2012): align both runs' predictions by `id`,
resample the ids with replacement (seeded), recompute each run's metric on the same resample, and
take the 2.5th and 97.5th percentiles of the difference. Pairing removes the shared test-set noise,
so the interval is much tighter than comparing two independent CIs. A difference is called
significant when its 95% interval excludes 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from loralab.evaluate.bootstrap import DEFAULT_RESAMPLES, metric_values
from loralab.report.load import ReportError, Run

METRICS = ("accuracy", "weighted_f1", "macro_f1")
METRIC_NAMES = {
    "accuracy": "accuracy",
    "weighted_f1": "weighted F1",
    "macro_f1": "macro F1",
    "tail_f1": "tail F1",
    "micro_f1": "micro F1",
}


def _encode(*columns: pd.Series) -> tuple[list[np.ndarray], list[str]]:
    classes = sorted(set().union(*(set(c) for c in columns)))
    index = {c: i for i, c in enumerate(classes)}
    return [np.asarray([index[v] for v in c], dtype=np.int64) for c in columns], classes


def bucket_classes(run: Run, i: int) -> list[str]:
    """Class names in bucket i (ranked by training count, ties by label id, else name), from
    metrics.json's per_class and buckets."""
    if not run.buckets or not run.per_class:
        return []
    lo, hi = run.buckets[i].get("ranks", [0, 0])
    order = {c: i for i, c in enumerate(run.labels)}  # the evaluator breaks ties by label id
    ranked = sorted(
        run.per_class,
        key=lambda c: (-int(run.per_class[c].get("train_count", 0)), order.get(c, len(order)), c),
    )
    return ranked[int(lo) - 1 : int(hi)]


def tail_classes(run: Run) -> list[str]:
    return bucket_classes(run, -1)


def bucket_intervals(
    run: Run, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> list[dict[str, Any] | None]:
    """95% intervals of each bucket's mean F1: metrics.json's when present, else bootstrapped."""
    stored = (run.metrics.get("ci") or {}).get("buckets") or []
    out: list[dict[str, Any] | None] = []
    p = run.predictions
    (gold, pred), classes = _encode(p["gold"], p["pred"])
    idx = np.random.default_rng(seed).integers(0, len(gold), size=(n_resamples, len(gold)))
    for i, b in enumerate(run.buckets):
        ci = b.get("ci") or (stored[i] if i < len(stored) else None)
        ids = [classes.index(c) for c in bucket_classes(run, i) if c in classes]
        if not isinstance(ci, dict) and ids:
            vals = metric_values(gold[idx], pred[idx], len(classes), "tail_f1", ids)
            lo, hi = np.percentile(vals, [2.5, 97.5])
            ci = {"low": float(lo), "high": float(hi), "n_resamples": n_resamples, "seed": seed}
        out.append(ci if isinstance(ci, dict) else None)
    return out


def run_intervals(run: Run, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> dict[str, dict[str, Any]]:
    """95% bootstrap intervals: metrics.json's `ci` where present, else computed from predictions."""
    stored = run.metrics.get("ci") or {}
    out: dict[str, dict[str, Any]] = {m: stored[m] for m in METRICS if isinstance(stored.get(m), dict)}
    bucket_cis = stored.get("buckets") if isinstance(stored.get("buckets"), list) else None
    if bucket_cis and isinstance(bucket_cis[-1], dict):
        out["tail_f1"] = bucket_cis[-1]
    elif run.buckets and isinstance(run.buckets[-1].get("ci"), dict):
        out["tail_f1"] = run.buckets[-1]["ci"]
    todo = [m for m in (*METRICS, "tail_f1") if m not in out]
    if not todo:
        return out
    p = run.predictions
    (gold, pred), classes = _encode(p["gold"], p["pred"])
    tail = [classes.index(c) for c in tail_classes(run) if c in classes]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(gold), size=(n_resamples, len(gold)))
    for m in todo:
        if m == "tail_f1" and not tail:
            continue
        vals = metric_values(gold[idx], pred[idx], len(classes), m, tail)
        lo, hi = np.percentile(vals, [2.5, 97.5])
        out[m] = {"low": float(lo), "high": float(hi), "n_resamples": n_resamples, "seed": seed}
    return out


@dataclass(frozen=True)
class Difference:
    """Run B minus run A on one metric, over the same aligned test rows."""

    metric: str
    run_a: str
    run_b: str
    value_a: float
    value_b: float
    diff: float
    low: float
    high: float
    n_resamples: int
    seed: int
    n_rows: int

    @property
    def significant(self) -> bool:
        return self.low > 0 or self.high < 0

    def sentence(self) -> str:
        """E.g. "run B's macro F1 is 2.1 points higher than run A's (95% CI 0.8 to 3.4, 1000 paired
        resamples): significant"."""
        name = METRIC_NAMES.get(self.metric, self.metric)
        pts = abs(self.diff) * 100
        if pts < 0.05:
            how = f"equals run {self.run_a}'s"
        else:
            how = f"is {pts:.1f} points {'higher' if self.diff > 0 else 'lower'} than run {self.run_a}'s"
        verdict = (
            "significant (the interval excludes 0)"
            if self.significant
            else "not significant (the interval includes 0)"
        )
        return (
            f"run {self.run_b}'s {name} {how} (95% CI {self.low * 100:.1f} to {self.high * 100:.1f} points, "
            f"{self.n_resamples} paired resamples over {self.n_rows} test rows): {verdict}"
        )


def align(a: Run, b: Run) -> pd.DataFrame:
    """Inner-join two runs' predictions on `id`; refuses when they were scored on different test sets."""
    ids_a, ids_b = set(a.predictions["id"]), set(b.predictions["id"])
    if ids_a != ids_b:
        only_a, only_b = sorted(ids_a - ids_b), sorted(ids_b - ids_a)
        raise ReportError(
            f"runs {a.name} and {b.name} were scored on different test sets, so their predictions cannot "
            f"be compared row by row: {len(only_a)} id(s) only in {a.name} (e.g. {only_a[:3]}), "
            f"{len(only_b)} only in {b.name} (e.g. {only_b[:3]}). Evaluate both on the same test file."
        )
    if a.predictions["id"].duplicated().any() or b.predictions["id"].duplicated().any():
        raise ReportError(f"runs {a.name}/{b.name}: predictions.csv has duplicate ids; cannot pair rows")
    left = a.predictions[["id", "gold", "pred"]]
    right = b.predictions[["id", "gold", "pred"]]
    joined = left.merge(right, on="id", suffixes=("_a", "_b"))
    if (joined["gold_a"] != joined["gold_b"]).any():
        n = int((joined["gold_a"] != joined["gold_b"]).sum())
        raise ReportError(f"runs {a.name} and {b.name} disagree on the gold label of {n} test row(s)")
    return joined.sort_values("id", kind="stable").reset_index(drop=True)


def paired_bootstrap(
    a: Run,
    b: Run,
    metrics: tuple[str, ...] = METRICS,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> list[Difference]:
    """B minus A for each metric, with a 95% paired-bootstrap interval. Deterministic for a seed:
    rows are sorted by id before resampling, so file order does not change the answer."""
    joined = align(a, b)
    (gold, pa, pb), classes = _encode(joined["gold_a"], joined["pred_a"], joined["pred_b"])
    tail = [classes.index(c) for c in tail_classes(a) if c in classes]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(gold), size=(n_resamples, len(gold)))
    full = np.arange(len(gold))[None, :]
    out = []
    for m in metrics:
        if m == "tail_f1" and not tail:
            continue
        va = metric_values(gold[full], pa[full], len(classes), m, tail)[0]
        vb = metric_values(gold[full], pb[full], len(classes), m, tail)[0]
        deltas = metric_values(gold[idx], pb[idx], len(classes), m, tail) - metric_values(
            gold[idx], pa[idx], len(classes), m, tail
        )
        lo, hi = np.percentile(deltas, [2.5, 97.5])
        out.append(
            Difference(m, a.name, b.name, float(va), float(vb), float(vb - va), float(lo), float(hi),
                       n_resamples, seed, len(gold))
        )  # fmt: skip
    return out
