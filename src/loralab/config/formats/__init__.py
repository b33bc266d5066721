"""Other tools' configuration files read as loralab experiments.

Axolotl YAML, LLaMA-Factory YAML, a DeepSpeed config and a flat TrainingArguments mapping are each
converted (a pure function per tool) into the mapping `load_experiment` validates, with the tool's own
defaults filled in and every key loralab does not use listed in the notes. `load_experiment(path,
fmt=None)` detects the format from the keys; `fmt` names it. `formats.convert.convert_file` writes the
converted experiment as commented YAML.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from loralab.config.formats.axolotl import from_axolotl
from loralab.config.formats.common import FORMATS, TOOL_NAMES, Converted
from loralab.config.formats.deepspeed import MISMATCH_HEADER, from_deepspeed, mismatch_message, resolve_auto
from loralab.config.formats.detect import check_format, detect_format
from loralab.config.formats.llamafactory import from_llamafactory
from loralab.config.formats.training_args import from_training_args

Converter = Callable[[Mapping[str, Any], Mapping[str, Any]], Converted]
CONVERTERS: dict[str, Converter] = {
    "axolotl": from_axolotl,
    "llamafactory": from_llamafactory,
    "deepspeed": from_deepspeed,
    "training_args": from_training_args,
}
# Formats that name no model: plan and train need a training config next to them.
MODELLESS = ("deepspeed", "training_args")


def convert_raw(raw: Mapping[str, Any], fmt: str, training_defaults: Mapping[str, Any]) -> Converted:
    """`raw` in format `fmt` as loralab's experiment mapping (loralab's own is returned as is)."""
    if fmt == "loralab":
        return Converted(dict(raw))
    return CONVERTERS[fmt](raw, training_defaults)


__all__ = [
    "CONVERTERS",
    "FORMATS",
    "MISMATCH_HEADER",
    "MODELLESS",
    "TOOL_NAMES",
    "Converted",
    "check_format",
    "convert_raw",
    "detect_format",
    "from_axolotl",
    "from_deepspeed",
    "from_llamafactory",
    "from_training_args",
    "mismatch_message",
    "resolve_auto",
]
