"""`loralab recommend --validate`: the recommendation checked by a short study on this machine, within
a time budget.

1. The training file is split (seed 42) into a held-out slice and a trial pool, written in the
   original format (seq-cls: stratified, about 10% capped at 1,000 rows; causal-lm/seq2seq: 10% capped
   at 64 rows, since scoring generates text). The experiment's test file is never read: selecting on
   it would make its score optimistic.
2. A calibration run (8 steps) measures what a run costs besides its steps (process start, model
   load, tokenising, scoring the slice) and the seconds per step; the steps per trial are chosen so
   that every planned trial and a 10% margin fit the budget.
3. The trials are one study (`run_study`: each run its own `loralab train` process): the recommended
   learning rate, half and twice it (a factor-2 grid: the rule should be close, and a wide grid is
   noisy after a short trial); then, when the measured times leave room, the rank halved and doubled
   at the chosen rate, lora_alpha scaled with r so that the update's scale stays the same.
4. The plain recommendation is kept unless a trial beats it by a clear margin (0.5 point of weighted
   F1, or 1% lower perplexity): a short trial on a small slice is noisy, and the rule is the prior.

A run still going when the budget ends is stopped, so the validation ends within its budget.
"""

from __future__ import annotations

import copy
import csv
import itertools
import json
import math
import os
import random
import signal
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from loralab.data import Row, extract, read_rows, stratified_split
from loralab.data.fields import lm_read_fields
from loralab.errors import ConfigError, LoralabError, Problem
from loralab.experiments.executor import POLL_SECONDS, LocalExecutor
from loralab.experiments.jobs import Finished, Job
from loralab.experiments.record import RunRecord, StudyRecord
from loralab.experiments.runner import run_study

SEED = 42
CALIBRATION_STEPS = 8
MIN_STEPS = 30  # fewer steps say more about the warmup than about the learning rate
BUDGET_MARGIN = 1.1  # 10% of the budget is kept back for what the calibration cannot foresee
LR_FACTORS = (1.0, 2.0, 0.5)  # run in this order: the plain recommendation first
RANK_FACTORS = (0.5, 2.0)
F1_MARGIN = 0.005  # 0.5 point of weighted F1
PERPLEXITY_MARGIN = 0.01  # 1% lower perplexity
HELDOUT_FRACTION = 0.1
HELDOUT_CAP = {"seq-cls": 1000, "lm": 64}  # lm: scoring generates text for every held-out row
POOL_CAP = 20_000  # a trial sees at most steps x batch rows; tokenising more only costs time
MIN_ROWS = 20
STOP_GRACE_S = 2.0  # SIGTERM, then SIGKILL after this long
TAIL_S = 1.0  # kept free at the deadline for what the study does after its last run
BUDGET_STATUS = "skipped (budget)"
STAGE_FILES = ("data", "calibration", "study", "calibration.yaml", "trial.yaml")


@dataclass
class Trial:
    """One row of the table."""

    name: str  # e.g. "lr=1e-3" or "lr=1e-3,r=32"
    overrides: dict[str, Any]  # dotted keys -> values, to apply to the recommendation's YAML
    metric: float | None  # the task metric on the held-out slice (None if the run did not finish)
    seconds: float | None  # wall seconds of the run's process
    status: str  # "done" | "failed" | "skipped (budget)"
    error: str | None = None


@dataclass
class Validation:
    metric: str  # "weighted_f1" (seq-cls, higher is better) or "perplexity" (causal-lm, seq2seq)
    higher_is_better: bool
    trials: list[Trial]
    best: Trial  # the chosen trial (may be the plain recommendation itself)
    baseline: Trial  # the plain recommendation's trial (its overrides are {})
    steps: int  # optimizer steps per trial
    train_rows: int  # rows each trial trains on
    heldout_rows: int
    budget_s: float
    seconds: float  # wall time of the whole validation, measured
    study_dir: Path
    reason: str  # one line: why `best` was chosen (or why the plain one was kept)
    notes: list[str] = field(default_factory=list)  # calibration figures, why trials were skipped


@dataclass
class Calibration:
    overhead_s: float  # a run's wall time besides its optimizer steps
    step_s: float  # seconds per optimizer step
    study_s: float  # the study's own time around its runs (loading, record, report)


