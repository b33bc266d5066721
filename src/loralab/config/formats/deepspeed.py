"""A DeepSpeed config read on its own, and its "auto" values filled the way the HF Trainer fills them.

Source: transformers 5.23 integrations/deepspeed.py, HfTrainerDeepSpeedConfig.trainer_config_process
(batch sizes, clipping, optimizer and scheduler lr, fp16/bf16 from TrainingArguments; "auto" is replaced,
an explicit value that differs is collected as a mismatch) and .trainer_config_finalize (total_num_steps,
warmup_num_steps = max(1, args.get_warmup_steps(total)); the mismatches then raise "Please correct the
following DeepSpeed config values that mismatch TrainingArguments values").
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

from loralab.config.formats.common import Builder, Converted

TOOL = "DeepSpeed"
MISMATCH_HEADER = (
    "Please correct the following DeepSpeed config values that mismatch TrainingArguments values"
)
# Keys a DeepSpeed file is recognised by (detect.py) and that loralab reads; the rest go to DeepSpeed.
DS_KEYS = (
    "zero_optimization",
    "train_micro_batch_size_per_gpu",
    "train_batch_size",
    "gradient_accumulation_steps",
    "gradient_clipping",
    "optimizer",
    "scheduler",
    "bf16",
    "fp16",
)
# DeepSpeed value -> the TrainingArguments field an explicit value implies (the Trainer demands they match).
_IMPLIED = (
    ("train_micro_batch_size_per_gpu", "per_device_train_batch_size"),
    ("gradient_accumulation_steps", "gradient_accumulation_steps"),
    ("gradient_clipping", "max_grad_norm"),
    ("optimizer.params.lr", "learning_rate"),
    ("optimizer.params.eps", "adam_epsilon"),
    ("optimizer.params.weight_decay", "weight_decay"),
    ("bf16.enabled", "bf16"),
    ("fp16.enabled", "fp16"),
)


def ds_get(ds: Mapping[str, Any] | None, dotted: str) -> Any:
    """The value at a dotted path of a DeepSpeed config ("zero_optimization.stage"); None when absent."""
    node: Any = ds or {}
    for part in dotted.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def from_deepspeed(raw: Mapping[str, Any], training_defaults: Mapping[str, Any]) -> Converted:
    """A DeepSpeed config alone: the config itself, plus the TrainingArguments its explicit values imply
    (the Trainer refuses to start unless they match, so they are the run's). It names no model."""
    b = Builder(TOOL)
    b.set("deepspeed", dict(raw))
    for ds_key, ta_key in _IMPLIED:
        value = ds_get(raw, ds_key)
        if value is not None and value != "auto":
            b.set(f"training_args.{ta_key}", value, ds_key)
    betas = ds_get(raw, "optimizer.params.betas")
    if isinstance(betas, list) and len(betas) == 2:
        b.set("training_args.adam_beta1", betas[0], "optimizer.params.betas")
        b.set("training_args.adam_beta2", betas[1], "optimizer.params.betas")
    warmup = ds_get(raw, "scheduler.params.warmup_num_steps")
    if isinstance(warmup, int) and not isinstance(warmup, bool):
        b.set("training_args.warmup_steps", warmup, "scheduler.params.warmup_num_steps")
    max_lr = ds_get(raw, "scheduler.params.warmup_max_lr")
    if max_lr not in (None, "auto") and not b.has("training_args.learning_rate"):
        b.set("training_args.learning_rate", max_lr, "scheduler.params.warmup_max_lr")
    _world_size_note(raw, b)
    for key in raw:
        if key not in DS_KEYS:
            b.note(f"{key} (from DeepSpeed): passed to DeepSpeed as is; loralab does not read it")
    b.note("a DeepSpeed config names no model: give it with a training config to plan a run")
    return b.result()


def _world_size_note(raw: Mapping[str, Any], b: Builder) -> None:
    total: Any = raw.get("train_batch_size")
    micro: Any = raw.get("train_micro_batch_size_per_gpu")
    accum: Any = raw.get("gradient_accumulation_steps")
    if not (_is_int(total) and _is_int(micro) and _is_int(accum)):
        return
    per = int(micro) * int(accum)
    if per and int(total) % per == 0:
        b.note(f"train_batch_size {total} = {int(total) // per} processes x {micro} x {accum}")
    else:
        b.note(f"train_batch_size {total} is not a multiple of micro-batch {micro} x accumulation {accum}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _warmup_steps(warmup: Any, total: int) -> int:
    """TrainingArguments.get_warmup_steps (v5): a fraction below 1 is ceil(total x fraction)."""
    if isinstance(warmup, float) and 0 < warmup < 1:
        return math.ceil(total * warmup)
    return int(warmup or 0)


def resolve_auto(
    ds: Mapping[str, Any],
    args: Mapping[str, Any],
    defaults: Mapping[str, Any],
    *,
    world_size: int = 1,
    num_training_steps: int | None = None,
) -> tuple[dict[str, Any], list[str], list[str]]:
    """(the DeepSpeed config with every "auto" the Trainer fills replaced, one note per value filled,
    the mismatches as transformers lists them: "- ds KEY=V vs hf NAME=V"). `args` are the experiment's
    TrainingArguments kwargs, `defaults` TrainingArguments' defaults for the rest. Without
    `num_training_steps` the scheduler's total and warmup steps stay "auto" (they need the data)."""

    def arg(name: str) -> Any:
        return args[name] if name in args else defaults.get(name)

    micro, accum = arg("per_device_train_batch_size"), arg("gradient_accumulation_steps")
    fills: list[tuple[str, Any, str, bool]] = [
        ("train_micro_batch_size_per_gpu", micro, "per_device_train_batch_size", True),
        ("gradient_accumulation_steps", accum, "gradient_accumulation_steps", True),
        ("train_batch_size", world_size * micro * accum, "train_batch_size (calculated)", True),
        ("gradient_clipping", arg("max_grad_norm"), "max_grad_norm", True),
        ("optimizer.params.lr", arg("learning_rate"), "learning_rate", True),
        ("optimizer.params.betas", [arg("adam_beta1"), arg("adam_beta2")], "adam_beta1+adam_beta2", True),
        ("optimizer.params.eps", arg("adam_epsilon"), "adam_epsilon", True),
        ("optimizer.params.weight_decay", arg("weight_decay"), "weight_decay", True),
        ("scheduler.params.warmup_min_lr", 0, "", False),
        ("scheduler.params.warmup_max_lr", arg("learning_rate"), "learning_rate", True),
        ("fp16.enabled", bool(arg("fp16") or arg("fp16_full_eval")), "fp16|fp16_full_eval", True),
        ("bf16.enabled", bool(arg("bf16") or arg("bf16_full_eval")), "bf16|bf16_full_eval", True),
    ]
    if num_training_steps is not None:
        warmup = max(1, _warmup_steps(arg("warmup_steps"), num_training_steps))
        fills.append(("scheduler.params.total_num_steps", num_training_steps, "num_training_steps", True))
        fills.append(("scheduler.params.warmup_num_steps", warmup, "warmup_steps", True))
    out = copy.deepcopy(dict(ds))
    notes: list[str] = []
    mismatches: list[str] = []
    for ds_key, hf_value, hf_key, must_match in fills:
        *parents, last = ds_key.split(".")
        node = ds_get(out, ".".join(parents)) if parents else out
        if not isinstance(node, dict) or last not in node:
            continue  # fill_match: a key the config does not have is left out
        if node[last] == "auto":
            node[last] = hf_value
            notes.append(f'deepspeed {ds_key}: "auto" -> {hf_value!r} (from {hf_key or "the Trainer"})')
        elif must_match and node[last] is not None and node[last] != hf_value:
            mismatches.append(f"- ds {ds_key}={node[last]} vs hf {hf_key}={hf_value}")
    return out, notes, mismatches


def mismatch_message(mismatches: list[str]) -> str:
    """transformers' own error for them (trainer_config_finalize), on one line."""
    return f"{MISMATCH_HEADER}: {'; '.join(m.removeprefix('- ') for m in mismatches)}"
