"""`run_study`: every run of a study as its own `loralab train` process, phase by phase, with the
record (`DIR/study.json`) saved after every change so that a crash, Ctrl-C or `kill -9` of the study
loses nothing that finished.

- A run that fails is recorded `failed` with its exit code, error line, diagnosis and log; the others
  go on. A run that finishes gets its metrics copied from its own metrics.json and record.json.
- Phases run in the order the study file gives them; after all runs (all seeds) of a phase, the
  decision rules (`after_phase`) say whether later phases run; without rules every run is independent
  and up to `max_parallel` run at once across phases.
- `--resume` re-runs nothing that finished with the same key, continues interrupted runs from their
  last complete checkpoint (`train --resume`), and re-runs failed ones. A run whose resolved config
  changed is refused, naming the keys, unless `--force` (then only the changed runs start again).
"""

from __future__ import annotations

import importlib
import json
import math
import shutil
import sys
from collections import deque
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from loralab.errors import LoralabError, Problem, UsageError
from loralab.evaluate.predictions_file import score_predictions
from loralab.experiments.diagnose import diagnose, error_line
from loralab.experiments.executor import LocalExecutor
from loralab.experiments.jobs import Executor, Finished, Job
from loralab.experiments.record import (
    CLASSIFICATION_METRICS,
    GENERATION_METRICS,
    STUDY_FILE,
    Baseline,
    PhaseOutcome,
    RunRecord,
    StudyRecord,
    load_study,
)
from loralab.experiments.rules import RulesConfig, rules_callback
from loralab.experiments.runs import (
    EXPERIMENT_FILE,
    PlannedRun,
    changed_keys,
    expand,
    read_experiment,
    run_folder,
    write_experiment,
)
from loralab.experiments.spec import StudySpec, load_study_file
from loralab.experiments.study_report import build_study_report
from loralab.experiments.tracking import child_env, finish_study_tracking, start_study_tracking
from loralab.train.rundir import COMPLETE_MARKER  # a torch-free module

AfterPhase = Callable[[StudyRecord, str, Path], PhaseOutcome]
# Called after every change of a run's status (the run), and once more at the end (None).
Progress = Callable[[StudyRecord, RunRecord | None], None]
STUDY_COPY = "study.yaml"
ATTEMPT_MARK = "==> loralab study: "  # starts each attempt's part of a run's log
INTERRUPTED = "interrupted; --resume continues it"
METRIC_NAMES = tuple(dict.fromkeys((*CLASSIFICATION_METRICS, *GENERATION_METRICS)))


PREFIX_CACHE_SUBDIR = "prefix_cache"


class StudyRefused(LoralabError):
    """The study directory cannot be used as asked; nothing was run."""


def run_study(
    study_file: str | Path,
    out: str | Path,
    *,
    resume: bool = False,
    force: bool = False,
    executor: str | Executor = "local",
    max_parallel: int = 1,
    after_phase: AfterPhase | None = None,
    all_phases: bool = False,
    quiet: bool = False,
    progress: Progress | None = None,
) -> StudyRecord:
    """Run (or resume) the study in `study_file` in the folder `out`; returns its record. Ctrl-C stops
    the running runs, records them as queued (interrupted) and re-raises KeyboardInterrupt."""
    spec = load_study_file(study_file)
    out = Path(out).expanduser().absolute()
    planned = expand(spec, out)
    ex = make_executor(executor, max_parallel) if isinstance(executor, str) else executor  # before any write
    if resume:
        record, resumable = _resume(spec, planned, out, force=force)
    else:
        record, resumable = _fresh(spec, planned, out), set()
    if after_phase is None and spec.kind == "ablate":
        # An ablation is decided phase by phase by its own `rules:`, however it was started.
        after_phase = rules_callback(RulesConfig.from_mapping(spec.rules, str(spec.file)))
    study = _Study(spec, record, out, ex, resumable)
    study.progress = progress if progress is not None else (None if quiet else _print_finished())
    start_study_tracking(out, record, spec.tracking)
    record.save(out)
    _score_baselines(spec, record)
    record.save(out)
    try:
        study.run(after_phase, all_phases)
    except KeyboardInterrupt:
        study.interrupt()
        finish_study_tracking(out, record, [out / STUDY_FILE], "KILLED")
        raise
    failed = any(r.status == "failed" for r in record.runs)
    record.save(out)
    artifacts = [out / STUDY_FILE, *_study_report(out, record)]
    finish_study_tracking(out, record, artifacts, "FAILED" if failed else "FINISHED")
    if study.progress is not None:
        study.progress(record, None)
    return record


