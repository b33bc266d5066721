"""Validators for the sections loralab defines itself: model, data, deepspeed, tracking, experiment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from loralab.config._common import (
    Ctx,
    as_mapping,
    check_bool,
    check_int,
    check_str,
    closest,
    is_number,
    join,
    type_name,
    unknown_key,
)
from loralab.config.formats.deepspeed import ds_get
from loralab.config.models import TASK_TYPE_TO_TASK, TASKS, ClassWeights, DataConfig, ModelConfig, Task

MODEL_KEYS = (
    "name_or_path",
    "task",
    "num_labels",
    "torch_dtype",
    "dtype",
    "trust_remote_code",
    "attn_implementation",
    "revision",
    "quantization",
    "device_map",
)
DTYPES = ("auto", "float32", "float16", "bfloat16")
_DTYPE_ALIASES = {
    "fp32": "float32",
    "float": "float32",
    "fp16": "float16",
    "half": "float16",
    "bf16": "bfloat16",
}
# transformers 5.23 modeling_utils.AttentionInterface._global_mapping plus "eager"; a "org/repo" value is a
# kernel from the Hub, which transformers resolves itself.
ATTN_IMPLEMENTATIONS = (
    "eager",
    "sdpa",
    "flash_attention_2",
    "flash_attention_3",
    "flash_attention_4",
    "flex_attention",
    "paged|eager",
)


def build_model(value: Any, hint: Task | None, ctx: Ctx) -> tuple[ModelConfig, bool]:
    """(the model section, whether `model.task` was given explicitly)."""
    if isinstance(value, str):
        value = {"name_or_path": value}  # `model: gpt2` is unambiguous
    if value is None:
        ctx.problem(
            "model", "the `model` section is missing", "add `model: {name_or_path: <hub id or folder>}`"
        )
    section = as_mapping(ctx, "model", value, "model: {name_or_path: gpt2}") or {}
    for key in section:
        if key not in MODEL_KEYS:
            unknown_key(ctx, "model", str(key), MODEL_KEYS, "model key", listing=True)
    name = section.get("name_or_path")
    if name is None and value is not None:
        ctx.problem("model.name_or_path", "model.name_or_path is required", "give a Hub id or a local folder")
    elif name is not None:
        check_str(ctx, "model.name_or_path", name)
    task, task_given = _task(section, hint, ctx)
    model = ModelConfig(name_or_path=str(name or ""), task=task)
    model.num_labels = _num_labels(section, task, ctx)
    model.torch_dtype = _dtype(section, ctx)
    if "trust_remote_code" in section and check_bool(
        ctx, "model.trust_remote_code", section["trust_remote_code"]
    ):
        model.trust_remote_code = section["trust_remote_code"]
    model.attn_implementation = _attn(section.get("attn_implementation"), ctx)
    revision = section.get("revision")
    if revision is not None and not isinstance(revision, str):
        # YAML turns an unquoted short sha like 0123456 into a number (octal, even), which is never meant.
        ctx.problem(
            "model.revision", f"expected a string, got {type_name(revision)} {revision!r}", "quote it"
        )
    elif revision is not None:
        model.revision = revision
    model.quantization = _quantization(section.get("quantization"), ctx)
    device_map = section.get("device_map")
    if device_map is not None and not isinstance(device_map, str | dict):
        ctx.problem(
            "model.device_map", f"expected a string or mapping, got {type_name(device_map)}", "use auto"
        )
    else:
        model.device_map = device_map
    return model, task_given


def _task(section: dict[str, Any], hint: Task | None, ctx: Ctx) -> tuple[Task, bool]:
    value = section.get("task")
    if value is None:
        return (hint or "causal-lm"), False
    if value in TASKS:
        return value, True
    if isinstance(value, str) and value.upper() in TASK_TYPE_TO_TASK:
        mapped = TASK_TYPE_TO_TASK[value.upper()]
        ctx.note(f"model.task: {value!r} -> {mapped!r} (loralab's task names)")
        return mapped, True
    guess = closest(str(value), TASKS)
    hint_text = f"; did you mean `{guess}`?" if guess else ""
    ctx.problem("model.task", f"unknown task {value!r}{hint_text}", f"use one of: {', '.join(TASKS)}")
    return (hint or "causal-lm"), False


def _num_labels(section: dict[str, Any], task: Task, ctx: Ctx) -> int | None:
    value = section.get("num_labels")
    if value is None:
        return None  # seq-cls: inferred from the training labels (the loader checks they are given)
    if not check_int(ctx, "model.num_labels", value, minimum=2):
        return None
    if task != "seq-cls":
        ctx.note(f"model.num_labels: ignored for task {task!r}")
    return int(value)


def _dtype(section: dict[str, Any], ctx: Ctx) -> str | None:
    old, new = section.get("torch_dtype"), section.get("dtype")
    if old is not None and new is not None and old != new:
        ctx.problem("model.dtype", f"torch_dtype {old!r} and dtype {new!r} disagree", "keep only `dtype`")
        return None
    key = "model.dtype" if new is not None else "model.torch_dtype"
    value = new if new is not None else old
    if value is None:
        return None
    # `torch_dtype` is loralab's documented key (what users write); it is passed on as transformers 5's
    # `dtype`, which needs no note: nothing about the user's file is wrong.
    if isinstance(value, str) and value.lower() in _DTYPE_ALIASES:
        ctx.note(f"{key}: {value!r} -> {_DTYPE_ALIASES[value.lower()]!r}")
        return _DTYPE_ALIASES[value.lower()]
    if isinstance(value, str) and value.removeprefix("torch.") in DTYPES:
        return value.removeprefix("torch.")
    guess = closest(str(value), DTYPES)
    hint = f"; did you mean `{guess}`?" if guess else ""
    ctx.problem(key, f"unknown dtype {value!r}{hint}", f"use one of: {', '.join(DTYPES)}")
    return None


def _attn(value: Any, ctx: Ctx) -> str | None:
    if value is None:
        return None
    if isinstance(value, str) and (value in ATTN_IMPLEMENTATIONS or "/" in value):
        return value
    guess = closest(str(value), ATTN_IMPLEMENTATIONS)
    hint = f"; did you mean `{guess}`?" if guess else ""
    ctx.problem(
        "model.attn_implementation",
        f"unknown attention implementation {value!r}{hint}",
        f"use one of: {', '.join(ATTN_IMPLEMENTATIONS)}, or a Hub kernel id (kernels-community/flash-attn)",
    )
    return None


def _quantization(value: Any, ctx: Ctx) -> dict[str, Any] | None:
    if value is None:
        return None
    section = as_mapping(ctx, "model.quantization", value, "quantization: {load_in_4bit: true}")
    if section is None:
        return None
    if section.get("load_in_4bit") is True and section.get("load_in_8bit") is True:
        ctx.problem(
            "model.quantization.load_in_8bit",
            "load_in_4bit and load_in_8bit are both true",
            "keep one (4-bit for QLoRA)",
        )
    quant_type = section.get("bnb_4bit_quant_type")
    if quant_type is not None and quant_type not in ("nf4", "fp4"):
        ctx.problem(
            "model.quantization.bnb_4bit_quant_type", f"unknown 4-bit type {quant_type!r}", "use nf4 or fp4"
        )
    return dict(section)


# --- data -----------------------------------------------------------------------------------------

_DATA_STR_KEYS = (
    "train_file",
    "validation_file",
    "test_file",
    "text_field",
    "text_template",
    "label_field",
    "prompt_field",
    "response_field",
)
_DATA_LEGACY = ("use_class_weights", "class_weight_alpha")  # the flat form seed 000 describes
DATA_KEYS = (*_DATA_STR_KEYS, "max_length", "extract_ratio", "seed", "class_weights")


def build_data(value: Any, ctx: Ctx) -> DataConfig:
    section = as_mapping(ctx, "data", value, "data: {train_file: train.jsonl}") or {}
    data = DataConfig()
    for key, item in section.items():
        path = join("data", str(key))
        if key in _DATA_STR_KEYS:
            if check_str(ctx, path, item):
                setattr(data, key, item)
        elif key in ("max_length", "seed"):
            if check_int(ctx, path, item, minimum=1 if key == "max_length" else 0):
                setattr(data, key, item)
        elif key == "extract_ratio":
            if is_number(item) and 0 < item <= 1:
                data.extract_ratio = float(item)
            else:
                ctx.problem(
                    path, f"extract_ratio is a fraction in (0, 1], got {item!r}", "e.g. extract_ratio: 0.1"
                )
        elif key not in ("class_weights", *_DATA_LEGACY):
            unknown_key(ctx, "data", str(key), DATA_KEYS, "data key", listing=True)
    if data.text_field and data.text_template:
        ctx.problem("data.text_template", "text_field and text_template are both given", "keep one of them")
    data.class_weights = _class_weights(section, ctx)
    return data


def _class_weights(section: dict[str, Any], ctx: Ctx) -> ClassWeights | None:
    value = section.get("class_weights")
    flat = {k: section[k] for k in _DATA_LEGACY if k in section}
    if value is not None and flat:
        ctx.problem("data.use_class_weights", "class weights are given twice", "keep only data.class_weights")
        return None
    if flat:
        value = {"enable": flat.get("use_class_weights", True), "alpha": flat.get("class_weight_alpha", 1.0)}
        ctx.note(f"data: {', '.join(flat)} read as data.class_weights {value}")
    if value is None:
        return None
    if isinstance(value, bool):
        return ClassWeights(enable=value)
    mapping = as_mapping(ctx, "data.class_weights", value, "class_weights: {enable: true, alpha: 0.4}")
    if mapping is None:
        return None
    weights = ClassWeights(enable=True)
    for key, item in mapping.items():
        path = join("data.class_weights", str(key))
        if key in ("enable", "use_class_weights"):
            if check_bool(ctx, path, item):
                weights.enable = item
        elif key == "alpha":
            if is_number(item) and item >= 0:
                weights.alpha = float(item)
            else:
                ctx.problem(
                    path, f"alpha must be a number >= 0, got {item!r}", "0 = uniform, 1 = inverse frequency"
                )
        else:
            unknown_key(ctx, "data.class_weights", str(key), ("enable", "alpha"), "class_weights key", True)
    return weights


# --- deepspeed ------------------------------------------------------------------------------------


def load_deepspeed(value: Any, key: str, ctx: Ctx) -> tuple[dict[str, Any] | None, Path | None]:
    """A DeepSpeed config from a path (JSON or YAML, relative to the YAML's folder) or an inline mapping."""
    if value is None:
        return None, None
    if isinstance(value, dict):
        return value, None
    if not isinstance(value, str | Path):
        ctx.problem(
            key, f"expected a file path or a mapping, got {type_name(value)}", "e.g. deepspeed: ds_z2.json"
        )
        return None, None
    path = Path(value).expanduser()
    path = path if path.is_absolute() else (ctx.base_dir / path)
    if not path.is_file():
        ctx.problem(
            key,
            f"DeepSpeed config {str(value)!r} not found (looked at {path})",
            "paths are relative to the experiment file's folder",
        )
        return None, None
    text = path.read_text(encoding="utf-8")
    try:
        loaded = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        ctx.problem(
            key, f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}", "fix the JSON"
        )
        return None, None
    except yaml.YAMLError as exc:
        ctx.problem(key, f"{path}: invalid YAML: {exc}".replace("\n", " "), "fix the YAML")
        return None, None
    if not isinstance(loaded, dict):
        ctx.problem(
            key, f"{path}: a DeepSpeed config must be a mapping, got {type_name(loaded)}", "fix the file"
        )
        return None, None
    return loaded, path.resolve()


