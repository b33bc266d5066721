"""`training_args:` — migrated to transformers 5 and checked against the installed `TrainingArguments`."""

from __future__ import annotations

from typing import Any

from loralab.config._common import Ctx, as_mapping, check_mapping_fields, is_number, join
from loralab.config.legacy import migrate_training_args
from loralab.config.schema import FieldSpec

PREFIX = "training_args"


def build_training_args(
    value: Any, specs: dict[str, FieldSpec], seed: int | None, ctx: Ctx
) -> tuple[dict[str, Any], Any]:
    """(TrainingArguments kwargs in transformers-5 form, the `deepspeed` value taken out of them).

    `deepspeed` is returned separately because the loader resolves it (a path relative to the YAML file,
    or a mapping) into the top-level `deepspeed` section, the one place the rest of loralab reads it from.
    """
    args = as_mapping(ctx, PREFIX, value, "training_args: {learning_rate: 2.0e-4}")
    if not args:
        args = {}
    args = {str(k): v for k, v in args.items()}
    deepspeed = args.pop("deepspeed", None)
    migrated, problems = migrate_training_args(args, ctx.file, ctx.notes, PREFIX)
    ctx.problems.extend(problems)
    checked = check_mapping_fields(ctx, PREFIX, migrated, specs, "TrainingArguments")
    _semantic_checks(checked, specs, ctx)
    if seed is not None and "seed" not in checked:
        # One top-level seed is what people mean by "the run's seed"; TrainingArguments has its own.
        checked["seed"] = seed
    return checked, deepspeed


def _get(args: dict[str, Any], specs: dict[str, FieldSpec], key: str) -> Any:
    if key in args:
        return args[key]
    spec = specs.get(key)
    return spec.default if spec is not None else None


def _semantic_checks(args: dict[str, Any], specs: dict[str, FieldSpec], ctx: Ctx) -> None:
    """Mistakes TrainingArguments would only raise on (after importing torch), or never."""
    if args.get("fp16") is True and args.get("bf16") is True:
        ctx.problem(
            join(PREFIX, "bf16"),
            "fp16 and bf16 are both true; mixed precision takes one",
            "keep bf16 for bf16 weights on Ampere or newer GPUs, otherwise fp16",
        )
    for key in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        value = args.get(key)
        if is_number(value) and value < 1:
            ctx.problem(join(PREFIX, key), f"{key} must be >= 1, got {value}", "use a positive whole number")
    for key in ("learning_rate", "num_train_epochs"):
        value = args.get(key)
        if is_number(value) and value <= 0 and not (key == "num_train_epochs" and _max_steps(args) > 0):
            ctx.problem(join(PREFIX, key), f"{key} must be > 0, got {value}", "use a positive number")
    _check_steps_and_optimizer(args, ctx)
    warmup = args.get("warmup_steps")
    if is_number(warmup) and warmup < 0:
        ctx.problem(
            join(PREFIX, "warmup_steps"),
            f"warmup_steps must be >= 0, got {warmup}",
            "a whole number of steps, or a fraction in [0, 1) of the total",
        )
    elif is_number(warmup) and warmup > 1 and not float(warmup).is_integer():
        ctx.problem(
            join(PREFIX, "warmup_steps"),
            f"warmup_steps {warmup} is neither a step count nor a fraction below 1",
            "a whole number of steps, or a fraction in [0, 1) of the total",
        )
    _check_best_model(args, specs, ctx)


# Values TrainingArguments accepts but that fail once training runs: a 0 interval is a modulo by zero at
# the first step (`global_step % save_steps`); torch.optim.AdamW raises for a negative weight decay or
# epsilon and for betas outside [0, 1); torch's DataLoader for negative workers.
_INTERVALS = ("logging_steps", "save_steps", "eval_steps")
_NON_NEGATIVE = ("weight_decay", "adam_epsilon", "dataloader_num_workers", "label_smoothing_factor")


def _check_steps_and_optimizer(args: dict[str, Any], ctx: Ctx) -> None:
    for key in _INTERVALS:
        value = args.get(key)
        if not is_number(value):
            continue
        if value <= 0:
            ctx.problem(
                join(PREFIX, key),
                f"{key} must be > 0, got {value}",
                "a whole number of steps, or a fraction in (0, 1) of the total",
            )
        elif value > 1 and not float(value).is_integer():
            # TrainingArguments: "--logging_steps must be an integer if bigger than 1"
            ctx.problem(
                join(PREFIX, key),
                f"{key} {value} is neither a step count nor a fraction below 1",
                "a whole number of steps, or a fraction in (0, 1) of the total",
            )
    for key in _NON_NEGATIVE:
        value = args.get(key)
        if is_number(value) and value < 0:
            ctx.problem(join(PREFIX, key), f"{key} must be >= 0, got {value}", "use 0 or a positive value")
    for key in ("adam_beta1", "adam_beta2"):
        value = args.get(key)
        if is_number(value) and not 0 <= value < 1:
            ctx.problem(
                join(PREFIX, key),
                f"{key} must be in [0, 1), got {value}",
                "e.g. adam_beta1: 0.9, adam_beta2: 0.999",
            )
    smoothing = args.get("label_smoothing_factor")
    if is_number(smoothing) and smoothing > 1:
        ctx.problem(
            join(PREFIX, "label_smoothing_factor"),
            f"label_smoothing_factor is a fraction in [0, 1], got {smoothing}",
            "e.g. 0.1",
        )


def _max_steps(args: dict[str, Any]) -> int:
    value = args.get("max_steps", -1)
    return value if isinstance(value, int) and not isinstance(value, bool) else -1


def _check_best_model(args: dict[str, Any], specs: dict[str, FieldSpec], ctx: Ctx) -> None:
    # TrainingArguments.__post_init__ raises for this after torch is imported; catch it in `plan`.
    if args.get("load_best_model_at_end") is not True:
        return
    eval_strategy = _get(args, specs, "eval_strategy")
    save_strategy = _get(args, specs, "save_strategy")
    if eval_strategy == "no":
        ctx.problem(
            join(PREFIX, "load_best_model_at_end"),
            "load_best_model_at_end needs evaluation, but eval_strategy is 'no'",
            "set eval_strategy to 'steps' or 'epoch'",
        )
    elif save_strategy != "best" and save_strategy != eval_strategy:
        ctx.problem(
            join(PREFIX, "load_best_model_at_end"),
            f"load_best_model_at_end needs save_strategy to match eval_strategy "
            f"(save: {save_strategy!r}, eval: {eval_strategy!r})",
            f"set save_strategy to {eval_strategy!r}",
        )
