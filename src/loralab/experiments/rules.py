"""Seed 000's decision rules between ablation phases (§4.2-§5.3), evaluated on a study's record.

After a phase, in this order:
1. the phase meets the target (weighted F1 >= 0.85 and tail F1 >= 0.70): `stop: target met`;
2. first phase, tail F1 < 0.60: the FFN phase is necessary, `advance` (first phase otherwise: the target
   is not met, `advance` too, with §4.2's note that tuning may help more than the FFN);
3. later phases, against the best phase so far, gain >= 2 points: `adopt` (stop);
4. gain < 0.5 point: `keep previous: gain below 0.5 point`;
5. a gain in between whose 95% paired-bootstrap interval crosses zero: `not significant`;
6. otherwise (a real gain below the adoption gate): `advance`, and this phase is the best so far.

Every number a rule used goes into the decision's inputs: each phase's weighted F1 and tail F1 (the
run's lowest frequency bucket) with the mean and spread across seeds, the gain over the best phase so
far with its 95% paired-bootstrap interval (rows paired by id within a seed, resampled with the same
indices across seeds, then the mean over seeds), the extra trainable parameters and training time.
The rules read `study.json` and the runs' predictions.csv only, so anyone can recompute them.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loralab.config._common import closest
from loralab.errors import ConfigError, LoralabError, Problem
from loralab.evaluate.bootstrap import DEFAULT_RESAMPLES, metric_values
from loralab.experiments.record import Decision, PhaseOutcome, RunRecord, StudyRecord
from loralab.experiments.spec import RULE_KEYS
from loralab.report.compare import METRIC_NAMES, align, tail_classes
from loralab.report.load import Run, load_run

GAIN_METRICS = ("weighted_f1", "macro_f1", "accuracy", "tail_f1")
# PEFT's method comparison (MetaMathQA -> GSM8K) reports a standard error of about 1.4 accuracy points
# for one run, so a 2-point gate on one seed sits within about 1.4 standard errors of no difference.
NOISE_NOTE = (
    "one seed's 2-point gate can be noise (PEFT's method comparison on GSM8K has a standard error of "
    "about 1.4 points on one run); add seeds (--seeds 42,43,44) before trusting it"
)


@dataclass(frozen=True)
class RulesConfig:
    """The thresholds of the rules; seed 000's values are the defaults (the study file's `rules:`)."""

    target_weighted_f1: float = 0.85
    target_tail_f1: float = 0.70
    ffn_needed_tail_f1: float = 0.60
    adopt_gain: float = 0.02
    min_gain: float = 0.005
    metric: str = "weighted_f1"  # the metric the gain is measured on
    n_resamples: int = DEFAULT_RESAMPLES
    bootstrap_seed: int = 0

    @staticmethod
    def from_mapping(data: Any, file: str = "<study>", prefix: str = "study.rules") -> RulesConfig:
        """Validate a `rules:` mapping: every problem at once, an unknown key with the closest known one."""
        if data is None:
            return RulesConfig()
        if not isinstance(data, dict):
            raise ConfigError(
                [
                    Problem(
                        file, prefix, f"expected a mapping, got {data!r}", "write `rules: {adopt_gain: 0.02}`"
                    )
                ]
            )
        known = list(RULE_KEYS)  # the study file's keys; the bootstrap's settings are not among them
        problems: list[Problem] = []
        values: dict[str, Any] = {}
        for key, value in data.items():
            where = f"{prefix}.{key}"
            if key not in known:
                guess = closest(str(key), known)
                if guess:
                    problems.append(
                        Problem(
                            file,
                            where,
                            f"unknown rule `{key}`; did you mean `{guess}`?",
                            f"rename it to `{guess}`",
                        )
                    )
                else:
                    problems.append(
                        Problem(file, where, f"unknown rule `{key}`", "use one of " + ", ".join(known))
                    )
                continue
            problem = _check_value(key, value)
            if problem:
                problems.append(Problem(file, where, problem[0], problem[1]))
                continue
            values[key] = value if key == "metric" else float(value)
        if problems:
            raise ConfigError(problems)
        return RulesConfig(**values)

    def to_mapping(self) -> dict[str, Any]:
        return asdict(self)

    def study_mapping(self) -> dict[str, Any]:
        """The study file's `rules:`: the six keys of the shared format, the bootstrap's only when changed."""
        out = asdict(self)
        for key in ("n_resamples", "bootstrap_seed"):
            if out[key] == getattr(RulesConfig, key):
                del out[key]
        return out


def _check_value(key: str, value: Any) -> tuple[str, str] | None:
    if key == "metric":
        if value not in GAIN_METRICS:
            return f"unknown metric {value!r}", "use one of " + ", ".join(GAIN_METRICS)
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"expected a number, got {value!r}", "write e.g. 0.02 for 2 points"
    if not 0 <= value <= 1:
        return (
            f"{value!r} is outside 0-1 (F1 and gains are fractions: 2 points = 0.02)",
            "give a value in 0-1",
        )
    return None


def rules_callback(rules: RulesConfig) -> Callable[[StudyRecord, str, Path], PhaseOutcome]:
    """The runner's `after_phase`: the rules evaluated after each phase."""

    def after_phase(record: StudyRecord, phase: str, study_dir: Path) -> PhaseOutcome:
        return decide_after_phase(record, phase, study_dir, rules)

    return after_phase