# accelerate's DeepSpeedPlugin (which the HF Trainer builds from TrainingArguments.deepspeed) fills an
# "auto" zero_optimization.stage with its own zero_stage: ACCELERATE_DEEPSPEED_ZERO_STAGE, else 2
# (accelerate/utils/dataclasses.py, DeepSpeedPlugin.__post_init__). transformers'
# HfTrainerDeepSpeedConfig itself fills no stage. `plan` resolves it the same way.
ZERO_STAGES = (0, 1, 2, 3)
OFFLOAD_DEVICES = ("none", "cpu", "nvme", "auto")


def check_deepspeed(ds: dict[str, Any], file: Path | None, ctx: Ctx) -> None:
    """The parts of a DeepSpeed config that loralab and the HF/accelerate integration read, checked
    before a run: a mistake here otherwise surfaces as a ValueError deep inside accelerate or DeepSpeed
    at the first step, or as a plan of a ZeRO stage that does not exist."""
    where = f" (in {file.name})" if file is not None else ""
    zo = ds.get("zero_optimization")
    if zo is None:
        # accelerate: "Please specify the ZeRO optimization config in the DeepSpeed config."
        ctx.problem(
            "deepspeed.zero_optimization",
            f"the DeepSpeed config{where} has no zero_optimization section; accelerate's DeepSpeedPlugin, "
            "which the HF Trainer builds, refuses to start without one",
            "add zero_optimization: {stage: 0} (no sharding), 1, 2 or 3",
        )
    elif not isinstance(zo, dict):
        ctx.problem(
            "deepspeed.zero_optimization",
            f"expected a mapping{where}, got {type_name(zo)} {zo!r}",
            "write it as zero_optimization: {stage: 2}",
        )
    else:
        _check_zero(zo, where, ctx)
    for block in ("bf16", "fp16"):
        value = ds.get(block)
        if value is None:
            continue
        if not isinstance(value, dict):
            ctx.problem(
                f"deepspeed.{block}",
                f"expected a mapping{where}, got {type_name(value)} {value!r}",
                f'write it as {block}: {{enabled: true}} (or "auto")',
            )
        elif value.get("enabled", False) not in (True, False, "auto"):
            ctx.problem(
                f"deepspeed.{block}.enabled",
                f'expected true, false or "auto"{where}, got {value.get("enabled")!r}',
                'write true, false or "auto" (then it follows training_args)',
            )
    if all(isinstance(ds.get(b), dict) and ds[b].get("enabled") is True for b in ("bf16", "fp16")):
        ctx.problem(
            "deepspeed.fp16",
            f"bf16 and fp16 are both enabled{where}; DeepSpeed runs one half precision",
            "keep bf16 on Ampere or newer GPUs, otherwise fp16",
        )


