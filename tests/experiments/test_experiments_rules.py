"""Seed 000's decision rules as pure functions of a study record and its runs' predictions.

Each run here is a hand-made predictions.csv over 1,000 test rows of four classes (A and B frequent in
training, C and D the tail bucket), built by fixing or breaking chosen rows of a baseline; its
metrics.json holds scikit-learn's numbers, as `train` writes them. The tests check every verdict, the
thresholds changed through `rules:`, and the recorded inputs against scikit-learn (F1s, gains and the
paired-bootstrap interval recomputed with f1_score on the same resampled rows).
"""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score

from loralab.errors import ConfigError
from loralab.experiments.record import RunRecord, StudyRecord, load_study
from loralab.experiments.rules import RulesConfig, decide_after_phase

CLASSES = ["A", "B", "C", "D"]
TRAIN_COUNTS = {"A": 500, "B": 300, "C": 20, "D": 10}  # C and D: the tail bucket (ranks 3-4)
TAIL = ["C", "D"]
GOLD = ["A"] * 400 + ["B"] * 300 + ["C"] * 150 + ["D"] * 150
IDS = [f"r{i:04d}" for i in range(len(GOLD))]
HEAD_ROWS = list(range(700))
TAIL_ROWS = list(range(700, 1000))
P1, P2, P3 = "attention", "attention+mlp-in", "all-linear"


def wrong(g: str) -> str:
    return "A" if g != "A" else "B"