# ---- the data ----------------------------------------------------------------------------------


def task_kind(config: dict[str, Any]) -> str:
    """ "seq-cls" or "lm" (causal-lm and seq2seq are scored alike: loss, perplexity, generations)."""
    task = _section(config, "model").get("task")
    task_type = _lora_config(config).get("task_type")
    return "seq-cls" if task == "seq-cls" or (task is None and task_type == "SEQ_CLS") else "lm"


def _section(config: dict[str, Any], key: str) -> dict[str, Any]:
    value = config.get(key)
    return value if isinstance(value, dict) else {}


def _lora_config(config: dict[str, Any]) -> dict[str, Any]:
    return _section(_section(config, "lora"), "config")


def read_training_rows(config: dict[str, Any]) -> tuple[list[Row], list[str], str]:
    """The training file's usable rows as `loralab train` reads them, its columns, and the format
    the slices are written in (csv, tsv, else jsonl)."""
    d = _section(config, "data")
    if not d.get("train_file"):
        raise ConfigError([Problem("recommendation", "data.train_file", "is not set", "pass --data FILE")])
    path = Path(str(d["train_file"])).expanduser().absolute()
    if task_kind(config) == "seq-cls":
        if not d.get("label_field"):
            raise ConfigError([Problem(str(path), "data.label_field", "is not set", "name the label column")])
        text, template, label = d.get("text_field"), d.get("text_template"), d.get("label_field")
    else:
        keys = ("prompt_field", "text_field", "text_template", "response_field", "label_field")
        fields = lm_read_fields(**{k: d.get(k) for k in keys})
        if fields is None:
            raise ConfigError(
                [Problem(str(path), "data", "needs a prompt and a response", "name both columns")]
            )
        text, template, label = fields
    rowset = read_rows(path, text_field=text, text_template=template, label_field=label)
    fmt = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv"}.get(path.suffix.lower(), "jsonl")
    return rowset.rows, rowset.columns, fmt


def split_rows(rows: list[Row], kind: str) -> tuple[list[Row], list[Row]]:
    """(held-out, pool), deterministic (seed 42), each in the file's order."""
    if len(rows) < MIN_ROWS:
        raise ConfigError(
            [Problem("data.train_file", "", f"{len(rows)} usable rows are too few to validate on")]
        )
    size = min(HELDOUT_FRACTION, HELDOUT_CAP[kind] / len(rows))
    if kind == "seq-cls":
        # stratified_split keeps a row of every class in the pool: no held-out class is untrained.
        pool, heldout = stratified_split(rows, [r.label or "" for r in rows], size, SEED)
    else:
        chosen = set(random.Random(SEED).sample(range(len(rows)), max(1, round(len(rows) * size))))
        heldout = [r for i, r in enumerate(rows) if i in chosen]
        pool = [r for i, r in enumerate(rows) if i not in chosen]
    return heldout, subsample(pool, kind, POOL_CAP)


def subsample(rows: list[Row], kind: str, n: int) -> list[Row]:
    """About `n` of the rows (seq-cls: stratified, at least one per class), in the file's order."""
    if n >= len(rows):
        return rows
    if kind == "seq-cls":
        return extract(rows, [r.label or "" for r in rows], n / len(rows), SEED)
    keep = set(random.Random(SEED).sample(range(len(rows)), n))
    return [r for i, r in enumerate(rows) if i in keep]


