"""transformers 4.x `TrainingArguments` fields that transformers 5 renamed or removed, and their v5 form.

Our users' YAML files were written for transformers 4.x. Each row below was checked against the installed
transformers 5.23 `training_args.py` (field absent there) and transformers 4.57.1's `training_args.py`
(what the field did, and what its own deprecation message pointed to). `migrate_training_args` rewrites a
`training_args` mapping to the v5 form, one note per field it touched, and a problem where the old and the
new field are both given with different values.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loralab.errors import Notes, Problem

# A handler gets (old value, the whole mapping) and returns the v5 keys to set ({} drops the field).
Handler = Callable[[Any, dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class LegacyField:
    """One transformers-4 field: where it went in transformers 5 and why."""

    old: str
    new: str | None  # the v5 field it maps to; None when removed with no equivalent
    why: str  # the note's explanation
    handler: Handler | None = None  # custom rewrite; None drops the field
    check: Callable[[Any], str | None] | None = None  # returns what is wrong with the old value, if anything


def _same(new: str) -> Handler:
    return lambda value, _args: {new: value}


def _if_true(new: str, new_value: Any) -> Handler:
    return lambda value, _args: {new: new_value} if value else {}


def _warmup_ratio(value: Any, _args: dict[str, Any]) -> dict[str, Any]:
    # A ratio of 0 was the v4 default ("no warmup"); dropping it keeps v5's default of 0 steps.
    return {"warmup_steps": float(value)} if value else {}


def _check_ratio(value: Any) -> str | None:
    # v5 reads warmup_steps >= 1 as a step count, so a ratio of 1.0 would silently become one step.
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        return f"warmup_ratio must be a number in [0, 1), got {value!r}"
    return None


def _append_debug(value: Any, args: dict[str, Any]) -> dict[str, Any]:
    if not value:
        return {}
    debug = args.get("debug") or ""
    if isinstance(debug, list):
        return {"debug": [*debug, "tpu_metrics_debug"]}
    return {"debug": f"{debug} tpu_metrics_debug".strip()}


def _include_inputs(value: Any, args: dict[str, Any]) -> dict[str, Any]:
    if not value:
        return {}
    current = list(args.get("include_for_metrics") or [])
    return {"include_for_metrics": current if "inputs" in current else [*current, "inputs"]}


def _fsdp_key(key: str) -> Handler:
    def handler(value: Any, args: dict[str, Any]) -> dict[str, Any]:
        if value in (None, 0, ""):
            return {}
        config = args.get("fsdp_config")
        merged = dict(config) if isinstance(config, dict) else {}
        merged[key] = value
        return {"fsdp_config": merged}

    return handler


def _hub_org(value: Any, args: dict[str, Any]) -> dict[str, Any]:
    # v4 pushed to "<organization>/<model id>"; v5 takes the full repo id in hub_model_id.
    if not value:
        return {}
    model_id = args.get("hub_model_id") or args.get("push_to_hub_model_id")
    if not model_id:
        return {}
    name = str(model_id).split("/")[-1]
    return {"hub_model_id": f"{value}/{name}"}


def _torchdynamo(value: Any, _args: dict[str, Any]) -> dict[str, Any]:
    # v4 __post_init__: torch_compile_backend = torchdynamo, and any backend turns torch_compile on.
    return {"torch_compile_backend": value, "torch_compile": True} if value else {}


# Sources: "v5" = transformers 5.23.0 training_args.py, "v4" = transformers 4.57.1 training_args.py.
LEGACY_FIELDS: tuple[LegacyField, ...] = (
    # v5 field `warmup_steps: float`, help: "an integer (exact steps) or a float in [0, 1) (ratio of total
    # steps)"; `get_warmup_steps` uses ceil(total * warmup_steps) below 1. v4 had a separate warmup_ratio.
    LegacyField(
        "warmup_ratio",
        "warmup_steps",
        "transformers 5 takes a fraction in warmup_steps",
        _warmup_ratio,
        _check_ratio,
    ),
    # v4.41 renamed evaluation_strategy to eval_strategy (4.57.1 no longer has the old name).
    LegacyField(
        "evaluation_strategy", "eval_strategy", "renamed in transformers 4.41", _same("eval_strategy")
    ),
    # v5: `train_sampling_strategy` with choice "group_by_length" (LengthGroupedSampler) replaced the v4 bool.
    LegacyField(
        "group_by_length",
        "train_sampling_strategy",
        "transformers 5 picks the sampler with train_sampling_strategy",
        _if_true("train_sampling_strategy", "group_by_length"),
    ),
    # v5: no overwrite_output_dir; the Trainer writes into output_dir, resuming is resume_from_checkpoint.
    LegacyField(
        "overwrite_output_dir", None, "removed in transformers 5; the Trainer always writes to output_dir"
    ),
    # v5 integrations/integration_utils.py: TensorBoardCallback reads os.getenv("TENSORBOARD_LOGGING_DIR").
    LegacyField(
        "logging_dir", None, "removed in transformers 5; set the TENSORBOARD_LOGGING_DIR env variable"
    ),
    # v4 help: "no_cuda ... deprecated. It will be removed in version 5.0"; v4 set use_cpu = no_cuda.
    LegacyField("no_cuda", "use_cpu", "renamed in transformers 5", _same("use_cpu")),
    # v4 help: "use_mps_device ... deprecated. `mps` device will be used if available similar to `cuda`".
    LegacyField("use_mps_device", None, "removed in transformers 5; mps is used when available"),
    # v4.0 deprecated per_gpu_* in favour of per_device_*; neither v4.57 nor v5 has them.
    LegacyField(
        "per_gpu_train_batch_size",
        "per_device_train_batch_size",
        "renamed in transformers 4",
        _same("per_device_train_batch_size"),
    ),
    LegacyField(
        "per_gpu_eval_batch_size",
        "per_device_eval_batch_size",
        "renamed in transformers 4",
        _same("per_device_eval_batch_size"),
    ),
    # v4 help: fp16_backend "Deprecated. Use half_precision_backend"; v5 has neither (torch amp only).
    LegacyField("fp16_backend", None, "removed in transformers 5; mixed precision always uses torch amp"),
    LegacyField(
        "half_precision_backend", None, "removed in transformers 5; mixed precision always uses torch amp"
    ),
    # v4: fp16_opt_level was the apex AMP level; v5 dropped apex.
    LegacyField("fp16_opt_level", None, "removed in transformers 5 with apex support"),
    # v4 push_to_hub_* fields were deprecated for hub_model_id / hub_token; v5 has only the hub_* fields.
    LegacyField("push_to_hub_model_id", "hub_model_id", "renamed in transformers 5", _same("hub_model_id")),
    LegacyField(
        "push_to_hub_organization",
        "hub_model_id",
        "transformers 5 takes the full repo id '<organization>/<name>' in hub_model_id",
        _hub_org,
    ),
    LegacyField("push_to_hub_token", "hub_token", "renamed in transformers 5", _same("hub_token")),
    # v4 help: tpu_num_cores "automatically passed by launcher script"; v5 has no such field.
    LegacyField("tpu_num_cores", None, "removed in transformers 5; the TPU launcher sets it"),
    # v4 __post_init__ appended " tpu_metrics_debug" to `debug`; v5 keeps DebugOption "tpu_metrics_debug".
    LegacyField("tpu_metrics_debug", "debug", "transformers 5 takes it as a debug option", _append_debug),
    # v4: "`--adafactor` is deprecated ... Use `--optim adafactor`"; v5 OptimizerNames has "adafactor".
    LegacyField(
        "adafactor", "optim", "transformers 5 selects Adafactor with optim", _if_true("optim", "adafactor")
    ),
    # v4 __post_init__ merged these into fsdp_config; v5 reads fsdp_config["min_num_params"] and
    # fsdp_config["transformer_layer_cls_to_wrap"] only.
    LegacyField("fsdp_min_num_params", "fsdp_config", "moved into fsdp_config", _fsdp_key("min_num_params")),
    LegacyField(
        "fsdp_transformer_layer_cls_to_wrap",
        "fsdp_config",
        "moved into fsdp_config",
        _fsdp_key("transformer_layer_cls_to_wrap"),
    ),
    # v4: "include_inputs_for_metrics is deprecated ... use `include_for_metrics`"; it appended "inputs".
    LegacyField(
        "include_inputs_for_metrics",
        "include_for_metrics",
        "transformers 5 lists it in include_for_metrics",
        _include_inputs,
    ),
    # v5 has no tokens-per-second speed metric switch.
    LegacyField("include_tokens_per_second", None, "removed in transformers 5"),
    # v4: "torchdynamo is deprecated ... Use torch_compile_backend".
    LegacyField("torchdynamo", "torch_compile_backend", "renamed in transformers 5", _torchdynamo),
    # v4 fields with no v5 counterpart (absent from v5 training_args.py and trainer.py).
    LegacyField("jit_mode_eval", None, "removed in transformers 5"),
    LegacyField("mp_parameters", None, "removed in transformers 5 (SageMaker model parallel)"),
    LegacyField("past_index", None, "removed in transformers 5"),
    LegacyField("ray_scope", None, "removed in transformers 5"),
    LegacyField("save_safetensors", None, "removed in transformers 5; checkpoints are always safetensors"),
    LegacyField("use_legacy_prediction_loop", None, "removed in transformers 5"),
    # v5 `gradient_checkpointing*`: "Deprecated alias of `activation_checkpointing*`, will be removed in v6."
    LegacyField(
        "gradient_checkpointing",
        "activation_checkpointing",
        "deprecated alias in transformers 5, removed in v6",
        _same("activation_checkpointing"),
    ),
    LegacyField(
        "gradient_checkpointing_kwargs",
        "activation_checkpointing_kwargs",
        "deprecated alias in transformers 5, removed in v6",
        _same("activation_checkpointing_kwargs"),
    ),
)

LEGACY_BY_NAME: dict[str, LegacyField] = {row.old: row for row in LEGACY_FIELDS}


def yaml_value(value: Any) -> str:
    """A value as the user would write it in YAML (notes quote the user's file, not Python)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        plain = value and value.strip() == value and not any(c in value for c in ":#{}[],&*!|>'\"%@`")
        return value if plain else json.dumps(value, ensure_ascii=False)
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value, ensure_ascii=False, default=str)


