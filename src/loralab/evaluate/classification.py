"""Classification metrics of seed 000 §5.1: overall F1s, per-class scores, frequency buckets.

Overall and per-class numbers come from scikit-learn (the reference implementation); loralab adds
the frequency buckets the seed computes by hand: classes ranked by training-set frequency, cut at
configurable ranks (default 20 and 100: "top 20 / 21-100 / 101-260"), each bucket's mean F1 and
support. The tail bucket's mean F1 is the `tail_f1` that seed 000's decision rules use.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from loralab.evaluate.bootstrap import DEFAULT_RESAMPLES, bootstrap_cis
from loralab.evaluate.guards import check_metrics

DEFAULT_CUTS = (20, 100)


def bucket_ranges(n_classes: int, cuts: Sequence[int] = DEFAULT_CUTS) -> list[tuple[int, int]]:
    """1-based inclusive rank ranges: cuts (20, 100) over 260 classes -> (1,20), (21,100), (101,260)."""
    edges = [c for c in sorted(set(cuts)) if 0 < c < n_classes]
    out: list[tuple[int, int]] = []
    lo = 1
    for c in edges:
        out.append((lo, c))
        lo = c + 1
    out.append((lo, n_classes))
    return out


def frequency_ranks(train_counts: dict[int, int], n_classes: int) -> list[int]:
    """Class ids ordered by training frequency, most frequent first (ties by id, so it is stable)."""
    return sorted(range(n_classes), key=lambda c: (-train_counts.get(c, 0), c))


def classification_metrics(
    gold: Sequence[int],
    pred: Sequence[int],
    id2label: dict[int, str],
    train_counts: dict[int, int],
    cuts: Sequence[int] = DEFAULT_CUTS,
) -> dict[str, Any]:
    """accuracy, weighted/macro/micro F1, per_class {label: precision, recall, f1, support}, buckets."""
    # scikit-learn takes ~1 s to import: only runs that score predictions pay for it.
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    n = len(id2label)
    labels = list(range(n))
    if len(gold) == 0:
        raise ValueError("no predictions to score")
    p, r, f, s = precision_recall_fscore_support(gold, pred, labels=labels, zero_division=0)
    per_class = {
        id2label[c]: {
            "precision": float(p[c]),
            "recall": float(r[c]),
            "f1": float(f[c]),
            "support": int(s[c]),
            "train_count": int(train_counts.get(c, 0)),
        }
        for c in labels
    }
    ranks = frequency_ranks(train_counts, n)
    buckets = []
    for lo, hi in bucket_ranges(n, cuts):
        ids = ranks[lo - 1 : hi]
        buckets.append(
            {
                "name": f"rank {lo}-{hi}",
                "ranks": [lo, hi],
                "classes": len(ids),
                "mean_f1": float(sum(f[c] for c in ids) / len(ids)) if ids else 0.0,
                "support": int(sum(s[c] for c in ids)),
                "train_count": int(sum(train_counts.get(c, 0) for c in ids)),
            }
        )
    predicted = Counter(pred)
    return {
        "accuracy": float(accuracy_score(gold, pred)),
        "weighted_f1": float(f1_score(gold, pred, labels=labels, average="weighted", zero_division=0)),
        "macro_f1": float(f1_score(gold, pred, labels=labels, average="macro", zero_division=0)),
        "micro_f1": float(f1_score(gold, pred, labels=labels, average="micro", zero_division=0)),
        "tail_f1": buckets[-1]["mean_f1"],
        "n": len(gold),
        "per_class": per_class,
        "buckets": buckets,
        "never_predicted": [id2label[c] for c in labels if predicted.get(c, 0) == 0 and s[c] > 0],
    }


def expected_calibration_error(correct: Sequence[bool], confidence: Sequence[float], bins: int = 15) -> float:
    """ECE (Guo et al. 2017): |accuracy - confidence| per equal-width confidence bin, weighted by
    the bin's share of rows."""
    c = np.asarray(confidence, dtype=float)
    ok = np.asarray(correct, dtype=float)
    if len(c) == 0:
        return float("nan")
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(c, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            ece += m.mean() * abs(ok[m].mean() - c[m].mean())
    return float(ece)


def confusion_pairs(
    gold: Sequence[int],
    pred: Sequence[int],
    id2label: dict[int, str],
    texts: Sequence[str] | None = None,
    *,
    top: int = 20,
    examples: int = 3,
) -> list[dict[str, Any]]:
    """The most frequent (gold, predicted) mistakes, each with a few example inputs."""
    counts = Counter((g, p) for g, p in zip(gold, pred, strict=True) if g != p)
    out = []
    for (g, p), n in counts.most_common(top):
        ex = [texts[i] for i in range(len(gold)) if gold[i] == g and pred[i] == p][:examples] if texts else []
        out.append({"gold": id2label[g], "pred": id2label[p], "count": n, "examples": ex})
    return out


def evaluate_classification(
    gold: Sequence[int],
    pred: Sequence[int],
    confidence: Sequence[float] | None,
    id2label: dict[int, str],
    train_counts: dict[int, int],
    *,
    texts: Sequence[str] | None = None,
    cuts: Sequence[int] = DEFAULT_CUTS,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """Everything `loralab evaluate` reports for classification, from aligned gold/pred ids."""
    m = classification_metrics(gold, pred, id2label, train_counts, cuts)
    n = len(id2label)
    ranks = frequency_ranks(train_counts, n)
    bucket_ids = [ranks[lo - 1 : hi] for lo, hi in bucket_ranges(n, cuts)]
    m["ci"] = bootstrap_cis(gold, pred, n, bucket_ids, n_resamples=n_resamples, seed=seed)
    for b, ci in zip(m["buckets"], m["ci"]["buckets"], strict=True):
        b["ci"] = ci
    m["confusion_pairs"] = confusion_pairs(gold, pred, id2label, texts)
    if confidence is not None:
        m["ece"] = expected_calibration_error([g == p for g, p in zip(gold, pred, strict=True)], confidence)
    supports = [c["support"] for c in m["per_class"].values()]
    m["warnings"] = check_metrics(
        {k: m[k] for k in ("accuracy", "weighted_f1", "macro_f1", "micro_f1")},
        task="classification",
        predictions=[id2label[p] for p in pred],
        references=[id2label[g] for g in gold],
        supports=supports,
    )
    return m
