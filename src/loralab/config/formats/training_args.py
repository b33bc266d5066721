"""A flat mapping of TrainingArguments fields (JSON or YAML; e.g. `TrainingArguments.to_json_string()`
as saved next to a run) -> loralab's experiment mapping. It names no model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loralab.config.formats.common import Builder, Converted, training_key

TOOL = "TrainingArguments"


def from_training_args(raw: Mapping[str, Any], training_defaults: Mapping[str, Any]) -> Converted:
    """Each field under `training_args` (deepspeed at the top level, where loralab reads it). A full dump
    repeats every default: values equal to the installed TrainingArguments' default, and the masked
    tokens `to_dict` writes ("<HUB_TOKEN>"), are left out with one note each kind."""
    b = Builder(TOOL)
    same: list[str] = []
    for key, value in raw.items():
        key = str(key)
        if key == "deepspeed":
            if value is not None:
                b.set("deepspeed", value, key)
        elif not training_key(key, training_defaults):
            b.unknown(key)
        elif isinstance(value, str) and value == f"<{key.upper()}>":
            b.note(f"{key}: {value!r} is the mask TrainingArguments.to_dict writes for a secret; left out")
        elif key in training_defaults and _is_default(value, training_defaults[key]):
            same.append(key)
        else:
            b.set(f"training_args.{key}", value, key)
    if same:
        b.note(f"{len(same)} keys equal to TrainingArguments' defaults left out: {', '.join(same)}")
    b.note("TrainingArguments name no model: give them with a training config to plan a run")
    return b.result()


def _is_default(value: Any, default: Any) -> bool:
    if value == default:
        return True
    # to_dict writes an unset list/mapping field as [] or {} after __post_init__.
    return value in ([], {}, "") and default in (None, "", False, [], {})
