"""MLflow for a study: one parent run per study, a nested run per training run (stub: filled in by
the MLflow work; every function is a no-op until then, so studies run untracked)."""

from __future__ import annotations

from pathlib import Path

from loralab.experiments.record import RunRecord, StudyRecord


def start_study_tracking(study_dir: Path, record: StudyRecord, tracking: dict[str, object] | None) -> None:
    """Start, or reattach to (record.mlflow["parent_run_id"]), the study's parent run; fills record.mlflow."""


def child_env(record: StudyRecord, run: RunRecord) -> dict[str, str]:
    """Environment for a run's `loralab train` process so its MLflow run nests under the parent (and a
    resumed run reattaches to run.mlflow_run_id)."""
    return {}


def finish_study_tracking(study_dir: Path, record: StudyRecord, artifacts: list[Path], status: str) -> None:
    """Log the decisions and the study report as artifacts of the parent run and close it."""
