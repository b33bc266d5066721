"""Classification metrics against scikit-learn, bootstrap intervals resample by resample, ECE by hand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from loralab.evaluate.bootstrap import bootstrap_cis, per_class_f1
from loralab.evaluate.classification import (
    confusion_pairs,
    evaluate_classification,
    expected_calibration_error,
)


def _data(n: int = 400, k: int = 12, seed: int = 3) -> tuple[list[int], list[int], list[float]]:
    rng = np.random.default_rng(seed)
    gold = rng.choice(k, size=n, p=np.linspace(2, 0.2, k) / np.linspace(2, 0.2, k).sum()).tolist()
    pred = [g if rng.random() < 0.7 else int(rng.integers(k)) for g in gold]
    conf = rng.uniform(0.3, 1.0, size=n).tolist()
    return gold, pred, conf


def test_metrics_equal_sklearn() -> None:
    gold, pred, conf = _data()
    id2label = {i: f"c{i:02d}" for i in range(12)}
    train_counts = {i: 100 - 7 * i for i in range(12)}
    m = evaluate_classification(gold, pred, conf, id2label, train_counts, n_resamples=200)
    labels = list(range(12))
    assert m["accuracy"] == accuracy_score(gold, pred)
    for avg in ("weighted", "macro", "micro"):
        assert m[f"{avg}_f1"] == pytest.approx(
            f1_score(gold, pred, labels=labels, average=avg, zero_division=0)
        )
    p, r, f, s = precision_recall_fscore_support(gold, pred, labels=labels, zero_division=0)
    for c in labels:
        pc = m["per_class"][id2label[c]]
        assert (pc["precision"], pc["recall"], pc["f1"], pc["support"]) == pytest.approx(
            (p[c], r[c], f[c], s[c])
        )
    # buckets at cuts 20/100 over 12 classes: one bucket "rank 1-12" holding every class
    assert [b["name"] for b in m["buckets"]] == ["rank 1-12"]
    assert m["buckets"][0]["mean_f1"] == pytest.approx(f.mean())


def test_buckets_follow_training_frequency_ranks() -> None:
    from loralab.evaluate.classification import classification_metrics

    gold = [0, 1, 2, 3, 0, 1, 2, 3]
    pred = [0, 1, 2, 0, 0, 1, 1, 3]
    id2label = {0: "a", 1: "b", 2: "c", 3: "d"}
    train_counts = {0: 5, 1: 50, 2: 40, 3: 1}  # frequency order: b, c, a, d
    m = classification_metrics(gold, pred, id2label, train_counts, cuts=(2,))
    f = f1_score(gold, pred, labels=[0, 1, 2, 3], average=None)
    assert [b["ranks"] for b in m["buckets"]] == [[1, 2], [3, 4]]
    assert m["buckets"][0]["mean_f1"] == pytest.approx((f[1] + f[2]) / 2)  # b and c
    assert m["tail_f1"] == pytest.approx((f[0] + f[3]) / 2)  # a and d


def test_bootstrap_resamples_equal_sklearn_on_each_resample() -> None:
    gold, pred, _ = _data(n=150, k=5)
    g, p = np.array(gold), np.array(pred)
    rng = np.random.default_rng(11)
    idx = rng.integers(0, len(g), size=(4, len(g)))
    f1, support = per_class_f1(g[idx], p[idx], 5)
    for row in range(4):
        ref = f1_score(g[idx[row]], p[idx[row]], labels=list(range(5)), average=None, zero_division=0)
        assert f1[row] == pytest.approx(ref)
        assert (f1[row] * support[row]).sum() / support[row].sum() == pytest.approx(
            f1_score(g[idx[row]], p[idx[row]], labels=list(range(5)), average="weighted", zero_division=0)
        )
    ci = bootstrap_cis(gold, pred, 5, [[0, 1], [2, 3, 4]], n_resamples=300, seed=5)
    again = bootstrap_cis(gold, pred, 5, [[0, 1], [2, 3, 4]], n_resamples=300, seed=5)
    assert ci == again  # seeded
    acc = accuracy_score(gold, pred)
    assert ci["accuracy"]["low"] < acc < ci["accuracy"]["high"]
    assert ci["accuracy"]["n_resamples"] == 300 and ci["accuracy"]["seed"] == 5
    assert len(ci["buckets"]) == 2


def test_ece_by_hand() -> None:
    # bins of width 0.5 (bins=2): [0.9, 0.8] -> bin 2, accuracy 1/2, confidence 0.85 -> gap 0.35;
    # [0.3, 0.4] -> bin 1, accuracy 2/2, confidence 0.35 -> gap 0.65; each bin holds half the rows.
    ece = expected_calibration_error([True, False, True, True], [0.9, 0.8, 0.3, 0.4], bins=2)
    assert ece == pytest.approx(0.5 * 0.35 + 0.5 * 0.65)


def test_confusion_pairs_count_and_examples() -> None:
    gold = [0, 0, 0, 1, 1, 2]
    pred = [1, 1, 0, 0, 1, 1]
    texts = ["a1", "a2", "a3", "b1", "b2", "c1"]
    pairs = confusion_pairs(gold, pred, {0: "A", 1: "B", 2: "C"}, texts)
    assert pairs[0] == {"gold": "A", "pred": "B", "count": 2, "examples": ["a1", "a2"]}
    assert {(p["gold"], p["pred"], p["count"]) for p in pairs[1:]} == {("B", "A", 1), ("C", "B", 1)}


def test_cli_scores_predictions_made_elsewhere(tmp_path: Path) -> None:
    gold, pred, conf = _data(n=120, k=4)
    f = tmp_path / "preds.csv"
    f.write_text(
        "id,gold,pred,prob\n"
        + "".join(f"{i},L{g},L{p},{c}\n" for i, (g, p, c) in enumerate(zip(gold, pred, conf, strict=True)))
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "loralab", "evaluate", "--predictions", str(f), "--json"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    g = [f"L{x}" for x in gold]
    p = [f"L{x}" for x in pred]
    assert m["accuracy"] == pytest.approx(accuracy_score(g, p))
    assert m["macro_f1"] == pytest.approx(f1_score(g, p, average="macro"))
    assert m["weighted_f1"] == pytest.approx(f1_score(g, p, average="weighted"))
    assert "ece" in m and m["ci"]["accuracy"]["n_resamples"] == 1000
    bad = tmp_path / "bad.csv"
    bad.write_text("id,label,guess\n1,a,b\n")
    r = subprocess.run(
        [sys.executable, "-m", "loralab", "evaluate", "--predictions", str(bad)],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert r.returncode == 2 and "missing column(s) pred, gold" in r.stderr and "Traceback" not in r.stderr
