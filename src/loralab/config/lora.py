"""The LoRA section in its three spellings, validated against the installed `peft.LoraConfig`.

Accepted forms, all normalised to `LoraSection(enable, config)`:
  lora: {enable: true, config: {r: 8, ...}}     # seed 000 §8
  lora_defaults: {r: 8, ...}                    # seed 001
  lora: {r: 8, ...}                             # seed 000 §5.1, tolerated with a note
"""

from __future__ import annotations

from typing import Any

from loralab.config._common import (
    Ctx,
    as_mapping,
    check_bool,
    check_mapping_fields,
    closest,
    is_number,
    join,
    type_name,
)
from loralab.config.models import PEFT_TASK_TYPES, TASK_TO_TASK_TYPE, TASK_TYPE_TO_TASK, LoraSection, Task
from loralab.config.schema import FieldSpec

_SECTION_KEYS = ("enable", "config")


def raw_lora(raw: dict[str, Any], ctx: Ctx) -> tuple[dict[str, Any], str, bool | None]:
    """(LoraConfig mapping as written, its key prefix, `enable` if given), whichever form the file uses."""
    if "lora" in raw and "lora_defaults" in raw:
        ctx.problem(
            "lora_defaults",
            "both `lora` and `lora_defaults` are given; loralab would not know which one to use",
            "keep one: `lora: {enable: true, config: {...}}` is the canonical form",
        )
    if "lora" not in raw and "lora_defaults" in raw:
        fields = as_mapping(
            ctx, "lora_defaults", raw["lora_defaults"], "lora_defaults: {r: 8, lora_alpha: 16}"
        )
        if fields:
            ctx.note("lora_defaults: read as lora.config (loralab's form is `lora: {enable, config: {...}}`)")
        return fields or {}, "lora_defaults", None
    section = as_mapping(ctx, "lora", raw.get("lora"), "lora: {enable: true, config: {r: 8}}")
    if not section:
        return {}, "lora.config", None
    enable = section.get("enable")
    if "config" in section:
        extra = [k for k in section if k not in _SECTION_KEYS]
        for key in extra:
            guess = closest(str(key), _SECTION_KEYS)
            ctx.problem(
                join("lora", str(key)),
                f"`{key}` is next to `lora.config`; only `enable` and `config` belong there",
                f"did you mean `{guess}`?" if guess else f"move `{key}` into lora.config",
            )
        fields = as_mapping(ctx, "lora.config", section["config"], "config: {r: 8, lora_alpha: 16}")
        return fields or {}, "lora.config", enable
    fields = {k: v for k, v in section.items() if k != "enable"}
    if not fields:
        return {}, "lora.config", enable
    ctx.note("lora: LoraConfig fields written directly under `lora` read as lora.config")
    return fields, "lora", enable


def _task_type_of(fields: dict[str, Any]) -> str | None:
    value = fields.get("task_type")
    return value.upper() if isinstance(value, str) else None


def task_hint(fields: dict[str, Any]) -> Task | None:
    """The loralab task implied by `task_type`, used when `model.task` is not given."""
    task_type = _task_type_of(fields)
    return TASK_TYPE_TO_TASK.get(task_type) if task_type else None


def build_lora(
    fields: dict[str, Any],
    prefix: str,
    enable: Any,
    specs: dict[str, FieldSpec],
    task: Task,
    task_given: bool,
    ctx: Ctx,
) -> LoraSection:
    """Validate the LoraConfig fields and return the normalised section."""
    if enable is None or not check_bool(ctx, join(prefix.removesuffix(".config"), "enable"), enable):
        enable = True
    fields = dict(fields)
    _normalise_task_type(fields, prefix, task, task_given, ctx)
    config = check_mapping_fields(ctx, prefix, fields, specs, "LoraConfig")
    _semantic_checks(config, prefix, ctx)
    return LoraSection(enable=bool(enable), config=config)