def _check_zero(zo: dict[str, Any], where: str, ctx: Ctx) -> None:
    stage = zo.get("stage", 0)
    if isinstance(stage, bool) or (stage not in ZERO_STAGES and stage != "auto"):
        ctx.problem(
            "deepspeed.zero_optimization.stage",
            f"ZeRO stage {stage!r}{where} does not exist; DeepSpeed has stages 0 to 3",
            'set 0, 1, 2 or 3 (or "auto": accelerate then uses 2)',
        )
    offload = zo.get("offload_optimizer")
    if stage == 0 and isinstance(offload, dict) and offload.get("device") in ("cpu", "nvme"):
        # DeepSpeed's config docs: offload_optimizer is valid with stage 1 (recent releases), 2 and 3.
        ctx.problem(
            "deepspeed.zero_optimization.offload_optimizer",
            f"optimizer offload needs ZeRO stage 1 or more, but the stage is 0{where}",
            "set zero_optimization.stage: 2, or offload_optimizer.device: none",
        )
    for block in ("offload_optimizer", "offload_param"):
        value = zo.get(block)
        if value is None:
            continue
        key = f"deepspeed.zero_optimization.{block}"
        if not isinstance(value, dict):
            ctx.problem(
                key,
                f"expected a mapping{where}, got {type_name(value)} {value!r}",
                f"{block}: {{device: cpu}}",
            )
        elif value.get("device", "none") not in OFFLOAD_DEVICES:
            ctx.problem(
                f"{key}.device",
                f"unknown offload device {value.get('device')!r}{where}",
                "use cpu, nvme or none",
            )