def baseline(tail_wrong: int = 180, head_wrong: int = 40) -> list[str]:
    """Correct except `tail_wrong` tail rows and `head_wrong` head rows (spread over the classes)."""
    bad = set(TAIL_ROWS[::2][: tail_wrong // 2] + TAIL_ROWS[1::2][: tail_wrong - tail_wrong // 2])
    bad |= set(HEAD_ROWS[::7][:head_wrong])
    return [wrong(g) if i in bad else g for i, g in enumerate(GOLD)]


def variant(base: list[str], fix: int = 0, brk: int = 0, offset: int = 0) -> list[str]:
    """`fix` of the base's wrong rows made right, `brk` of its right head rows made wrong."""
    out = list(base)
    bad = [i for i, p in enumerate(base) if p != GOLD[i]]
    good = [i for i in HEAD_ROWS if base[i] == GOLD[i]]
    for i in bad[offset : offset + fix]:
        out[i] = GOLD[i]
    for i in good[offset : offset + brk]:
        out[i] = wrong(GOLD[i])
    return out


def sk_metrics(pred: list[str], gold: list[str] = GOLD) -> dict[str, float]:
    per = f1_score(gold, pred, labels=CLASSES, average=None, zero_division=0)
    return {
        "weighted_f1": float(f1_score(gold, pred, labels=CLASSES, average="weighted", zero_division=0)),
        "macro_f1": float(f1_score(gold, pred, labels=CLASSES, average="macro", zero_division=0)),
        "accuracy": float(np.mean([g == p for g, p in zip(gold, pred, strict=True)])),
        "tail_f1": float(np.mean([per[CLASSES.index(c)] for c in TAIL])),
    }


def write_run(run_dir: Path, pred: list[str]) -> dict[str, float]:
    run_dir.mkdir(parents=True)
    with (run_dir / "predictions.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "gold", "pred", "text"])
        w.writerows(zip(IDS, GOLD, pred, [""] * len(GOLD), strict=True))
    m = sk_metrics(pred)
    per = f1_score(GOLD, pred, labels=CLASSES, average=None, zero_division=0)
    metrics = {
        **m,
        "per_class": {
            c: {"f1": float(per[i]), "support": GOLD.count(c), "train_count": TRAIN_COUNTS[c]}
            for i, c in enumerate(CLASSES)
        },
        "buckets": [{"name": "rank 1-2", "ranks": [1, 2]}, {"name": "rank 3-4", "ranks": [3, 4]}],
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    return m


def add_run(
    record: StudyRecord,
    study: Path,
    phase: str,
    seed: int,
    pred: list[str] | None,
    *,
    params: int = 100,
    seconds: float = 10.0,
) -> None:
    rid = f"{phase}-s{seed}"
    run = RunRecord(name=phase, phase=phase, model="tiny", seed=seed, overrides={}, key=rid)
    if pred is None:
        run.status, run.error, run.exit_code = "failed", "CUDA out of memory", 1
    else:
        run.status, run.run_dir = "done", f"runs/{rid}/run"
        run.metrics = write_run(study / "runs" / rid / "run", pred)
        run.trainable_params, run.train_seconds = params, seconds
    record.runs.append(run)


def two_phase(tmp: Path, second: list[str] | None, first: list[str] | None = None) -> StudyRecord:
    record = StudyRecord(name="t", kind="ablate")
    add_run(record, tmp, P1, 42, first or baseline())
    add_run(record, tmp, P2, 42, second, params=240, seconds=14.0)
    return record


def gain(second: list[str], first: list[str] | None = None) -> float:
    return sk_metrics(second)["weighted_f1"] - sk_metrics(first or baseline())["weighted_f1"]


RULES = RulesConfig(n_resamples=200)


# ---- the first phase ---------------------------------------------------------------------------


def test_first_phase_target_met_stops(tmp_path: Path) -> None:
    pred = baseline(tail_wrong=40, head_wrong=20)
    m = sk_metrics(pred)
    assert m["weighted_f1"] >= 0.85 and m["tail_f1"] >= 0.70  # the premise, by scikit-learn
    record = StudyRecord(name="t", kind="ablate")
    add_run(record, tmp_path, P1, 42, pred)
    out = decide_after_phase(record, P1, tmp_path, RULES)
    (d,) = out.decisions
    assert d.verdict.startswith("stop: target met")
    assert out.stop and out.selected == P1 and "target met" in (out.reason or "")
    assert d.inputs["weighted_f1"]["mean"] == pytest.approx(m["weighted_f1"])
    assert d.inputs["tail_f1"]["mean"] == pytest.approx(m["tail_f1"])


def test_first_phase_low_tail_makes_the_ffn_phase_necessary(tmp_path: Path) -> None:
    record = StudyRecord(name="t", kind="ablate")
    add_run(record, tmp_path, P1, 42, baseline())
    assert sk_metrics(baseline())["tail_f1"] < 0.60
    out = decide_after_phase(record, P1, tmp_path, RULES)
    assert out.decisions[0].verdict.startswith("advance")
    assert "FFN phase is necessary" in out.decisions[0].verdict
    assert not out.stop and out.selected == P1


def test_first_phase_below_target_with_a_fair_tail_advances_with_the_tuning_note(tmp_path: Path) -> None:
    pred = baseline(tail_wrong=80, head_wrong=100)
    m = sk_metrics(pred)
    assert m["weighted_f1"] < 0.85 and m["tail_f1"] >= 0.60
    record = StudyRecord(name="t", kind="ablate")
    add_run(record, tmp_path, P1, 42, pred)
    d = decide_after_phase(record, P1, tmp_path, RULES).decisions[0]
    assert d.verdict.startswith("advance") and "hyperparameter tuning" in d.verdict


# ---- later phases: gain over the best phase so far ---------------------------------------------

SCENARIOS = {
    # name: (fix, break, expected verdict start, selected, stop)
    "adopt": (40, 0, "adopt", P2, True),
    "keep": (1, 0, "keep previous: gain below 0.5 point", P1, False),
    "not significant": (50, 50, "not significant", P1, False),
    "advance": (12, 0, "advance", P2, False),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_later_phase_verdicts(tmp_path: Path, name: str) -> None:
    fix, brk, verdict, selected, stop = SCENARIOS[name]
    second = variant(baseline(), fix=fix, brk=brk)
    g = gain(second)
    if name == "adopt":
        assert g >= 0.02
    elif name == "keep":
        assert g < 0.005
    else:
        assert 0.005 <= g < 0.02
    out = decide_after_phase(two_phase(tmp_path, second), P2, tmp_path, RULES)
    (d,) = out.decisions
    assert d.after == P2 and d.verdict.startswith(verdict), d.verdict
    assert out.selected == selected and out.stop is stop
    assert d.inputs["gain"]["mean"] == pytest.approx(g)
    crosses = d.inputs["gain"]["low"] <= 0 <= d.inputs["gain"]["high"]
    if name != "keep":  # one fixed row: its interval may well touch 0, and the rule does not ask
        assert crosses is (name == "not significant")
    # the cost: extra parameters and the time ratio, "N points x R time"
    assert d.inputs["cost"]["extra_trainable_params"] == 140
    assert d.inputs["cost"]["time_ratio"] == pytest.approx(1.4)
    assert f"{g * 100:+.1f} points × 1.40x time" in d.inputs["cost"]["summary"]


def test_adopt_whose_interval_crosses_zero_says_one_seed_can_be_noise(tmp_path: Path) -> None:
    second = variant(baseline(), fix=100, brk=125)
    assert gain(second) >= 0.02
    d = decide_after_phase(two_phase(tmp_path, second), P2, tmp_path, RULES).decisions[0]
    assert d.verdict.startswith("adopt")
    assert d.inputs["gain"]["crosses_zero"] is True
    assert "can be noise" in d.verdict and "1.4 points" in d.verdict


def test_the_interval_is_scikit_learns_f1_on_the_same_resampled_rows(tmp_path: Path) -> None:
    first, second = baseline(), variant(baseline(), fix=50, brk=50)
    d = decide_after_phase(two_phase(tmp_path, second, first), P2, tmp_path, RULES).decisions[0]
    g, a, b = np.array(GOLD), np.array(first), np.array(second)  # ids r0000.. sort as the rows do
    idx = np.random.default_rng(0).integers(0, len(g), size=(RULES.n_resamples, len(g)))
    deltas = [
        f1_score(g[i], b[i], average="weighted", zero_division=0)
        - f1_score(g[i], a[i], average="weighted", zero_division=0)
        for i in idx
    ]
    lo, hi = np.percentile(deltas, [2.5, 97.5])
    assert d.inputs["gain"]["low"] == pytest.approx(lo, abs=1e-12)
    assert d.inputs["gain"]["high"] == pytest.approx(hi, abs=1e-12)


def test_several_seeds_mean_spread_and_paired_gain(tmp_path: Path) -> None:
    record = StudyRecord(name="t", kind="ablate")
    firsts = {42: baseline(), 43: baseline(tail_wrong=170, head_wrong=50)}
    seconds = {42: variant(firsts[42], fix=30), 43: variant(firsts[43], fix=25, offset=5)}
    for s in (42, 43):
        add_run(record, tmp_path, P1, s, firsts[s])
    for s in (42, 43):
        add_run(record, tmp_path, P2, s, seconds[s], params=240, seconds=14.0)
    d = decide_after_phase(record, P2, tmp_path, RULES).decisions[0]
    w = [sk_metrics(seconds[s])["weighted_f1"] for s in (42, 43)]
    assert d.inputs["weighted_f1"]["mean"] == pytest.approx(statistics.fmean(w))
    assert d.inputs["weighted_f1"]["min"] == pytest.approx(min(w))
    assert d.inputs["weighted_f1"]["max"] == pytest.approx(max(w))
    assert d.inputs["weighted_f1"]["std"] == pytest.approx(statistics.stdev(w))
    diffs = {s: gain(seconds[s], firsts[s]) for s in (42, 43)}
    assert [p["diff"] for p in d.inputs["gain"]["per_seed"]] == pytest.approx([diffs[42], diffs[43]])
    assert d.inputs["gain"]["mean"] == pytest.approx(statistics.fmean(diffs.values()))
    # the interval of the mean: every seed's rows resampled with the same indices
    g = np.array(GOLD)
    idx = np.random.default_rng(0).integers(0, len(g), size=(RULES.n_resamples, len(g)))
    means = [
        statistics.fmean(
            f1_score(g[i], np.array(seconds[s])[i], average="weighted")
            - f1_score(g[i], np.array(firsts[s])[i], average="weighted")
            for s in (42, 43)
        )
        for i in idx
    ]
    lo, hi = np.percentile(means, [2.5, 97.5])
    assert (d.inputs["gain"]["low"], d.inputs["gain"]["high"]) == pytest.approx((lo, hi), abs=1e-12)


def test_failed_phase_keeps_the_previous_one_and_says_so(tmp_path: Path) -> None:
    out = decide_after_phase(two_phase(tmp_path, None), P2, tmp_path, RULES)
    (d,) = out.decisions
    assert d.verdict.startswith("keep previous") and "failed" in d.verdict
    assert out.selected == P1 and not out.stop


def test_a_failed_seed_is_left_out_and_named(tmp_path: Path) -> None:
    record = StudyRecord(name="t", kind="ablate")
    for s in (42, 43):
        add_run(record, tmp_path, P1, s, baseline())
    second = variant(baseline(), fix=40)
    add_run(record, tmp_path, P2, 42, second)
    add_run(record, tmp_path, P2, 43, None)
    d = decide_after_phase(record, P2, tmp_path, RULES).decisions[0]
    assert d.verdict.startswith("adopt") and "1 of 2 runs" in d.verdict and f"{P2}-s43 failed" in d.verdict
    assert d.inputs["gain"]["paired_seeds"] == [42]
    assert d.inputs["gain"]["mean"] == pytest.approx(gain(second))


# ---- thresholds from the study file -------------------------------------------------------------


def test_thresholds_change_through_rules(tmp_path: Path) -> None:
    adopt = variant(baseline(), fix=40)
    strict = RulesConfig.from_mapping({"adopt_gain": 0.06})
    assert gain(adopt) < 0.06
    d = decide_after_phase(two_phase(tmp_path / "a", adopt), P2, tmp_path / "a", strict).decisions[0]
    assert d.verdict.startswith("advance")
    lenient = RulesConfig.from_mapping({"target_weighted_f1": 0.7, "target_tail_f1": 0.4})
    record = StudyRecord(name="t", kind="ablate")
    add_run(record, tmp_path / "b", P1, 42, baseline())
    assert decide_after_phase(record, P1, tmp_path / "b", lenient).decisions[0].verdict.startswith("stop")
    small = variant(baseline(), fix=12)
    picky = RulesConfig.from_mapping({"min_gain": 0.015})
    d = decide_after_phase(two_phase(tmp_path / "c", small), P2, tmp_path / "c", picky).decisions[0]
    assert d.verdict.startswith("keep previous: gain below 1.5 points")
    assert d.inputs["rules"]["min_gain"] == 0.015


def test_unknown_or_bad_rule_keys_are_config_errors_with_a_suggestion() -> None:
    with pytest.raises(ConfigError) as e:
        RulesConfig.from_mapping({"adopt_gian": 0.03, "min_gain": 5, "metric": "f1"}, "study.yaml")
    text = e.value.message()
    assert "did you mean `adopt_gain`" in text
    assert "study.rules.min_gain" in text and "study.rules.metric" in text
    assert len(e.value.problems) == 3


# ---- the whole trail, recomputed from study.json -------------------------------------------------


def _simulate_runner(study: Path, rules: RulesConfig) -> None:
    """What the study runner does after each phase: record the outcome, skip the rest on stop."""
    record = load_study(study)
    for phase in (P1, P2, P3):
        run = record.run(phase, 42)
        assert run is not None
        if run.status == "skipped":
            continue
        out = decide_after_phase(record, phase, study, rules)
        record.decisions += out.decisions
        record.selected = out.selected
        if out.stop:
            for later in record.runs[record.runs.index(run) + 1 :]:
                later.status, later.reason = "skipped", out.reason
        record.save(study)


def _read_preds(path: Path) -> tuple[list[str], list[str]]:
    with path.open(encoding="utf-8") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: r["id"])
    return [r["gold"] for r in rows], [r["pred"] for r in rows]


def _expected_trail(study: Path, n_resamples: int) -> tuple[list[tuple[str, str]], str | None]:
    """Seed 000's rules applied by hand to study.json and the predictions, F1 by scikit-learn."""
    data = json.loads((study / "study.json").read_text(encoding="utf-8"))
    trail: list[tuple[str, str]] = []
    best: tuple[str, list[str], list[str]] | None = None
    for run in data["runs"]:
        if run["status"] != "done":
            continue
        gold, pred = _read_preds(study / run["run_dir"] / "predictions.csv")
        w = f1_score(gold, pred, average="weighted")
        per = dict(
            zip(sorted(set(gold)), f1_score(gold, pred, labels=sorted(set(gold)), average=None), strict=True)
        )
        tail = np.mean([per[c] for c in TAIL])
        if w >= 0.85 and tail >= 0.70:
            trail.append((run["phase"], "stop: target met"))
            best = (run["name"], gold, pred)
            break
        if best is None:
            trail.append((run["phase"], "advance"))
            best = (run["name"], gold, pred)
            continue
        g = np.array(gold)
        a, b = np.array(best[2]), np.array(pred)
        diff = w - f1_score(gold, best[2], average="weighted")
        idx = np.random.default_rng(0).integers(0, len(g), size=(n_resamples, len(g)))
        deltas = [
            f1_score(g[i], b[i], average="weighted") - f1_score(g[i], a[i], average="weighted") for i in idx
        ]
        lo, hi = np.percentile(deltas, [2.5, 97.5])
        if diff >= 0.02:
            trail.append((run["phase"], "adopt"))
            best = (run["name"], gold, pred)
            break
        if diff < 0.005:
            trail.append((run["phase"], "keep previous: gain below 0.5 point"))
        elif lo <= 0 <= hi:
            trail.append((run["phase"], "not significant"))
        else:
            trail.append((run["phase"], "advance"))
            best = (run["name"], gold, pred)
    return trail, best[0] if best else None


@pytest.mark.parametrize(
    "second,third",
    [((12, 0), (40, 0)), ((1, 0), (50, 50)), ((40, 0), (0, 0))],
    ids=["advance-adopt", "keep-notsignificant", "adopt-skips"],
)
def test_decisions_follow_from_study_json(
    tmp_path: Path, second: tuple[int, int], third: tuple[int, int]
) -> None:
    record = StudyRecord(name="t", kind="ablate")
    base = baseline()
    p2 = variant(base, fix=second[0], brk=second[1])
    p3 = variant(p2 if second[0] >= 12 else base, fix=third[0], brk=third[1])
    for phase, pred in ((P1, base), (P2, p2), (P3, p3)):
        add_run(record, tmp_path, phase, 42, pred)
    record.save(tmp_path)
    _simulate_runner(tmp_path, RULES)
    saved = json.loads((tmp_path / "study.json").read_text(encoding="utf-8"))
    want, selected = _expected_trail(tmp_path, RULES.n_resamples)
    got = [(d["after"], d["verdict"]) for d in saved["decisions"]]
    assert len(got) == len(want)
    for (after, verdict), (w_after, w_verdict) in zip(got, want, strict=True):
        assert after == w_after and verdict.startswith(w_verdict), (verdict, w_verdict)
    assert saved["selected"] == selected
    for d in saved["decisions"]:  # the inputs are the numbers scikit-learn gives
        gold, pred = _read_preds(tmp_path / f"runs/{d['after']}-s42/run/predictions.csv")
        assert d["inputs"]["weighted_f1"]["mean"] == pytest.approx(f1_score(gold, pred, average="weighted"))
    if want[-1][1] in ("adopt", "stop: target met") and len(want) < 3:
        skipped = [r for r in saved["runs"] if r["status"] == "skipped"]
        assert skipped and all(r["reason"] for r in skipped)
