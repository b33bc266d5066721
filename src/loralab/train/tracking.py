"""Where a run is tracked: MLflow at `tracking.uri`, else a SQLite store in the working directory.

MLflow 3 keeps the plain-folder store (./mlruns) in maintenance mode and refuses it by default, so
the local default is `sqlite:///mlflow.db` (artifacts under ./mlruns); `tracking: {backend: none}`
turns tracking off. Credentials for a remote server come from the environment (MLFLOW_TRACKING_*),
never from the config file, so they cannot reach logs or reports.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from loralab.config.models import ExperimentConfig
from loralab.plan.planner import Plan
from loralab.train.callbacks import MLflowCallback


def default_tracking_uri() -> str:
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def tracking_params(cfg: ExperimentConfig, plan: Plan | None) -> dict[str, Any]:
    lora = cfg.lora_config_dict()
    params: dict[str, Any] = {
        "model": cfg.model.name_or_path,
        "task": cfg.model.task,
        "phase": (cfg.experiment or {}).get("phase", ""),
        "r": lora.get("r"),
        "lora_alpha": lora.get("lora_alpha"),
        "target_modules": lora.get("target_modules"),
        "layers_to_transform": lora.get("layers_to_transform"),
        "lora_params": plan.counts.trainable_params if plan is not None else None,
    }
    for k in (
        "learning_rate",
        "num_train_epochs",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
    ):
        if k in cfg.training_args:
            params[k] = cfg.training_args[k]
    return params


def mlflow_callback(
    cfg: ExperimentConfig, plan: Plan | None, run_dir: Path, notes: list[str]
) -> MLflowCallback | None:
    """The MLflow callback of a run, started; None when tracking is off. What went wrong goes to `notes`."""
    t = cfg.tracking or {}
    if t.get("backend") == "none":
        return None
    if importlib.util.find_spec("mlflow") is None:
        notes.append("MLflow is not installed: the run is not tracked (pip install mlflow-skinny)")
        return None
    experiment = t.get("experiment_name") or (cfg.experiment or {}).get("name") or "loralab"
    run_name = t.get("run_name") or run_dir.name
    cb = MLflowCallback(
        t.get("uri") or default_tracking_uri(), experiment, run_name, tracking_params(cfg, plan)
    )
    cb.start()
    if cb.failed:
        notes.append(f"MLflow tracking failed and was turned off: {cb.failed}")
    return cb