def rules_from_study(study: dict[str, Any], file: str) -> RulesConfig:
    """The `rules:` of a parsed study file (`{"study": {...}}` or the inner mapping)."""
    inner = study.get("study", study) if isinstance(study, dict) else {}
    return RulesConfig.from_mapping(inner.get("rules") if isinstance(inner, dict) else None, file)


# ---- the numbers of one phase ------------------------------------------------------------------


@dataclass
class PhaseRuns:
    """The finished runs of one phase (one run name, one or more seeds)."""

    phase: str
    name: str | None
    done: list[RunRecord]
    failed: list[RunRecord]

    def values(self, metric: str) -> dict[int, float]:
        return {r.seed: float(r.metrics[metric]) for r in self.done if r.metrics and metric in r.metrics}


def _spread(per_seed: dict[int, float]) -> dict[str, Any]:
    vals = list(per_seed.values())
    if not vals:
        return {"mean": None, "per_seed": {}}
    out: dict[str, Any] = {
        "mean": statistics.fmean(vals),
        "per_seed": {str(s): v for s, v in per_seed.items()},
    }
    if len(vals) > 1:
        out.update(min=min(vals), max=max(vals), std=statistics.stdev(vals))
    return out


def phase_order(record: StudyRecord) -> list[str]:
    order: list[str] = []
    for r in record.runs:
        if r.phase and r.phase not in order:
            order.append(r.phase)
    return order


def phase_runs(record: StudyRecord, phase: str, metric: str) -> PhaseRuns:
    """The phase's runs; with several run names in one phase (a grid), the one with the best mean."""
    runs = [r for r in record.runs if r.phase == phase]
    names = list(dict.fromkeys(r.name for r in runs))

    def score(name: str) -> float:
        vals = [
            r.metrics[metric]
            for r in runs
            if r.name == name and r.status == "done" and r.metrics and metric in r.metrics
        ]
        return statistics.fmean(vals) if vals else float("-inf")

    name = max(names, key=score) if names else None
    mine = [r for r in runs if r.name == name]
    done = [r for r in mine if r.status == "done" and r.metrics and metric in r.metrics]
    failed = [r for r in mine if r.status == "failed" or (r.status == "done" and r not in done)]
    return PhaseRuns(phase, name, done, failed)


def _run_dir(run: RunRecord, study_dir: Path) -> Path | None:
    if not run.run_dir:
        return None
    p = Path(run.run_dir)
    p = p if p.is_absolute() else study_dir / p
    if not (p / "predictions.csv").is_file() and (p / "run" / "predictions.csv").is_file():
        p = p / "run"  # the run's folder rather than the `loralab train` directory inside it
    return p


def _load(run: RunRecord, study_dir: Path) -> Run | None:
    path = _run_dir(run, study_dir)
    if path is None:
        return None
    try:
        return load_run(path, name=run.id)
    except LoralabError:
        return None


# ---- the gain, paired ----------------------------------------------------------------------------


@dataclass
class Gain:
    mean: float
    low: float | None
    high: float | None
    per_seed: list[dict[str, Any]]
    paired_seeds: list[int]
    note: str | None = None

    @property
    def crosses_zero(self) -> bool | None:
        if self.low is None or self.high is None:
            return None
        return self.low <= 0 <= self.high

    def to_json(self) -> dict[str, Any]:
        return {
            "mean": self.mean,
            "points": self.mean * 100,
            "low": self.low,
            "high": self.high,
            "crosses_zero": self.crosses_zero,
            "paired_seeds": self.paired_seeds,
            "per_seed": self.per_seed,
            **({"note": self.note} if self.note else {}),
        }