def write_rows(path: Path, fmt: str, columns: list[str], rows: list[Row]) -> Path:
    """The rows with all their fields, as the original file had them (CSV/TSV header, or JSON lines)."""
    path = path.with_suffix({"csv": ".csv", "tsv": ".tsv"}.get(fmt, ".jsonl"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        if fmt in ("csv", "tsv"):
            w = csv.DictWriter(f, fieldnames=columns, delimiter="\t" if fmt == "tsv" else ",")
            w.writeheader()
            w.writerows({c: r.fields.get(c, "") for c in columns} for r in rows)
        else:
            f.writelines(json.dumps(r.fields, ensure_ascii=False, default=str) + "\n" for r in rows)
    return path


# ---- the trial experiment ----------------------------------------------------------------------


def effective_batch(config: dict[str, Any]) -> int:
    args = _section(config, "training_args")
    micro, accum = args.get("per_device_train_batch_size"), args.get("gradient_accumulation_steps")
    return max(1, int(micro or 8)) * max(1, int(accum or 1))


def warmup_fraction(args: dict[str, Any], train_rows: int, batch: int) -> float:
    """The recommendation's warmup as a fraction of the run, so that a trial (same scheduler, fewer
    steps) warms up for the same share of its steps and its schedule completes within them."""
    steps, ratio = args.get("warmup_steps"), args.get("warmup_ratio")
    if not steps and isinstance(ratio, int | float):
        return float(ratio)  # transformers 4's name for the fraction
    if not isinstance(steps, int | float) or steps <= 0:
        return 0.0
    if steps < 1:
        return float(steps)
    total = args.get("max_steps")
    if not isinstance(total, int) or total <= 0:
        total = max(1, math.ceil(train_rows / batch * float(args.get("num_train_epochs") or 3)))
    return min(0.5, float(steps) / total)


# Evaluation and checkpoint keys a trial drops: it evaluates once, at its end, on the held-out slice.
_DROPPED_ARGS = ("warmup_ratio", "evaluation_strategy", "eval_steps", "save_steps", "save_total_limit",
                 "load_best_model_at_end", "metric_for_best_model", "greater_is_better")  # fmt: skip


def trial_config(
    config: dict[str, Any], train: Path, heldout: Path, steps: int, warmup: float
) -> dict[str, Any]:
    """The recommendation trained for `steps` on `train` and scored on `heldout` (its test file), without
    evaluation, checkpoints or tracking during the run; model, LoRA, scheduler and batch unchanged."""
    raw = copy.deepcopy(config)
    data = raw["data"] = dict(_section(raw, "data"))
    data["train_file"], data["test_file"] = str(train), str(heldout)
    for key in ("validation_file", "extract_ratio"):  # the trial's files are already the sample
        data.pop(key, None)
    args = raw["training_args"] = {
        k: v for k, v in _section(raw, "training_args").items() if k not in _DROPPED_ARGS
    }
    args.update(max_steps=steps, warmup_steps=warmup, eval_strategy="no", save_strategy="no")
    args.update(logging_steps=max(1, steps // 8), report_to="none")  # calibration: every step
    if "experiment" in raw:
        raw["experiment"] = {
            k: v for k, v in _section(raw, "experiment").items() if "early_stopping" not in k
        }
    raw.pop("early_stopping_patience", None)
    raw["tracking"] = {"backend": "none"}
    return raw


def write_yaml(path: Path, content: dict[str, Any], header: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(content, sort_keys=False, allow_unicode=True, default_flow_style=None)
    path.write_text(f"# {header}\n{text}", encoding="utf-8")
    return path


def lr_text(lr: float) -> str:
    """How the table names a learning rate: 1e-3, 5e-4, 1.5e-3."""
    mantissa, exponent = f"{lr:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def lr_runs(config: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(trial name, overrides) of the learning-rate trials, the plain recommendation first."""
    lr = _section(config, "training_args").get("learning_rate")
    if not isinstance(lr, int | float) or lr <= 0:
        raise ConfigError([Problem("recommendation", "training_args.learning_rate", f"is {lr!r}")])
    runs = []
    for factor in LR_FACTORS:
        value = float(f"{lr * factor:.3g}")
        runs.append((f"lr={lr_text(value)}", {} if factor == 1.0 else {"training_args.learning_rate": value}))
    return runs


def rank_overrides(lora_config: dict[str, Any], factor: float) -> dict[str, Any] | None:
    """r scaled by `factor` and lora_alpha with it, so that the update's scale (alpha/r, or
    alpha/sqrt(r) with rsLoRA) stays; None when the rank would not change."""
    r = int(lora_config.get("r") or 8)
    new = max(1, round(r * factor))
    if new == r:
        return None
    alpha = float(lora_config.get("lora_alpha") or 8)  # PEFT's default lora_alpha
    scaled = alpha * (math.sqrt(new / r) if lora_config.get("use_rslora") else new / r)
    value = int(scaled) if scaled.is_integer() else round(scaled, 2)
    return {"lora.config.r": new, "lora.config.lora_alpha": value}


# ---- running within the budget -----------------------------------------------------------------


class BudgetExecutor(LocalExecutor):
    """The local executor, one run at a time, that stops a run still going at `deadline` and starts
    none after it, so the validation ends within its budget whatever the estimates said; it measures
    each run's wall time, which the later estimates use."""

    def __init__(self, deadline: float):
        super().__init__(1, grace_seconds=STOP_GRACE_S)
        self.deadline = deadline
        self.cut: set[str] = set()  # ids of the runs stopped or refused at the deadline
        self.walls: dict[str, float] = {}
        self._refused: list[Finished] = []

    def submit(self, job: Job) -> None:
        if time.monotonic() >= self.deadline:
            self.cut.add(job.id)
            self._refused.append(Finished(job, -int(signal.SIGTERM), 0.0))
        else:
            super().submit(job)

    def running(self) -> int:
        return super().running() + len(self._refused)

    def wait(self) -> list[Finished]:
        if self._refused:
            refused, self._refused = self._refused, []
            return refused
        while self._running and all(r.proc.poll() is None for r in self._running):
            if time.monotonic() >= self.deadline:
                self._stop_all()
                break
            time.sleep(POLL_SECONDS)
        finished = super().wait()
        self.walls.update((f.job.id, f.seconds) for f in finished)
        return finished

    def _stop_all(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for r in (r for r in self._running if r.proc.poll() is None):
                self.cut.add(r.job.id)
                try:
                    os.killpg(r.proc.pid, sig)  # each run is its own process group (start_new_session)
                except (ProcessLookupError, PermissionError):
                    r.proc.send_signal(sig)
            end = time.monotonic() + self.grace_seconds
            while time.monotonic() < end and any(r.proc.poll() is None for r in self._running):
                time.sleep(POLL_SECONDS)


def too_small(budget_s: float, need_s: float, why: str) -> ConfigError:
    fix = f"pass --budget {max(1, math.ceil(need_s / 60))}m or drop --validate"
    return ConfigError([Problem("--budget", "", f"{budget_s:.0f} s is too short: {why}", fix)])


def plan_steps(
    cal: Calibration, *, budget_s: float, elapsed_s: float, max_steps: int, n_lr: int, n_rank: int
) -> tuple[int, int]:
    """(steps per trial, trials planned): all trials when each still gets twice the minimum of steps
    (or the one pass over the pool), else the learning rates alone, which matter most."""
    usable = budget_s / BUDGET_MARGIN - elapsed_s
    step_s = max(cal.step_s, 1e-4)

    def steps_for(n: int, stages: int) -> int:
        return math.floor((usable - stages * cal.study_s - n * cal.overhead_s) / (n * step_s))

    target = max(MIN_STEPS, max_steps)
    if n_rank and steps_for(n_lr + n_rank, 2) >= min(target, 2 * MIN_STEPS):
        return min(steps_for(n_lr + n_rank, 2), target), n_lr + n_rank
    if steps_for(n_lr, 1) >= MIN_STEPS:
        return min(steps_for(n_lr, 1), target), n_lr
    need = BUDGET_MARGIN * (elapsed_s + cal.study_s + n_lr * (cal.overhead_s + MIN_STEPS * step_s))
    why = (
        f"validating needs at least {need:.0f} s on this machine: a calibration run, then {n_lr} trials of "
        f"{MIN_STEPS} steps at {cal.overhead_s:.1f} s per run besides its steps and {step_s:.3f} s per step"
    )
    raise too_small(budget_s, need, why)


def run_name(trial_name: str) -> str:
    """A study run's name (a folder name) for a trial's: lr=1e-3,r=32 -> lr1e-3-r32."""
    return trial_name.replace("=", "").replace(",", "-")


def step_seconds(rec: RunRecord, batch: int) -> float | None:
    """Seconds per optimizer step from the run's train_log.jsonl: the median over its logging
    intervals, leaving out the first. The first steps pay one-off costs (allocation, thread pools) that
    belong to a run's fixed cost; the median ignores an interval stalled by another process."""
    try:
        text = (Path(str(rec.run_dir)) / "train_log.jsonl").read_text(encoding="utf-8")
    except OSError:
        return None
    logs = [json.loads(line) for line in text.splitlines() if line.strip()]
    points = [
        (x["step"], x["samples_per_s"]) for x in logs if x.get("kind") == "train" and x.get("samples_per_s")
    ]
    # An interval lasts its samples over its throughput (an epoch's short last batch errs long).
    per_step = [batch / b[1] for a, b in itertools.pairwise(points) if b[0] > a[0]]
    return statistics.median(per_step) if per_step else None


# ---- choosing ----------------------------------------------------------------------------------


def choose(
    trials: list[Trial],
    baseline: Trial,
    *,
    metric: str,
    higher_is_better: bool,
    heldout_rows: int,
    steps: int,
) -> tuple[Trial, str]:
    """The trial to recommend and why: the best by the metric when it beats the plain recommendation
    by a clear margin (F1_MARGIN points, PERPLEXITY_MARGIN lower), else the plain recommendation."""
    done = [t for t in trials if t.status == "done" and t.metric is not None]
    where = f"on {heldout_rows:,} held-out rows ({steps} steps per trial)"
    if not done:
        return (
            baseline,
            f"kept the plain {baseline.name}: no trial finished ({baseline.error or baseline.status})",
        )
    sign = 1.0 if higher_is_better else -1.0
    best = max(done, key=lambda t: (sign * (t.metric or 0.0), t is baseline))  # a tie keeps the plain one
    if baseline not in done:
        return best, f"{best.name} scored best {where}; the plain {baseline.name} did not finish"
    if best is baseline:
        return baseline, f"the plain {baseline.name} scored best {where}"
    assert best.metric is not None and baseline.metric is not None
    if metric == "perplexity":
        gain = (baseline.metric - best.metric) / baseline.metric
        by = f"{gain:.1%} in perplexity ({best.metric:.4g} vs {baseline.metric:.4g})"
        clear, noise = gain > PERPLEXITY_MARGIN, f"{PERPLEXITY_MARGIN:.0%}"
    else:
        gain = sign * (best.metric - baseline.metric)
        by = f"{100 * gain:.1f} points of {metric_text(metric)}"
        clear, noise = gain > F1_MARGIN, f"{100 * F1_MARGIN:g}-point"
    if clear:
        return best, f"{best.name} beat the plain {baseline.name} by {by} {where}"
    return baseline, (
        f"kept the plain {baseline.name}: the best trial, {best.name}, was better by only {by} {where}, "
        f"within the {noise} noise margin of a short trial"
    )


def metric_text(metric: str) -> str:
    return {"weighted_f1": "weighted F1"}.get(metric, metric)


def _trial(
    name: str, overrides: dict[str, Any], record: StudyRecord, ex: BudgetExecutor, metric: str
) -> Trial:
    rec = next(r for r in record.runs if r.name == run_name(name))
    seconds = ex.walls.get(rec.id)
    if rec.id in ex.cut:
        why = "stopped when the budget ran out" if seconds else "no time left to start it"
        return Trial(name, overrides, None, seconds, BUDGET_STATUS, why)
    if rec.status != "done":
        cause = f" ({rec.diagnosis.cause})" if rec.diagnosis else ""
        return Trial(name, overrides, None, seconds, "failed", f"{rec.error}{cause}; log: {rec.log}")
    value = (rec.metrics or {}).get(metric)
    if value is None or not math.isfinite(value):
        return Trial(name, overrides, None, seconds, "failed", f"{metric} is {value}; log: {rec.log}")
    return Trial(name, overrides, float(value), seconds, "done")


# ---- the validation ----------------------------------------------------------------------------


def validate_recommendation(
    config: dict[str, Any], *, budget_s: float, out_dir: Path, console: Any | None = None, quiet: bool = False
) -> Validation:
    """Run the short study of the module docstring in `out_dir` (data slices, calibration, study) and
    return its table, choice and reason, within `budget_s` seconds of wall time."""
    return _Validator(config, float(budget_s), Path(out_dir), _printer(console, quiet), quiet).run()


class _Validator:
    """One validation: its clock, folder and settings, shared by its stages."""

    def __init__(
        self, config: dict[str, Any], budget_s: float, out: Path, say: Callable[[str], None], quiet: bool
    ):
        self.t0 = time.monotonic()
        self.config, self.budget_s, self.say, self.quiet = config, budget_s, say, quiet
        self.out = out.expanduser().absolute()
        self.kind = task_kind(config)
        self.metric = "weighted_f1" if self.kind == "seq-cls" else "perplexity"
        self.seed, self.batch = _seed(config), effective_batch(config)
        self.deadline = self.t0 + budget_s - TAIL_S
        self.notes: list[str] = []

    def left(self) -> float:
        """Seconds left for planned work (the 10% margin kept back)."""
        return self.budget_s / BUDGET_MARGIN - (time.monotonic() - self.t0)

    def run(self) -> Validation:
        used = [n for n in STAGE_FILES if (self.out / n).exists()]
        if used:
            raise LoralabError(
                f"{self.out} already holds a validation ({', '.join(used)}): give another folder"
            )
        lr_trials = lr_runs(self.config)
        ranks = [o for f in RANK_FACTORS if (o := rank_overrides(_lora_config(self.config), f)) is not None]
        rows, columns, fmt = read_training_rows(self.config)
        heldout, pool = split_rows(rows, self.kind)
        heldout_file = write_rows(self.out / "data" / "heldout", fmt, columns, heldout)
        pool_file = write_rows(self.out / "data" / "pool", fmt, columns, pool)
        warmup = warmup_fraction(_section(self.config, "training_args"), len(rows), self.batch)
        self.say(f"validate: {len(heldout):,} held-out rows, {len(pool):,} in the trial pool; calibrating")
        cal_config = trial_config(self.config, pool_file, heldout_file, CALIBRATION_STEPS, warmup)
        cal = self.calibrate(write_yaml(self.out / "calibration.yaml", cal_config, "the calibration run"))
        # An LM run sets the first 10% of its training file aside as validation (train's tasks.py).
        trainable = len(pool) if self.kind == "seq-cls" else len(pool) - max(1, len(pool) // 10)
        elapsed, one_pass = time.monotonic() - self.t0, math.ceil(trainable / self.batch)
        steps, planned = plan_steps(
            cal,
            budget_s=self.budget_s,
            elapsed_s=elapsed,
            max_steps=one_pass,
            n_lr=len(lr_trials),
            n_rank=len(ranks),
        )
        # One pass: a trial sees each of its rows once, so it needs no more than steps x batch of them.
        train = subsample(pool, self.kind, math.ceil(steps * self.batch * len(pool) / max(1, trainable)))
        train_file = (
            pool_file if train is pool else write_rows(self.out / "data" / "train", fmt, columns, train)
        )
        self.notes.append(
            f"calibration: {cal.overhead_s:.1f} s per run besides its steps, {cal.step_s:.3f} s per step; "
            f"{planned} trials of {steps} steps planned on {len(train):,} rows"
        )
        self.say(self.notes[-1])
        trial = trial_config(self.config, train_file, heldout_file, steps, warmup)
        base = write_yaml(self.out / "trial.yaml", trial, "the trials: the recommendation for a few steps")
        trials = self.trials(base, lr_trials, ranks if planned > len(lr_trials) else [], cal)
        if ranks and planned == len(lr_trials):
            self.notes.append("rank trials skipped: the budget leaves room for the learning rates alone")
            skipped = _rank_runs(self.choose(trials, 0, 0)[0], ranks)
            trials += [Trial(name, ov, None, None, BUDGET_STATUS) for name, ov in skipped]
        best, reason = self.choose(trials, len(heldout), steps)
        by_lr = sorted(trials[: len(lr_trials)], key=lambda t: float(t.name.split("=")[1]))
        return Validation(
            self.metric, self.kind == "seq-cls", by_lr + trials[len(lr_trials) :], best, trials[0], steps,
            len(train), len(heldout), self.budget_s, time.monotonic() - self.t0, self.out / "study", reason,
            self.notes,
        )  # fmt: skip

    def choose(self, trials: list[Trial], heldout_rows: int, steps: int) -> tuple[Trial, str]:
        higher = self.kind == "seq-cls"
        return choose(
            trials,
            trials[0],
            metric=self.metric,
            higher_is_better=higher,
            heldout_rows=heldout_rows,
            steps=steps,
        )

    def stage(
        self, study_dir: Path, base: Path, runs: list[tuple[str, dict[str, Any]]], ex: BudgetExecutor
    ) -> StudyRecord:
        """Write the study file (these runs, one seed) and run it. A later stage lists the earlier runs
        too and resumes (forced, since runs were added): the finished ones are kept, the new ones run."""
        entries = [{"name": run_name(name), "overrides": overrides} for name, overrides in runs]
        study = {"study": {"name": "validate", "base": str(base), "seeds": [self.seed], "runs": entries}}
        file = write_yaml(study_dir / "study.yaml", study, "written by `loralab recommend --validate`")
        resume = (study_dir / "study.json").is_file()
        return run_study(file, study_dir, resume=resume, force=resume, executor=ex, quiet=self.quiet)

    def calibrate(self, base: Path) -> Calibration:
        """One short run of the trial setup, timed: what a run costs besides its steps, and a step."""
        ex = BudgetExecutor(self.deadline)
        start = time.monotonic()
        rec = self.stage(self.out / "calibration", base, [("calibration", {})], ex).runs[0]
        study_wall = time.monotonic() - start
        if rec.id in ex.cut:
            why = f"the calibration run ({CALIBRATION_STEPS} steps) did not finish within it; 3 trials follow"
            raise too_small(self.budget_s, 4 * study_wall + 60, why)
        if rec.status != "done":
            cause = f"; {rec.diagnosis.cause} (fix: {rec.diagnosis.fix})" if rec.diagnosis else ""
            raise LoralabError(f"--validate: the calibration run failed: {rec.error}{cause} (log: {rec.log})")
        wall = ex.walls.get(rec.id, study_wall)
        step_s = step_seconds(rec, self.batch) or wall / CALIBRATION_STEPS  # else all of it counts as steps
        return Calibration(max(0.0, wall - CALIBRATION_STEPS * step_s), step_s, max(0.0, study_wall - wall))

    def trials(
        self,
        base: Path,
        lr_trials: list[tuple[str, dict[str, Any]]],
        ranks: list[dict[str, Any]],
        cal: Calibration,
    ) -> list[Trial]:
        """The learning-rate stage, then the rank stage when planned and the measured times leave room."""
        study_dir, ex = self.out / "study", BudgetExecutor(self.deadline - cal.study_s)
        record = self.stage(study_dir, base, lr_trials, ex)
        trials = [_trial(name, ov, record, ex, self.metric) for name, ov in lr_trials]
        if not ranks:
            return trials
        rank_trials = _rank_runs(self.choose(trials, 0, 0)[0], ranks)
        need = cal.study_s + len(rank_trials) * max(t.seconds or 0.0 for t in trials)
        if self.left() < need or any(t.status != "done" for t in trials):
            why = f"{self.left():.0f} s left, {need:.0f} s needed" if self.left() < need else "a trial failed"
            self.notes.append(f"rank trials skipped: {why}")
            return trials + [Trial(name, ov, None, None, BUDGET_STATUS) for name, ov in rank_trials]
        # The learning-rate runs are listed again and kept (a failed one would run again: none is).
        record = self.stage(study_dir, base, lr_trials + rank_trials, ex)
        return trials + [_trial(name, ov, record, ex, self.metric) for name, ov in rank_trials]


def _rank_runs(chosen: Trial, ranks: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    # The ranks are tried at the learning rate the first stage chose.
    return [(f"{chosen.name},r={o['lora.config.r']}", {**chosen.overrides, **o}) for o in ranks]


def _seed(config: dict[str, Any]) -> int:
    seed = _section(config, "training_args").get("seed", config.get("seed"))
    return seed if isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0 else SEED


def _printer(console: Any | None, quiet: bool) -> Callable[[str], None]:
    out = None if quiet else (console or Console(stderr=True, soft_wrap=True))

    def say(text: str) -> None:
        if out is not None:
            out.print(text, markup=False, highlight=False)

    return say


def table_lines(v: Validation) -> list[str]:
    """The trials as aligned text lines (for the YAML's comments and the terminal)."""
    head = ["trial", metric_text(v.metric), "seconds", "status"]
    rows = [
        [
            t.name + (" (plain)" if t is v.baseline else "") + (" <- chosen" if t is v.best else ""),
            "-" if t.metric is None else f"{t.metric:.4f}",
            "-" if t.seconds is None else f"{t.seconds:.0f}",
            t.status,
        ]
        for t in v.trials
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [head, *rows]]
