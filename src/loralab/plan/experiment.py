"""An experiment file's LoRA config planned on its model's architecture (no weights, no data)."""

from __future__ import annotations

from pathlib import Path

from loralab.arch.cache import get_arch_record
from loralab.config import load_experiment
from loralab.config.models import TASK_TO_TASK_TYPE, ExperimentConfig
from loralab.errors import ConfigError, Problem
from loralab.plan.planner import Plan, build_plan


def plan_from_config(config: Path, *, with_options: bool = True) -> tuple[Plan, list[str]]:
    """Load an experiment file and plan its LoRA config on its model's architecture."""
    _cfg, plan, notes = load_and_plan(config, with_options=with_options)
    return plan, notes


def load_and_plan(config: Path, *, with_options: bool = True) -> tuple[ExperimentConfig, Plan, list[str]]:
    """The loaded experiment, its plan, and the config's notes."""
    cfg = load_experiment(config)
    return cfg, plan_experiment(cfg, with_options=with_options), list(cfg.notes)


def plan_experiment(cfg: ExperimentConfig, *, with_options: bool = True) -> Plan:
    """The plan of a loaded experiment (a seq-cls config's num_labels must be known by now)."""
    config = cfg.source
    if not cfg.lora.enable:
        raise ConfigError(
            [
                Problem(
                    str(config),
                    "lora.enable",
                    "LoRA is disabled, there is nothing to plan",
                    "set enable: true",
                )
            ]
        )
    m = cfg.model
    if m.task == "seq-cls" and m.num_labels is None:
        raise ConfigError(
            [
                Problem(
                    str(config),
                    "model.num_labels",
                    "the number of labels is unknown (it sizes the classification head)",
                    "set model.num_labels, or data.train_file and data.label_field to infer it",
                )
            ]
        )
    arch = get_arch_record(
        m.name_or_path,
        task=m.task,
        num_labels=m.num_labels,
        revision=m.revision,
        trust_remote_code=m.trust_remote_code,
    )
    lora = dict(cfg.lora_config_dict())
    # The PeftModel class (and so the heads added to modules_to_save) follows the task.
    lora.setdefault("task_type", TASK_TO_TASK_TYPE[m.task])
    dtype = m.torch_dtype if m.torch_dtype not in (None, "auto") else None
    return build_plan(arch, lora, source=str(config), load_dtype=dtype, with_options=with_options)
