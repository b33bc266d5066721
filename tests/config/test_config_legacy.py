"""transformers 4 -> 5 TrainingArguments migration (loralab.config.legacy)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from loralab.config.legacy import LEGACY_FIELDS, migrate_training_args
from loralab.config.snapshot import SHIPPED_PATH
from loralab.errors import Notes

V5_FIELDS = set(json.loads(SHIPPED_PATH.read_text(encoding="utf-8"))["TrainingArguments"])
# Still in transformers 5.23, as deprecated aliases to be removed in v6; everything else in the table is gone.
DEPRECATED_ALIASES = {"gradient_checkpointing", "gradient_checkpointing_kwargs"}


def migrate(args: dict[str, Any]) -> tuple[dict[str, Any], list[str], list[str]]:
    notes = Notes()
    out, problems = migrate_training_args(args, "f.yaml", notes)
    return out, notes.items, [p.key for p in problems]


def test_table_matches_the_installed_transformers() -> None:
    for row in LEGACY_FIELDS:
        assert (row.old in V5_FIELDS) == (row.old in DEPRECATED_ALIASES), row.old
        if row.new is not None:
            assert row.new in V5_FIELDS, row
    assert len({row.old for row in LEGACY_FIELDS}) == len(LEGACY_FIELDS)


@pytest.mark.parametrize(
    ("old", "expected"),
    [
        ({"warmup_ratio": 0.1}, {"warmup_steps": 0.1}),
        ({"warmup_ratio": 0.0}, {}),
        ({"warmup_ratio": 0.1, "warmup_steps": 0}, {"warmup_steps": 0.1}),
        ({"evaluation_strategy": "steps"}, {"eval_strategy": "steps"}),
        ({"evaluation_strategy": "epoch", "eval_strategy": "epoch"}, {"eval_strategy": "epoch"}),
        ({"group_by_length": True}, {"train_sampling_strategy": "group_by_length"}),
        ({"group_by_length": False}, {}),
        ({"overwrite_output_dir": True}, {}),
        ({"logging_dir": "logs"}, {}),
        ({"no_cuda": True}, {"use_cpu": True}),
        ({"use_mps_device": True}, {}),
        ({"per_gpu_train_batch_size": 4}, {"per_device_train_batch_size": 4}),
        ({"per_gpu_eval_batch_size": 4}, {"per_device_eval_batch_size": 4}),
        ({"fp16_backend": "amp"}, {}),
        ({"half_precision_backend": "auto"}, {}),
        ({"fp16_opt_level": "O1"}, {}),
        ({"push_to_hub_model_id": "m"}, {"hub_model_id": "m"}),
        ({"push_to_hub_model_id": "m", "push_to_hub_organization": "org"}, {"hub_model_id": "org/m"}),
        ({"push_to_hub_organization": "org"}, {}),
        ({"push_to_hub_token": "t"}, {"hub_token": "t"}),
        ({"tpu_num_cores": 8}, {}),
        ({"tpu_metrics_debug": True}, {"debug": "tpu_metrics_debug"}),
        (
            {"tpu_metrics_debug": True, "debug": "underflow_overflow"},
            {"debug": "underflow_overflow tpu_metrics_debug"},
        ),
        ({"adafactor": True}, {"optim": "adafactor"}),
        ({"fsdp_min_num_params": 1000}, {"fsdp_config": {"min_num_params": 1000}}),
        (
            {"fsdp_transformer_layer_cls_to_wrap": "Qwen3DecoderLayer", "fsdp_config": {"xla": False}},
            {"fsdp_config": {"xla": False, "transformer_layer_cls_to_wrap": "Qwen3DecoderLayer"}},
        ),
        ({"include_inputs_for_metrics": True}, {"include_for_metrics": ["inputs"]}),
        ({"include_tokens_per_second": True}, {}),
        ({"torchdynamo": "inductor"}, {"torch_compile_backend": "inductor", "torch_compile": True}),
        ({"jit_mode_eval": True, "past_index": -1, "ray_scope": "last", "mp_parameters": ""}, {}),
        ({"save_safetensors": True, "use_legacy_prediction_loop": False}, {}),
        ({"gradient_checkpointing": True}, {"activation_checkpointing": True}),
        (
            {"gradient_checkpointing_kwargs": {"use_reentrant": False}},
            {"activation_checkpointing_kwargs": {"use_reentrant": False}},
        ),
    ],
)
def test_each_legacy_field(old: dict[str, Any], expected: dict[str, Any]) -> None:
    out, notes, problems = migrate(old)
    assert problems == []
    assert out == expected
    legacy = [k for k in old if k in {row.old for row in LEGACY_FIELDS}]
    assert len(notes) == len(legacy)
    for key in legacy:
        assert sum(n.startswith(f"training_args.{key}:") for n in notes) == 1


def test_note_text() -> None:
    _, notes, _ = migrate({"warmup_ratio": 0.1, "logging_dir": "logs"})
    assert notes == [
        "training_args.warmup_ratio: 0.1 -> warmup_steps: 0.1 "
        "(transformers 5 takes a fraction in warmup_steps)",
        "training_args.logging_dir: logs dropped "
        "(removed in transformers 5; set the TENSORBOARD_LOGGING_DIR env variable)",
    ]


@pytest.mark.parametrize(
    "args",
    [
        {"evaluation_strategy": "steps", "eval_strategy": "epoch"},
        {"warmup_ratio": 0.1, "warmup_steps": 100},
        {"no_cuda": True, "use_cpu": False},
        {"group_by_length": True, "train_sampling_strategy": "sequential"},
        {"adafactor": True, "optim": "adamw_torch"},
    ],
)
def test_conflicts_are_problems(args: dict[str, Any]) -> None:
    _, _, problems = migrate(args)
    old = next(k for k in args if k in {row.old for row in LEGACY_FIELDS})
    assert problems == [f"training_args.{old}"]


@pytest.mark.parametrize("ratio", [1.0, -0.1, "0.1x"])
def test_bad_warmup_ratio(ratio: Any) -> None:
    _, _, problems = migrate({"warmup_ratio": ratio})
    assert problems == ["training_args.warmup_ratio"]
