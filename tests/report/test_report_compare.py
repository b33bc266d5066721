"""Paired bootstrap on constructed cases whose true answer is known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loralab.report.compare import paired_bootstrap, run_intervals
from loralab.report.load import ReportError, Run

N = 500
LABELS = ["a", "b", "c", "d", "e"]


def _run(name: str, gold: list[str], pred: list[str], ids: list[str] | None = None) -> Run:
    ids = ids or [f"r{k}" for k in range(len(gold))]
    df = pd.DataFrame({"id": ids, "text": [""] * len(gold), "gold": gold, "pred": pred})
    return Run(path=Path(name), name=name, metrics={}, predictions=df)


def _gold() -> list[str]:
    return [LABELS[k % len(LABELS)] for k in range(N)]


def _wrong(g: str) -> str:
    return LABELS[(LABELS.index(g) + 1) % len(LABELS)]


def _with_correct(gold: list[str], n_correct: int) -> list[str]:
    """First n_correct rows right, the rest wrong: B with more correct rows is right wherever A is."""
    return [g if k < n_correct else _wrong(g) for k, g in enumerate(gold)]


def test_identical_runs_differ_by_zero_and_are_not_significant() -> None:
    gold = _gold()
    pred = _with_correct(gold, 350)
    diffs = paired_bootstrap(_run("A", gold, pred), _run("B", gold, pred), n_resamples=300, seed=1)
    assert [d.metric for d in diffs] == ["accuracy", "weighted_f1", "macro_f1"]
    for d in diffs:
        assert d.diff == 0.0 and d.low == 0.0 and d.high == 0.0
        assert not d.significant
        assert "not significant" in d.sentence()
    assert diffs[0].value_a == pytest.approx(0.7)


def test_b_right_on_20_percent_more_rows_is_significant_and_covers_the_truth() -> None:
    gold = _gold()
    a = _run("A", gold, _with_correct(gold, 300))  # 60% accuracy
    b = _run("B", gold, _with_correct(gold, 400))  # 80% accuracy
    acc = paired_bootstrap(a, b, metrics=("accuracy",), n_resamples=1000, seed=0)[0]
    assert acc.value_a == pytest.approx(0.6) and acc.value_b == pytest.approx(0.8)
    assert acc.diff == pytest.approx(0.2)
    assert acc.low <= 0.2 <= acc.high
    assert acc.low > 0.1 and acc.high < 0.3  # paired: the spread comes only from the 100 differing rows
    assert acc.significant
    text = acc.sentence()
    assert text.startswith("run B's accuracy is 20.0 points higher than run A's (95% CI ")
    assert text.endswith("): significant (the interval excludes 0)")
    # the other direction reads as "lower", with the interval mirrored
    rev = paired_bootstrap(b, a, metrics=("accuracy",), n_resamples=1000, seed=0)[0]
    assert rev.diff == pytest.approx(-0.2) and rev.significant and "points lower" in rev.sentence()


def test_bootstrap_is_seeded_and_ignores_row_order() -> None:
    gold = _gold()
    rng = np.random.default_rng(5)
    pa = [g if rng.random() < 0.7 else _wrong(g) for g in gold]
    pb = [g if rng.random() < 0.75 else _wrong(g) for g in gold]
    first = paired_bootstrap(_run("A", gold, pa), _run("B", gold, pb), n_resamples=400, seed=3)
    again = paired_bootstrap(_run("A", gold, pa), _run("B", gold, pb), n_resamples=400, seed=3)
    assert first == again
    order = rng.permutation(N)
    ids = [f"r{k}" for k in range(N)]
    shuffled_b = _run("B", [gold[k] for k in order], [pb[k] for k in order], [ids[k] for k in order])
    assert paired_bootstrap(_run("A", gold, pa), shuffled_b, n_resamples=400, seed=3) == first
    other_seed = paired_bootstrap(_run("A", gold, pa), _run("B", gold, pb), n_resamples=400, seed=4)
    assert [d.low for d in other_seed] != [d.low for d in first]


def test_different_test_sets_are_refused_with_a_clear_message() -> None:
    gold = _gold()
    a = _run("A", gold, gold)
    b = _run("B", gold, gold, ids=[f"x{k}" for k in range(N)])
    with pytest.raises(ReportError, match="different test sets") as err:
        paired_bootstrap(a, b)
    assert "only in A" in str(err.value) and "same test file" in str(err.value)


def test_run_intervals_are_computed_from_predictions_when_metrics_have_none() -> None:
    gold = _gold()
    run = _run("A", gold, _with_correct(gold, 400))
    ci = run_intervals(run, n_resamples=500, seed=0)
    assert set(ci) >= {"accuracy", "weighted_f1", "macro_f1"}
    assert ci["accuracy"]["low"] < 0.8 < ci["accuracy"]["high"]
    stored = {"low": 0.1, "high": 0.2, "n_resamples": 9, "seed": 0}
    run.metrics["ci"] = {"accuracy": stored}
    assert run_intervals(run)["accuracy"] == stored  # metrics.json's interval wins when present