def _fmt(mapping: dict[str, Any]) -> str:
    return ", ".join(f"{k}: {yaml_value(v)}" for k, v in mapping.items())


def migrate_training_args(
    args: dict[str, Any], file: str, notes: Notes, prefix: str = "training_args"
) -> tuple[dict[str, Any], list[Problem]]:
    """Rewrite transformers-4 fields to their transformers-5 form.

    Returns the new mapping and the conflicts (old and new field both given with different values).
    Rows apply in table order, not file order, so `push_to_hub_organization` always sees the model id.
    """
    out = {k: v for k, v in args.items() if k not in LEGACY_BY_NAME}
    problems: list[Problem] = []
    for row in LEGACY_FIELDS:
        if row.old not in args:
            continue
        value = args[row.old]
        bad = row.check(value) if row.check is not None else None
        if bad:
            problems.append(
                Problem(file, f"{prefix}.{row.old}", bad, "use a fraction such as 0.1, or warmup_steps")
            )
            continue
        updates = row.handler(value, {**args, **out}) if row.handler is not None else {}
        clash = _conflict(updates, args)
        if clash:
            problems.append(
                Problem(
                    file,
                    f"{prefix}.{row.old}",
                    f"{row.old}: {yaml_value(value)} (transformers 4) disagrees with {clash}",
                    f"keep only {clash.split(':')[0]} ({row.why})",
                )
            )
            continue
        out.update(updates)
        target = f"-> {_fmt(updates)}" if updates else "dropped"
        notes.add(f"{prefix}.{row.old}: {yaml_value(value)} {target} ({row.why})")
    return out, problems


# Handlers for these fields merge into the value the user gave, so a given value is not a conflict.
_MERGED = {"fsdp_config", "include_for_metrics", "debug"}


def _conflict(updates: dict[str, Any], original: dict[str, Any]) -> str:
    """'new: value' when the user also set a v5 field to something the legacy field would overwrite."""
    for new_key, new_value in updates.items():
        if new_key not in original or new_key in _MERGED:
            continue
        given = original[new_key]
        if new_key == "warmup_steps" and given == 0:
            continue  # 0 was v4's default, and v4 used the ratio whenever warmup_steps was 0
        if new_key == "torch_compile" and given:
            continue
        if given != new_value:
            return f"{new_key}: {yaml_value(given)}"
    return ""
