"""The experiment as a run's config.yaml records it (one writer: `train`; `plan --write-launch` writes
the same form beside its launch files)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loralab.config.models import ExperimentConfig
from loralab.io import redact_secrets

DATA_KEYS = ("train_file", "validation_file", "test_file")


def resolved_config(cfg: ExperimentConfig) -> dict[str, Any]:
    """The experiment as config.yaml records it: resolved model path, the LoRA config PEFT gets,
    transformers-5 training_args, absolute data paths, secrets redacted."""
    raw = dict(cfg.raw)
    raw.pop("lora_defaults", None)
    raw["model"] = {
        **(raw.get("model") or {}),
        "name_or_path": cfg.model.name_or_path,
        "task": cfg.model.task,
    }
    if cfg.model.num_labels is not None:
        raw["model"]["num_labels"] = cfg.model.num_labels
    raw["lora"] = {"enable": cfg.lora.enable, "config": cfg.lora_config_dict()}
    raw["training_args"] = cfg.training_args
    # Data paths absolute: `loralab evaluate RUN_DIR` reads this file from the run directory.
    data = dict(raw.get("data") or {})
    for key in DATA_KEYS:
        if data.get(key):
            data[key] = str(Path(cfg.resolve_path(data[key])).resolve())
    if data:
        raw["data"] = data
    if cfg.deepspeed is not None:
        raw["deepspeed"] = cfg.deepspeed
    result: dict[str, Any] = redact_secrets(raw)
    return result