def _encode(*columns: Any) -> tuple[list[np.ndarray], int]:
    classes = sorted(set().union(*(set(c) for c in columns)))
    index = {c: i for i, c in enumerate(classes)}
    return [np.asarray([index[v] for v in c], dtype=np.int64) for c in columns], len(classes)


def paired_gain(
    pairs: list[tuple[int, Run, Run]], metric: str, n_resamples: int, seed: int
) -> tuple[list[dict[str, Any]], float, float]:
    """Per seed: B minus A on the same test rows (aligned by id); and the 95% interval of the mean over
    seeds, every seed's rows resampled with the same indices (the test rows are the same rows)."""
    prepared = []
    for s, a, b in pairs:
        joined = align(a, b)
        (gold, pa, pb), n = _encode(joined["gold_a"], joined["pred_a"], joined["pred_b"])
        classes = sorted(set(joined["gold_a"]) | set(joined["pred_a"]) | set(joined["pred_b"]))
        tail = [classes.index(c) for c in tail_classes(a) if c in classes]
        prepared.append((s, gold, pa, pb, n, tail))
    rng = np.random.default_rng(seed)
    lengths = {len(p[1]) for p in prepared}
    rows = lengths.pop() if len(lengths) == 1 else 0
    shared = rng.integers(0, rows, size=(n_resamples, rows)) if rows else None
    deltas, per_seed = [], []
    for s, gold, pa, pb, n, tail in prepared:
        idx = shared if shared is not None else rng.integers(0, len(gold), size=(n_resamples, len(gold)))
        full = np.arange(len(gold))[None, :]
        diff = float(
            metric_values(gold[full], pb[full], n, metric, tail)[0]
            - metric_values(gold[full], pa[full], n, metric, tail)[0]
        )
        d = metric_values(gold[idx], pb[idx], n, metric, tail) - metric_values(
            gold[idx], pa[idx], n, metric, tail
        )
        lo, hi = np.percentile(d, [2.5, 97.5])
        per_seed.append({"seed": s, "diff": diff, "low": float(lo), "high": float(hi), "n_rows": len(gold)})
        deltas.append(d)
    lo, hi = np.percentile(np.mean(deltas, axis=0), [2.5, 97.5])
    return per_seed, float(lo), float(hi)


def gain_over(cur: PhaseRuns, best: PhaseRuns, study_dir: Path, rules: RulesConfig) -> Gain:
    """The gain of `cur` over `best` on rules.metric, paired by seed and test row where both have
    predictions; else the difference of the means, without an interval (said in `note`)."""
    m = rules.metric
    cur_v, best_v = cur.values(m), best.values(m)
    common = sorted(set(cur_v) & set(best_v))
    pairs: list[tuple[int, Run, Run]] = []
    missing: list[int] = []
    for s in common:
        a = _load(next(r for r in best.done if r.seed == s), study_dir)
        b = _load(next(r for r in cur.done if r.seed == s), study_dir)
        if a is None or b is None:
            missing.append(s)
        else:
            pairs.append((s, a, b))
    if not common:
        mean = statistics.fmean(cur_v.values()) - statistics.fmean(best_v.values())
        return Gain(
            mean,
            None,
            None,
            [],
            [],
            "the phases share no finished seed: difference of the means, no interval",
        )
    if missing or not pairs:
        mean = statistics.fmean(cur_v[s] - best_v[s] for s in common)
        return Gain(
            mean, None, None, [], common,
            f"predictions.csv missing or unreadable for seed(s) {missing}: no paired interval",
        )  # fmt: skip
    try:
        per_seed, lo, hi = paired_gain(pairs, m, rules.n_resamples, rules.bootstrap_seed)
    except LoralabError as e:  # different test sets: the rows cannot be paired
        mean = statistics.fmean(cur_v[s] - best_v[s] for s in common)
        return Gain(mean, None, None, [], common, f"no paired interval: {e}")
    # The recorded metrics (metrics.json) give the gain itself; the bootstrap gives its interval.
    mean = statistics.fmean(cur_v[s] - best_v[s] for s in common)
    return Gain(mean, lo, hi, per_seed, common)


# ---- the rules ----------------------------------------------------------------------------------


