"""Which tool a configuration file was written for, told from its top-level keys."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loralab.config.formats.common import FORMATS
from loralab.errors import ConfigError, Problem

# Sections only a loralab experiment has (`deepspeed` and `seed` are shared with the other tools).
_LORALAB = (
    "model",
    "lora",
    "lora_defaults",
    "training_args",
    "data",
    "experiment",
    "tracking",
    "prefix_cache",
)
_AXOLOTL = (
    "base_model",
    "adapter",
    "lora_r",
    "micro_batch_size",
    "lora_target_linear",
    "sequence_len",
    "num_epochs",
)
_LLAMAFACTORY = ("finetuning_type", "lora_rank", "stage", "lora_target", "cutoff_len", "template")
_DEEPSPEED = ("zero_optimization", "train_micro_batch_size_per_gpu", "train_batch_size", "gradient_clipping")
_TRAINING = (
    "per_device_train_batch_size",
    "learning_rate",
    "num_train_epochs",
    "output_dir",
    "lr_scheduler_type",
)
HOW = {
    "loralab": "model: / lora: / training_args: sections",
    "axolotl": "base_model, adapter, lora_r, micro_batch_size, ...",
    "llamafactory": "model_name_or_path with finetuning_type, lora_rank or stage",
    "deepspeed": "zero_optimization, train_micro_batch_size_per_gpu, ...",
    "training_args": "per_device_train_batch_size, learning_rate, ... at the top level",
}


def _fits(raw: Mapping[str, Any]) -> list[str]:
    keys = {str(k) for k in raw}
    fits = []
    if keys & set(_LORALAB):
        fits.append("loralab")
    if keys & set(_AXOLOTL):
        fits.append("axolotl")
    if "model_name_or_path" in keys and keys & set(_LLAMAFACTORY):
        fits.append("llamafactory")
    if not fits and keys & set(_DEEPSPEED):
        fits.append("deepspeed")
    if not fits and keys & set(_TRAINING):
        fits.append("training_args")
    return fits


def detect_format(raw: Mapping[str, Any], file: str = "") -> str:
    """loralab | axolotl | llamafactory | deepspeed | training_args; a ConfigError when none or several
    fit (loralab's own sections win over stray keys of another tool, which its validation reports)."""
    fits = _fits(raw)
    if len(fits) == 1 or (fits and fits[0] == "loralab"):
        return fits[0]
    listing = "; ".join(f"{name} ({HOW[name]})" for name in FORMATS)
    if not fits:
        message = f"cannot tell which tool this file is for; formats read: {listing}"
    else:
        message = f"the keys fit more than one format ({', '.join(fits)}); formats read: {listing}"
    raise ConfigError([Problem(file, "", message, f"name it with --format ({'|'.join(FORMATS)})")])


def check_format(fmt: str, file: str = "") -> str:
    """`fmt` normalised (llama-factory, llama_factory -> llamafactory); a ConfigError if unknown."""
    name = fmt.strip().lower().replace("-", "").replace("_", "")
    for known in FORMATS:
        if name == known.replace("_", ""):
            return known
    raise ConfigError([Problem(file, "", f"unknown format {fmt!r}", f"use one of: {', '.join(FORMATS)}")])