EXECUTORS = ("local", "ray")


def make_executor(name: str, max_parallel: int, address: str | None = None) -> Executor:
    if name == "local":
        return LocalExecutor(max_parallel)
    if name != "ray":
        raise UsageError(Problem("--executor", "", f"unknown executor {name!r}", "use local or ray"))
    try:
        # Ray is an optional heavy extra: its executor module (which imports ray) loads only when asked.
        module = importlib.import_module("loralab.experiments.ray_executor")
    except ModuleNotFoundError as e:
        if e.name and (e.name == "ray" or e.name.startswith(("ray.", "loralab.experiments.ray"))):
            fix = "pip install loralab[ray] (or run with --executor local)"
            raise UsageError(
                Problem("--executor ray", "", "the ray executor needs `pip install loralab[ray]`", fix)
            ) from None
        raise
    executor: Executor = module.RayExecutor(max_parallel, address)
    return executor


# ---- the study directory ---------------------------------------------------------------------------


def _fresh(spec: StudySpec, planned: list[PlannedRun], out: Path) -> StudyRecord:
    # `loralab ablate` writes the study file into the study directory before it runs it.
    if out.exists() and (not out.is_dir() or any(e.resolve() != spec.file for e in out.iterdir())):
        raise StudyRefused(
            f"--out {out} is not empty: use --resume to continue the study there, or give another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    _copy_study_file(spec, out)
    for p in planned:
        write_experiment(out, p)
    return StudyRecord(
        name=spec.name,
        kind=spec.kind,
        study_file=str(spec.file),
        runs=[p.record for p in planned],
        baselines=[Baseline(b.name, str(b.predictions), b.task) for b in spec.baselines],
    )


def study_changes(spec: StudySpec, planned: list[PlannedRun], old: StudyRecord, out: Path) -> list[str]:
    """What differs between the study as run in `out` and the study file now, one line per key."""
    lines = []
    ids = {p.id for p in planned}
    for p in planned:
        was = old.run(p.record.name, p.record.seed)
        if was is None:
            lines.append(f"run {p.id}: new in the study file")
        elif was.key != p.record.key:
            lines += [f"run {p.id}: {d}" for d in changed_keys(read_experiment(out, p.id), p.experiment)]
    lines += [f"run {r.id}: no longer in the study file" for r in old.runs if r.id not in ids]
    try:
        before = (yaml.safe_load((out / STUDY_COPY).read_text(encoding="utf-8")) or {}).get("study") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        before = {}
    for key in ("name", "kind", "baselines", "rules"):
        if isinstance(before, dict) and before.get(key) != spec.raw.get(key):
            lines.append(f"study.{key}: {before.get(key)!r} -> {spec.raw.get(key)!r}")
    return lines


def _resume(
    spec: StudySpec, planned: list[PlannedRun], out: Path, *, force: bool
) -> tuple[StudyRecord, set[str]]:
    try:
        old = load_study(out)
    except LoralabError as e:
        raise StudyRefused(f"--resume: {e}; start it without --resume") from None
    changes = study_changes(spec, planned, old, out)
    if changes and not force:
        listing = "\n".join(f"  - {c}" for c in changes)
        raise StudyRefused(
            f"--resume: the study changed since it ran in {out}:\n{listing}\n(fix: resume with the "
            f"study as it was ({out / STUDY_COPY}), add --force to re-run the changed runs, or give "
            "another --out)"
        )
    runs, resumable = [], set()
    for p in planned:
        was = old.run(p.record.name, p.record.seed)
        rec = p.record
        if was is not None and was.key == rec.key:
            was.run_dir, was.log = rec.run_dir, rec.log  # where the study directory is now
            rec = was
            if rec.status in ("running", "queued"):
                resumable.add(rec.id)  # interrupted: continue from its checkpoint if it has one
            elif rec.status == "failed":
                rec.mlflow_run_id = None  # it starts again from nothing: a new MLflow run
            if rec.status != "done":
                _requeue(rec)
        runs.append(rec)
        write_experiment(out, p)
    _copy_study_file(spec, out)
    # Decisions are made again from the runs' numbers as each phase completes.
    record = StudyRecord(
        name=spec.name,
        kind=spec.kind,
        study_file=str(spec.file),
        created=old.created,
        runs=runs,
        baselines=[Baseline(b.name, str(b.predictions), b.task) for b in spec.baselines],
        mlflow=old.mlflow,
    )
    return record, resumable


def _copy_study_file(spec: StudySpec, out: Path) -> None:
    if (out / STUDY_COPY).resolve() != spec.file.resolve():
        shutil.copyfile(spec.file, out / STUDY_COPY)


def _requeue(rec: RunRecord) -> None:
    rec.status = "queued"
    rec.error = rec.diagnosis = rec.exit_code = rec.reason = None
    rec.metrics = rec.trainable_params = rec.train_seconds = None


def has_checkpoint(run_dir: Path) -> bool:
    return any((c / COMPLETE_MARKER).exists() for c in (run_dir / "checkpoints").glob("checkpoint-*"))


def _completed(run_dir: Path) -> bool:
    try:
        status = json.loads((run_dir / "status.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        isinstance(status, dict)
        and status.get("status") == "completed"
        and (run_dir / "metrics.json").is_file()
    )


# ---- results ---------------------------------------------------------------------------------------


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The scalar metrics a study records (those present), with `tail_f1` from the lowest-frequency
    bucket when metrics.json has none."""
    out = {
        k: float(metrics[k])
        for k in METRIC_NAMES
        if isinstance(metrics.get(k), int | float) and not isinstance(metrics.get(k), bool)
    }
    buckets = metrics.get("buckets")
    if "tail_f1" not in out and isinstance(buckets, list) and buckets and isinstance(buckets[-1], dict):
        tail = buckets[-1].get("mean_f1")
        if isinstance(tail, int | float):
            out["tail_f1"] = float(tail)
    return out


def harvest(rec: RunRecord) -> None:
    """Copy a finished run's results from its run directory into its record (status done)."""
    run_dir = Path(str(rec.run_dir))
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    try:
        run_record = json.loads((run_dir / "record.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        run_record = {}
    rec.metrics = scalar_metrics(metrics)
    rec.trainable_params = run_record.get("lora_params")
    hours = run_record.get("training_time_hours")
    rec.train_seconds = round(hours * 3600, 1) if isinstance(hours, int | float) else None
    rec.mlflow_run_id = run_record.get("mlflow_run_id") or rec.mlflow_run_id
    rec.status = "done"


def _score_baselines(spec: StudySpec, record: StudyRecord) -> None:
    for b in record.baselines:
        try:
            b.metrics = scalar_metrics(score_predictions(Path(b.predictions), task=b.task))
            b.error = None
        except (LoralabError, OSError, ValueError) as e:
            b.metrics, b.error = None, e.message() if isinstance(e, LoralabError) else str(e)


def attempt_log(log: Path) -> str:
    """The latest attempt's part of a run's log (the log keeps every attempt)."""
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return text[text.rfind(ATTEMPT_MARK) :] if ATTEMPT_MARK in text else text


def current_epoch(rec: RunRecord) -> float | None:
    """The epoch of the last line of the run's train_log.jsonl (None before its first step)."""
    path = Path(str(rec.run_dir)) / "train_log.jsonl"
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - 4096))
            lines = f.read().decode("utf-8", errors="replace").strip().splitlines()
        epoch = json.loads(lines[-1]).get("epoch") if lines else None
    except (OSError, ValueError, AttributeError):
        return None
    return float(epoch) if isinstance(epoch, int | float) and math.isfinite(epoch) else None


def _print_finished() -> Progress:
    console = Console(stderr=True, soft_wrap=True)

    def show(record: StudyRecord, run: RunRecord | None) -> None:
        if run is not None and run.status in ("done", "failed"):
            console.print(summary_line(run), markup=False, highlight=False)

    return show


def summary_line(run: RunRecord) -> str:
    if run.status == "done":
        shown = "  ".join(f"{k} {v:.4f}" for k, v in (run.metrics or {}).items() if k != "loss")
        secs = f"  {run.train_seconds:.0f}s" if run.train_seconds is not None else ""
        return f"done    {run.id}  {shown}{secs}"
    if run.status == "failed":
        why = run.diagnosis.cause if run.diagnosis else run.error
        return f"failed  {run.id}  exit {run.exit_code}: {why}  (log: {run.log})"
    return f"{run.status:<7} {run.id}" + (f": {run.reason}" if run.reason else "")


# ---- running -------------------------------------------------------------------------------------


def _gpus_present() -> bool:
    # Without importing torch: the NVIDIA driver lists its GPUs here.
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())


class _Study:
    def __init__(self, spec: StudySpec, record: StudyRecord, out: Path, ex: Executor, resumable: set[str]):
        self.spec, self.record, self.out, self.ex = spec, record, out, ex
        self.resumable = resumable
        self.by_id = {r.id: r for r in record.runs}
        self.progress: Progress | None = None
        self.gpus = 1 if _gpus_present() else 0

    def changed(self, rec: RunRecord) -> None:
        self.record.save(self.out)
        if self.progress is not None:
            self.progress(self.record, rec)

    def run(self, after_phase: AfterPhase | None, all_phases: bool) -> None:
        if after_phase is None:
            self.run_group(self.record.runs)
            return
        phases = list(dict.fromkeys(r.phase for r in self.record.runs))
        groups = [[r for r in self.record.runs if r.phase == p] for p in phases]
        for i, (phase, runs) in enumerate(zip(phases, groups, strict=True)):
            self.run_group(runs)
            if phase is None:
                continue
            outcome = after_phase(self.record, phase, self.out)
            self.record.decisions.extend(outcome.decisions)
            if outcome.selected is not None:
                self.record.selected = outcome.selected
            self.record.save(self.out)
            if outcome.stop and not all_phases:
                for later in groups[i + 1 :]:
                    for r in (r for r in later if r.status != "done"):  # a resumed study keeps results
                        r.status, r.reason = "skipped", outcome.reason or f"the rules stopped after {phase}"
                        self.changed(r)
                return

    def run_group(self, runs: list[RunRecord]) -> None:
        pending = deque(r for r in runs if r.status == "queued")
        while pending or self.ex.running():
            while pending and self.ex.running() < self.ex.max_parallel:
                self.launch(pending.popleft())
            if self.ex.running():
                for f in self.ex.wait():
                    self.finish(f)

    def launch(self, rec: RunRecord) -> None:
        run_dir = Path(str(rec.run_dir))
        again = rec.id in self.resumable
        self.resumable.discard(rec.id)
        if again and _completed(run_dir):
            # It finished after the study process died (or just before): nothing to run again.
            self._harvest(rec)
            self.changed(rec)
            return
        resume = again and has_checkpoint(run_dir)
        if not resume and run_dir.exists():
            shutil.rmtree(run_dir)  # a failed or changed run starts again from nothing
        experiment = run_folder(self.out, rec.id) / EXPERIMENT_FILE
        argv = [
            sys.executable,
            "-m",
            "loralab",
            "train",
            str(experiment),
            "--output",
            str(run_dir),
            "--quiet",
            # One folder for the study: runs that share the frozen prefix share its cache (issue 13).
            "--prefix-cache-dir",
            str(self.out / PREFIX_CACHE_SUBDIR),
        ]
        argv += ["--resume"] if resume else []
        log = Path(str(rec.log))
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a", encoding="utf-8") as f:
            f.write(f"{ATTEMPT_MARK}{datetime.now().isoformat(timespec='seconds')} {' '.join(argv[1:])}\n")
        uses_cpu = bool((self.planned_args(rec) or {}).get("use_cpu"))
        job = Job(
            id=rec.id,
            argv=argv,
            log=log,
            env=child_env(self.record, rec),
            gpus=0 if uses_cpu else self.gpus,
        )
        rec.status, rec.reason = "running", None
        self.changed(rec)  # saved before it starts: child_env may have created its MLflow run
        self.ex.submit(job)

    def planned_args(self, rec: RunRecord) -> dict[str, Any] | None:
        exp = read_experiment(self.out, rec.id) or {}
        args = exp.get("training_args")
        return args if isinstance(args, dict) else None

    def finish(self, f: Finished) -> None:
        rec = self.by_id[f.job.id]
        if f.exit_code == 0:
            self._harvest(rec)
        else:
            text = attempt_log(f.job.log)
            experiment = str(run_folder(self.out, rec.id) / EXPERIMENT_FILE)
            rec.status, rec.exit_code = "failed", f.exit_code
            rec.error = error_line(text, f.exit_code)
            rec.diagnosis = diagnose(text, f.exit_code, experiment)
        self.changed(rec)

    def _harvest(self, rec: RunRecord) -> None:
        try:
            harvest(rec)
            rec.exit_code = 0
        except (OSError, ValueError) as e:
            rec.status, rec.exit_code = "failed", 0
            rec.error = f"the run ended without its results ({type(e).__name__}: {e})"

    def interrupt(self) -> None:
        self.ex.shutdown()
        for r in self.record.runs:
            if r.status == "running":
                r.status, r.reason = "queued", INTERRUPTED
        self.record.save(self.out)


def _study_report(out: Path, record: StudyRecord) -> list[Path]:
    """The study's report (DIR/report), for the parent MLflow run; a report that cannot be drawn
    costs the study nothing (`loralab report DIR` says why)."""
    if not any(r.status == "done" for r in record.runs):
        return []
    try:
        paths = build_study_report(out, out / "report")
    except (LoralabError, OSError, ValueError):
        return []
    return [paths.markdown, paths.html]
