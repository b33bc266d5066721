"""The run record of seed 000 §5.4, and the environment a run happened in."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from typing import Any, Protocol

import torch

from loralab.config.models import ExperimentConfig
from loralab.evaluate.training_log import best_epoch, memory_device
from loralab.io import redact_secrets
from loralab.plan.planner import Plan
from loralab.train.callbacks import peak_memory_bytes
from loralab.train.precision import PrecisionPolicy


class RunState(Protocol):
    """What a record is built from: a `Session` after validate (a protocol, so this module need
    not import the session that calls it)."""

    cfg: ExperimentConfig
    metrics: dict[str, Any]
    plan: Plan | None
    policy: PrecisionPolicy | None
    notes: list[str]
    trainer: Any
    mlflow: Any  # the run's MLflowCallback, or None when tracking is off
    prefix: Any  # the run's PrefixCache (None before setup)


PACKAGES = (
    "loralab",
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "datasets",
    "scikit-learn",
    "mlflow-skinny",
)


def _best_epoch(session: RunState) -> float | None:
    """From the evaluations the Trainer logged, by its `metric_for_best_model` (else eval loss): the
    Trainer itself only tracks a best step with `metric_for_best_model`/`load_best_model_at_end`."""
    trainer = session.trainer
    state = trainer.state if trainer is not None else None
    if state is None:
        return None
    args = trainer.args
    found = best_epoch(
        state.log_history,
        getattr(args, "metric_for_best_model", None),
        getattr(args, "greater_is_better", None),
    )
    if found is not None or state.best_global_step is None:
        return found
    for h in state.log_history:
        if h.get("step") == state.best_global_step and "epoch" in h:
            return float(h["epoch"])
    return None


def build_record(session: RunState, seconds: float) -> dict[str, Any]:
    """`phase`, `target_modules`, `lora_params`, `training_time_hours`, `peak_memory_gb_per_gpu`
    (with `peak_memory_device`: "cuda" for CUDA max allocated per GPU, "cpu" for the host process's
    peak RSS), `best_epoch`, `metrics` and `per_class_f1`, with loralab's bucket names (rank ranges)."""
    cfg = session.cfg
    m = session.metrics
    mem, kind = peak_memory_bytes()
    lora = cfg.lora_config_dict()
    buckets = {b["name"]: b["mean_f1"] for b in m.get("buckets", [])}
    # Notes quote tracking errors and URIs; the record is copied to MLflow and into reports.
    return redact_secrets(
        {
            "phase": (cfg.experiment or {}).get("phase"),
            "model": cfg.model.name_or_path,
            "target_modules": lora.get("target_modules"),
            "layers_to_transform": lora.get("layers_to_transform"),
            "lora_params": session.plan.counts.trainable_params if session.plan is not None else None,
            "training_time_hours": round(seconds / 3600, 4),
            # the key keeps its seed 000 name; on a CPU run the number is the process's peak RSS
            "peak_memory_gb_per_gpu": round(mem / 1024**3, 3),
            "peak_memory_kind": kind,
            "peak_memory_device": memory_device(kind),
            "best_epoch": _best_epoch(session),
            "metrics": {
                "weighted_f1": m.get("weighted_f1"),
                "macro_f1": m.get("macro_f1"),
                "tail_f1": m.get("tail_f1"),
                "accuracy": m.get("accuracy"),
                "val_loss": m.get("loss"),
                "split": m.get("split"),
            },
            "per_class_f1": buckets,
            "precision": session.policy.reason if session.policy is not None else None,
            # A study stores it (RunRecord.mlflow_run_id) so a resumed run reattaches to this run.
            "mlflow_run_id": getattr(session.mlflow, "run_id", None),
            # `on` over a random prefix changes what is trained: the record says so (issue 13).
            "prefix_cache": session.prefix.to_json() if session.prefix is not None else None,
            "notes": session.notes,
        }
    )


def _git(*args: str) -> str | None:
    try:
        p = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return p.stdout.strip() if p.returncode == 0 else None


def environment() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    gpus = (
        [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available()
        else []
    )
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpus": gpus,
        "packages": versions,
        "git": {"commit": _git("rev-parse", "HEAD"), "dirty": bool(_git("status", "--porcelain"))},
    }