# DeepSpeed key -> the TrainingArguments value HF's integration fills it from, and requires it to equal
# unless it is "auto" (transformers/integrations/deepspeed.py, HfTrainerDeepSpeedConfig
# .trainer_config_process; a mismatch is a ValueError at the start of training).
DS_MATCHES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("train_micro_batch_size_per_gpu", ("per_device_train_batch_size",)),
    ("gradient_accumulation_steps", ("gradient_accumulation_steps",)),
    ("gradient_clipping", ("max_grad_norm",)),
    ("optimizer.params.lr", ("learning_rate",)),
    ("optimizer.params.betas", ("adam_beta1", "adam_beta2")),
    ("optimizer.params.eps", ("adam_epsilon",)),
    ("optimizer.params.weight_decay", ("weight_decay",)),
    ("scheduler.params.warmup_max_lr", ("learning_rate",)),
    ("fp16.enabled", ("fp16", "fp16_full_eval")),
    ("bf16.enabled", ("bf16", "bf16_full_eval")),
)


def _quoted(value: Any) -> bool:
    """A string (other than "auto") where DeepSpeed expects a number, a boolean or a list of numbers."""
    if isinstance(value, list):
        return any(isinstance(v, str) for v in value)
    return isinstance(value, str)


def check_deepspeed_vs_args(
    ds: dict[str, Any], args: dict[str, Any], defaults: dict[str, Any], ctx: Ctx
) -> None:
    """Values HF's DeepSpeed integration requires to match TrainingArguments unless they are "auto"."""
    for ds_key, ta_keys in DS_MATCHES:
        ds_value = ds_get(ds, ds_key)
        if ds_value is None or ds_value == "auto":
            continue
        values = [args.get(k, defaults.get(k)) for k in ta_keys]
        if _quoted(ds_value):
            # JSON "2e-5" is text: transformers compares it with the float and refuses, or DeepSpeed
            # fails on it mid-setup (LLaMA-Factory #1116); the fix is the number or "auto"
            ctx.problem(
                f"deepspeed.{ds_key}",
                f"DeepSpeed {ds_key} is the text {ds_value!r} where a "
                f"{'boolean' if ds_key.endswith('.enabled') else 'number'} belongs "
                f"(training_args: {', '.join(f'{k}={v!r}' for k, v in zip(ta_keys, values, strict=True))})",
                'write it without quotes (in YAML, 2e-5 without a dot is text too: write 2.0e-5), or "auto" '
                "to take the Trainer's value",
            )
            continue
        if ds_key.endswith(".enabled"):
            # HF fills fp16.enabled with `args.fp16 or args.fp16_full_eval`
            ta_value: Any = any(bool(v) for v in values)
            shown = " or ".join(f"training_args.{k}" for k in ta_keys)
            disagree = isinstance(ds_value, bool) and ds_value != ta_value
        elif len(ta_keys) > 1:
            ta_value = values
            shown = "[" + ", ".join(f"training_args.{k}" for k in ta_keys) + "]"
            numbers = [v for v in [*ds_value, *values] if is_number(v)] if isinstance(ds_value, list) else []
            disagree = len(numbers) == len(ds_value) + len(values) and list(ds_value) != values
        else:
            ta_value, shown = values[0], f"training_args.{ta_keys[0]}"
            disagree = is_number(ds_value) and is_number(ta_value) and ds_value != ta_value
        if disagree:
            ctx.problem(
                f"deepspeed.{ds_key}",
                f"DeepSpeed {ds_key} is {ds_value} but {shown} is {ta_value}; the HF Trainer refuses to "
                "start with the two disagreeing (transformers: 'Please correct the following DeepSpeed "
                "config values that mismatch TrainingArguments values')",
                f'set {ds_key} to "auto" in the DeepSpeed config',
            )