def _normalise_task_type(fields: dict[str, Any], prefix: str, task: Task, task_given: bool, ctx: Ctx) -> None:
    key = join(prefix, "task_type")
    value = fields.get("task_type")
    if value is None:
        # PEFT needs task_type to keep the classifier head trainable for SEQ_CLS and to pick the right
        # PeftModel class, so the model's task fills it in.
        fields["task_type"] = TASK_TO_TASK_TYPE[task]
        ctx.note(f"{key}: not given, set to {TASK_TO_TASK_TYPE[task]!r} from model.task {task!r}")
        return
    if not isinstance(value, str):
        return  # the type check reports it
    upper = value.upper()
    if upper != value and upper in PEFT_TASK_TYPES:
        fields["task_type"] = upper
        ctx.note(f"{key}: {value!r} -> {upper!r} (PEFT TaskType names are upper case)")
    if upper not in PEFT_TASK_TYPES:
        return  # the choices check reports it, with a suggestion
    mapped = TASK_TYPE_TO_TASK.get(upper)
    if mapped is None:
        ctx.problem(
            key,
            f"task_type {upper} is a PEFT task loralab cannot train (it trains seq-cls, causal-lm, seq2seq)",
            "use SEQ_CLS, CAUSAL_LM or SEQ_2_SEQ_LM",
        )
    elif task_given and mapped != task:
        ctx.problem(
            key,
            f"task_type {upper} means model.task {mapped!r}, but model.task is {task!r}",
            f"set task_type to {TASK_TO_TASK_TYPE[task]} or model.task to {mapped!r}",
        )


def _semantic_checks(config: dict[str, Any], prefix: str, ctx: Ctx) -> None:
    """Rules LoraConfig enforces (or should) that the annotation alone does not say."""
    r = config.get("r")
    if isinstance(r, int) and not isinstance(r, bool) and r < 1:
        ctx.problem(join(prefix, "r"), f"r must be >= 1, got {r}", "use a rank such as 8, 16 or 64")
    alpha = config.get("lora_alpha")
    if is_number(alpha) and alpha <= 0:
        ctx.problem(
            join(prefix, "lora_alpha"),
            f"lora_alpha must be > 0, got {alpha} (the update is scaled by lora_alpha / r)",
            "a common choice is lora_alpha = 2 * r",
        )
    dropout = config.get("lora_dropout")
    if is_number(dropout) and not 0 <= dropout < 1:
        ctx.problem(
            join(prefix, "lora_dropout"),
            f"lora_dropout is a probability in [0, 1), got {dropout}",
            "use a value such as 0.05 or 0.1",
        )
    _check_layers(config, prefix, ctx)
    target = config.get("target_modules")
    if isinstance(target, list) and not target:
        ctx.problem(
            join(prefix, "target_modules"),
            "target_modules is an empty list, so LoRA would adapt nothing",
            'list module names such as [q_proj, v_proj], or write "all-linear"',
        )
    for pattern_key in ("rank_pattern", "alpha_pattern"):
        pattern = config.get(pattern_key)
        if isinstance(pattern, dict):
            for name, value in pattern.items():
                if not is_number(value) or value <= 0:
                    ctx.problem(
                        join(prefix, f"{pattern_key}.{name}"),
                        f"expected a positive number, got {type_name(value)} {value!r}",
                        "map module name patterns to ranks / alphas, e.g. {q_proj: 16}",
                    )


def _check_layers(config: dict[str, Any], prefix: str, ctx: Ctx) -> None:
    # Negative indices count from the last layer (seed 001 writes [-6, ..., -1]); the planner resolves them
    # against the model's layer count, so only their form is checked here.
    layers = config.get("layers_to_transform")
    if isinstance(layers, list):
        if not layers:
            ctx.problem(
                join(prefix, "layers_to_transform"),
                "layers_to_transform is an empty list, so LoRA would adapt no layer",
                "list layer indices, or remove the key to adapt every layer",
            )
        elif len(set(layers)) != len(layers):
            dupes = sorted({x for x in layers if layers.count(x) > 1})
            ctx.note(
                f"{join(prefix, 'layers_to_transform')}: duplicate layer indices {dupes} ignored by PEFT"
            )
    if config.get("layers_pattern") is not None and layers is None:
        ctx.problem(
            join(prefix, "layers_pattern"),
            "layers_pattern only has an effect together with layers_to_transform",
            "add layers_to_transform, or remove layers_pattern",
        )
