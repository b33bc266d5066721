"""Trainer callbacks: the step log file, a rich progress bar, and MLflow tracking that never kills a run."""

from __future__ import annotations

import json
import logging
import math
import os
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from loralab.io import redact_secrets


def peak_memory_bytes() -> tuple[int, str]:
    """Peak memory of this process: CUDA max allocated when training on a GPU, else peak RSS."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return int(torch.cuda.max_memory_allocated()), "cuda_max_allocated"
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(kib) * 1024, "cpu_peak_rss"


class StepLogCallback(TrainerCallback):
    """Appends one JSON object per logging step to train_log.jsonl (loss, lr, grad norm, throughput,
    memory); evaluation results are appended too, tagged "eval"."""

    def __init__(self, path: Path, trainer: Any):
        self.path = path
        self.trainer = trainer
        self._last = (time.perf_counter(), 0, 0)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not state.is_world_process_zero or not logs:
            return
        now = time.perf_counter()
        t0, s0, k0 = self._last
        # Counted on this process; under DDP every rank takes an equal share of the batches.
        world = max(int(args.world_size), 1)
        s1, k1 = self.trainer.samples_seen * world, self.trainer.tokens_seen * world
        s0, k0 = s0 * world, k0 * world
        dt = max(now - t0, 1e-9)
        mem, mem_kind = peak_memory_bytes()
        rec: dict[str, Any] = {"step": state.global_step, "epoch": state.epoch, **logs}
        if "loss" in logs:
            rec.update(
                samples_per_s=round((s1 - s0) / dt, 2),
                tokens_per_s=round((k1 - k0) / dt, 1),
                memory_bytes=mem,
                memory_kind=mem_kind,
                kind="train",
            )
            self._last = (now, self.trainer.samples_seen, self.trainer.tokens_seen)
        elif any(k.startswith("eval_") for k in logs):
            rec["kind"] = "eval"
        else:
            rec["kind"] = "summary"
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(rec, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, float) and not math.isfinite(o):
        return str(o)
    return str(o)


class RichProgressCallback(TrainerCallback):
    """A progress bar with loss, samples/s, tokens/s and ETA; `quiet` prints one line per epoch."""

    def __init__(self, trainer: Any, quiet: bool = False, console: Console | None = None):
        self.trainer = trainer
        self.quiet = quiet or (not sys.stderr.isatty() and os.environ.get("LORALAB_PROGRESS") != "1")
        self.console = console or Console(stderr=True)
        self.progress: Progress | None = None
        self.task: Any = None
        self.loss: float | None = None
        self.t0 = time.perf_counter()

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if not state.is_world_process_zero:
            return
        self.t0 = time.perf_counter()
        self.s0, self.k0 = self.trainer.samples_seen, self.trainer.tokens_seen
        if self.quiet:
            return
        self.progress = Progress(
            TextColumn("[bold]train[/]"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} steps"),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task(
            "train", total=state.max_steps, completed=state.global_step, info=""
        )

    def _info(self) -> str:
        dt = max(time.perf_counter() - self.t0, 1e-9)
        world = max(int(getattr(self.trainer.args, "world_size", 1)), 1)  # all ranks, not just this one
        sps = world * (self.trainer.samples_seen - self.s0) / dt
        tps = world * (self.trainer.tokens_seen - self.k0) / dt
        loss = f"loss {self.loss:.4f}  " if self.loss is not None else ""
        return f"{loss}{sps:.1f} samples/s  {tps:.0f} tok/s"

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step, info=self._info())

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kw: Any,
    ) -> None:
        if logs and "loss" in logs:
            self.loss = float(logs["loss"])

    def on_evaluate(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if not state.is_world_process_zero:
            return
        metrics = kw.get("metrics") or {}
        shown = "  ".join(
            f"{k.removeprefix('eval_')} {v:.4f}"
            for k, v in metrics.items()
            if k in ("eval_loss", "eval_accuracy", "eval_weighted_f1", "eval_macro_f1")
        )
        line = f"epoch {state.epoch or 0:.2f}  step {state.global_step}  {shown}  ({self._info()})"
        (self.progress.console if self.progress else self.console).print(line)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


# MLflow retries a failed request 7 times with growing pauses and waits up to 120 s for each answer:
# a tracking server that is down or hangs stalls the run for minutes at every call. Tracking calls
# get a short leash instead (a failure turns tracking off for the rest of the run); a user's own
# MLFLOW_HTTP_REQUEST_* settings win.
HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}


@contextmanager
def bounded_http() -> Iterator[None]:
    set_here = [k for k in HTTP_LIMITS if k not in os.environ]
    for k in set_here:
        os.environ[k] = HTTP_LIMITS[k]
    try:
        yield
    finally:
        for k in set_here:
            os.environ.pop(k, None)


class MLflowCallback(TrainerCallback):
    """Params, metrics and artifacts to MLflow. Any tracking failure is reported once and ignored:
    a tracking server that is down must never cost a training run."""

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        run_name: str,
        params: dict[str, Any],
        *,
        tags: dict[str, str] | None = None,
        run_id: str | None = None,
        parent_run_id: str | None = None,
    ):
        """`run_id`: reattach to that run (a resumed run of a study) instead of starting a new one;
        `parent_run_id`: nest a new run under it (MLflow's own `mlflow.parentRunId` tag)."""
        self.uri, self.experiment, self.run_name, self.params = tracking_uri, experiment, run_name, params
        self.tags = dict(tags or {})
        self.resume_id, self.parent_run_id = run_id, parent_run_id
        self.active = False
        self.failed: str | None = None
        self.run_id: str | None = None
        self.note: str | None = None  # what start() did that the run's notes should say

    def _guard(self, fn: Any) -> None:
        if self.failed:
            return
        try:
            with bounded_http():
                fn()
        except Exception as e:
            # MLflow's messages quote the URL they called; a URI's password must not reach the log.
            self.failed = redact_secrets(f"{type(e).__name__}: {e}")
            Console(stderr=True).print(f"[yellow]warning:[/] MLflow tracking disabled: {escape(self.failed)}")

    def start(self) -> None:
        def go() -> None:
            import mlflow  # optional (loralab[train]); imported once tracking starts, only when it is on

            # mlflow sets up its own INFO logging on import; its table-creation chatter is noise here.
            logging.getLogger("mlflow").setLevel(logging.WARNING)
            logging.getLogger("alembic").setLevel(logging.WARNING)
            mlflow.set_tracking_uri(self.uri)
            existing = self._existing_run(mlflow)
            if existing is not None:
                # The run's own experiment: start_run refuses a run_id from another active experiment.
                mlflow.set_experiment(experiment_id=existing.info.experiment_id)
                run = mlflow.start_run(run_id=existing.info.run_id, tags=self.tags or None)
                logged = set(existing.data.params)
            else:
                mlflow.set_experiment(self.experiment)
                tags = dict(self.tags)
                if self.parent_run_id:
                    # The tag itself rather than start_run(parent_run_id=...), which refuses a
                    # parent that is not this process's active run.
                    tags["mlflow.parentRunId"] = self.parent_run_id
                run = mlflow.start_run(run_name=self.run_name, tags=tags or None)
                logged = set()
            self.run_id = run.info.run_id
            # Params cannot change once logged; a reattached run keeps those it has.
            mlflow.log_params({k: _short(v) for k, v in self.params.items() if k not in logged})
            self.active = True

        self._guard(go)

    def _existing_run(self, mlflow: Any) -> Any:
        """The run to reattach to, or None (with a note) when it is gone: a new run is started then."""
        if not self.resume_id:
            return None
        try:
            run = mlflow.MlflowClient(self.uri).get_run(self.resume_id)
        except mlflow.exceptions.MlflowException as e:
            self.note = (
                f"MLflow run {self.resume_id} was not found ({type(e).__name__}); a new run was started"
            )
            return None
        if run.info.lifecycle_stage == "deleted":
            self.note = f"MLflow run {self.resume_id} is deleted; a new run was started"
            return None
        return run

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kw: Any,
    ) -> None:
        if not self.active or not state.is_world_process_zero or not logs:
            return

        def go() -> None:
            import mlflow  # see start()

            nums = {k: float(v) for k, v in logs.items() if isinstance(v, int | float) and math.isfinite(v)}
            mlflow.log_metrics(nums, step=state.global_step)

        self._guard(go)

    def finish(self, metrics: dict[str, float], artifacts: list[Path], status: str = "FINISHED") -> None:
        if not self.active:
            return

        def go() -> None:
            import mlflow  # see start()

            mlflow.log_metrics({k: float(v) for k, v in metrics.items() if math.isfinite(float(v))})
            for a in artifacts:
                if a.is_file():
                    mlflow.log_artifact(str(a))
                elif a.is_dir():
                    mlflow.log_artifacts(str(a), artifact_path=a.name)
            mlflow.end_run(status=status)
            self.active = False

        self._guard(go)


def _short(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v, default=str)
    return s if len(s) <= 500 else s[:497] + "..."
