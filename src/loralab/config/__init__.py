"""Experiment configuration: one YAML file, validated torch-free against the installed PEFT/transformers.

from loralab.config import load_experiment
cfg = load_experiment("experiment.yaml")   # raises loralab.errors.ConfigError listing every problem
cfg.model.name_or_path, cfg.lora_config_dict(), cfg.training_args, cfg.notes
"""

from loralab.config.loader import TOP_LEVEL_KEYS, load_experiment, read_config_file, read_yaml
from loralab.config.models import (
    TASK_TO_TASK_TYPE,
    TASK_TYPE_TO_TASK,
    TASKS,
    ClassWeights,
    DataConfig,
    ExperimentConfig,
    LoraSection,
    ModelConfig,
    Task,
)
from loralab.config.schema import FieldSpec, Schemas, load_schemas

__all__ = [
    "TASKS",
    "TASK_TO_TASK_TYPE",
    "TASK_TYPE_TO_TASK",
    "TOP_LEVEL_KEYS",
    "ClassWeights",
    "DataConfig",
    "ExperimentConfig",
    "FieldSpec",
    "LoraSection",
    "ModelConfig",
    "Schemas",
    "Task",
    "load_experiment",
    "load_schemas",
    "read_config_file",
    "read_yaml",
]