# --- tracking, experiment -------------------------------------------------------------------------

TRACKING_KEYS = ("backend", "uri", "experiment_name", "run_name", "tags")


def build_tracking(value: Any, ctx: Ctx) -> dict[str, Any] | None:
    if value is None:
        return None
    section = as_mapping(ctx, "tracking", value, "tracking: {experiment_name: my-exp}")
    if section is None:
        return None
    if set(section) == {"mlflow"} and isinstance(section["mlflow"], dict):
        section = {"backend": "mlflow", **section["mlflow"]}
        ctx.note("tracking.mlflow: read as tracking with backend: mlflow")
    out: dict[str, Any] = {"backend": "mlflow"}
    for key, item in section.items():
        path = join("tracking", str(key))
        if key not in TRACKING_KEYS:
            unknown_key(ctx, "tracking", str(key), TRACKING_KEYS, "tracking key", listing=True)
        elif key == "backend" and item not in ("mlflow", "none"):
            ctx.problem(path, f"unknown tracking backend {item!r}", "use mlflow or none")
        elif key == "tags" and not isinstance(item, dict):
            ctx.problem(path, f"expected a mapping, got {type_name(item)}", "tags: {phase: baseline}")
        elif key in ("backend", "tags") or check_str(ctx, path, item):
            out[key] = item
    return out


def build_experiment(value: Any, ctx: Ctx) -> dict[str, Any] | None:
    if value is None:
        return None
    section = as_mapping(ctx, "experiment", value, "experiment: {name: baseline, phase: 1}")
    if section is None:
        return None
    for key in ("name", "phase"):
        item = section.get(key)
        if item is not None and not isinstance(item, str | int):
            ctx.problem(join("experiment", key), f"expected a string, got {type_name(item)}", "quote it")
    return dict(section)