def _fmt(v: float | None, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _phase_inputs(pr: PhaseRuns) -> dict[str, Any]:
    ts = [r.train_seconds for r in pr.done if r.train_seconds is not None]
    params = next((r.trainable_params for r in pr.done if r.trainable_params is not None), None)
    return {
        "run": pr.name,
        "seeds": sorted(r.seed for r in pr.done),
        "failed_seeds": sorted(r.seed for r in pr.failed),
        "weighted_f1": _spread(pr.values("weighted_f1")),
        "tail_f1": _spread(pr.values("tail_f1")),
        "trainable_params": params,
        "train_seconds": statistics.fmean(ts) if ts else None,
    }


@dataclass
class _State:
    best: PhaseRuns | None = None
    best_inputs: dict[str, Any] | None = None


def _cost(gain: Gain, cur: dict[str, Any], best: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    p1, p0 = cur.get("trainable_params"), best.get("trainable_params")
    if p1 is not None and p0 is not None:
        out["extra_trainable_params"] = p1 - p0
        out["params_ratio"] = p1 / p0 if p0 else None
    t1, t0 = cur.get("train_seconds"), best.get("train_seconds")
    ratio = t1 / t0 if t1 is not None and t0 else None
    out["time_ratio"] = ratio
    time_text = f"{ratio:.2f}x time" if ratio is not None else "time unknown"
    out["summary"] = f"{gain.mean * 100:+.1f} points × {time_text}"
    if p1 is not None and p0 is not None:
        out["summary"] += f", {p1 - p0:+,} trainable parameters"
    return out


def _evaluate(pr: PhaseRuns, state: _State, study_dir: Path, rules: RulesConfig) -> Decision | None:
    """The decision after one phase, updating the best phase so far; None if the phase never ran."""
    if not pr.done and not pr.failed:
        return None
    inputs: dict[str, Any] = {"phase": pr.phase, **_phase_inputs(pr), "rules": rules.to_mapping()}
    best_name = state.best.name if state.best else None
    inputs["best_before"] = best_name
    partial = ""
    if pr.failed:
        ids = ", ".join(r.id for r in pr.failed)
        partial = f" (decided on {len(pr.done)} of {len(pr.done) + len(pr.failed)} runs: {ids} failed)"
    if not pr.done:
        inputs["selected"] = best_name
        why = f"the phase failed ({', '.join(r.id for r in pr.failed)}), so it cannot be judged"
        if state.best is None:
            return Decision(pr.phase, "phase failed", inputs, f"advance — {why}; no phase to select yet")
        return Decision(
            pr.phase, "phase failed", inputs, f"keep previous — {why}; {best_name} stays the best"
        )
    wf1 = inputs["weighted_f1"]["mean"]
    tail = inputs["tail_f1"]["mean"]
    met = (
        wf1 is not None
        and tail is not None
        and wf1 >= rules.target_weighted_f1
        and tail >= rules.target_tail_f1
    )
    inputs["target"] = {"weighted_f1": rules.target_weighted_f1, "tail_f1": rules.target_tail_f1, "met": met}
    spread = ""
    if "min" in inputs["weighted_f1"]:
        w = inputs["weighted_f1"]
        spread = f" (mean of {len(pr.done)} seeds, {_fmt(w['min'])}-{_fmt(w['max'])})"
    numbers = f"weighted F1 {_fmt(wf1)}{spread}, tail F1 {_fmt(tail)}"
    gain: Gain | None = None
    if state.best is not None and state.best_inputs is not None:
        gain = gain_over(pr, state.best, study_dir, rules)
        inputs["gain"] = {"metric": rules.metric, "n_resamples": rules.n_resamples, **gain.to_json()}
        inputs["cost"] = _cost(gain, inputs, state.best_inputs)
    verdict, rule, select = _verdict(pr, state, inputs, gain, met, numbers, rules)
    inputs["selected"] = select.name if select else None
    if select is pr:
        state.best, state.best_inputs = pr, inputs
    return Decision(pr.phase, rule, inputs, verdict + partial)


def _gain_text(gain: Gain, best: str | None, rules: RulesConfig) -> str:
    name = METRIC_NAMES.get(rules.metric, rules.metric)
    text = f"{name} gain {gain.mean * 100:+.2f} points over {best}"
    if gain.low is not None and gain.high is not None:
        text += f" (95% paired-bootstrap interval {gain.low * 100:+.2f} to {gain.high * 100:+.2f})"
    elif gain.note:
        text += f" ({gain.note})"
    return text


def _verdict(
    pr: PhaseRuns,
    state: _State,
    inputs: dict[str, Any],
    gain: Gain | None,
    met: bool,
    numbers: str,
    rules: RulesConfig,
) -> tuple[str, str, PhaseRuns | None]:
    tail = inputs["tail_f1"]["mean"]
    if met:
        rule = f"weighted F1 >= {rules.target_weighted_f1:g} and tail F1 >= {rules.target_tail_f1:g}"
        extra = f"; {_gain_text(gain, state.best.name if state.best else None, rules)}" if gain else ""
        return f"stop: target met — {numbers}{extra}", rule, pr
    if gain is None:  # the first phase judged: no gain to measure yet
        if tail is not None and tail < rules.ffn_needed_tail_f1:
            rule = f"tail F1 < {rules.ffn_needed_tail_f1:g}: the FFN phase is necessary"
            return (
                f"advance — {numbers}: tail F1 below {rules.ffn_needed_tail_f1:g}, "
                "the FFN phase is necessary",
                rule,
                pr,
            )
        rule = "target not met"
        return (
            f"advance — {numbers}: the target is not met; tail F1 >= {rules.ffn_needed_tail_f1:g}, so §4.2 "
            "points at hyperparameter tuning before the FFN, and the next phase measures what the FFN adds",
            rule,
            pr,
        )
    assert state.best is not None
    text = f"{numbers}; {_gain_text(gain, state.best.name, rules)}; cost {inputs['cost']['summary']}"
    seeds = len(gain.paired_seeds)
    on = "" if seeds <= 1 else f" (here the mean of {seeds} seeds, and still its interval crosses zero)"
    noise = f"; the interval crosses zero: {NOISE_NOTE}{on}" if gain.crosses_zero else ""
    if gain.mean >= rules.adopt_gain:
        rule = f"gain >= {rules.adopt_gain * 100:g} points: adopt"
        return f"adopt — {text}{noise}", rule, pr
    if gain.mean < rules.min_gain:
        rule = f"gain < {rules.min_gain * 100:g} point: keep the cheaper phase"
        word = "point" if rules.min_gain * 100 <= 1 else "points"
        return f"keep previous: gain below {rules.min_gain * 100:g} {word} — {text}", rule, state.best
    if gain.crosses_zero:
        rule = "95% paired-bootstrap interval of the gain crosses 0"
        return f"not significant — {text}{noise}", rule, state.best
    rule = (
        f"{rules.min_gain * 100:g} <= gain < {rules.adopt_gain * 100:g} points"
        + (" (no interval)" if gain.crosses_zero is None else ", interval above 0")
        + ": better, below the adoption gate"
    )
    return (
        f"advance — {text}: below the {rules.adopt_gain * 100:g}-point adoption gate, "
        "the next phase is tried",
        rule,
        pr,
    )


STOP_WORDS = ("stop: target met", "adopt")


def decide_after_phase(record: StudyRecord, phase: str, study_dir: Path, rules: RulesConfig) -> PhaseOutcome:
    """The rules after `phase`, replaying the phases before it (in the record's order) to know the best
    phase so far. Deterministic: the bootstrap is seeded (rules.bootstrap_seed)."""
    state = _State()
    decision: Decision | None = None
    for p in phase_order(record):
        pr = phase_runs(record, p, rules.metric)
        d = _evaluate(pr, state, study_dir, rules)
        if p == phase:
            decision = d
            break
    selected = state.best.name if state.best else None
    if decision is None:
        return PhaseOutcome(decisions=[], stop=False, reason=None, selected=selected)
    stop = decision.verdict.startswith(STOP_WORDS)
    reason = f"after {phase}: {decision.verdict}" if stop else None
    return PhaseOutcome(decisions=[decision], stop=stop, reason=reason, selected=selected)


def decide_all(record: StudyRecord, study_dir: Path, rules: RulesConfig) -> PhaseOutcome:
    """Every phase's decision in order (what `after_phase` produced, recomputed from the record)."""
    state = _State()
    out = PhaseOutcome()
    for p in phase_order(record):
        d = _evaluate(phase_runs(record, p, rules.metric), state, study_dir, rules)
        if d is None:
            continue
        out.decisions.append(d)
        if d.verdict.startswith(STOP_WORDS) and not out.stop:
            out.stop, out.reason = True, f"after {p}: {d.verdict}"
    out.selected = state.best.name if state.best else None
    return out
