"""The seeds' hand-computed figures, derived term by term, and the planner's errors.

Each expected value is written as the arithmetic a person would do (LoRA adds r * (in + out) per
adapted weight, Hu et al. 2021) with a comment on where each term comes from.
"""

from __future__ import annotations

from typing import Any

import pytest

from loralab.arch.cache import get_arch_record
from loralab.errors import PlanError
from loralab.plan import build_plan

SEED000 = {
    "task_type": "SEQ_CLS",
    "r": 256,
    "lora_alpha": 512,
    "lora_dropout": 0.05,
    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "layers_to_transform": list(range(25, 36)),
    "modules_to_save": ["score"],
    "bias": "lora_only",
}


@pytest.fixture(scope="module")
def qwen3_8b_260():
    return get_arch_record("Qwen/Qwen3-8B", task="seq-cls", num_labels=260)


def test_seed000_baseline_and_options(qwen3_8b_260: Any) -> None:
    plan = build_plan(qwen3_8b_260, dict(SEED000))
    # Qwen3-8B: hidden 4096, 32 query heads and 8 KV heads of 128 -> q/o 4096->4096, k/v 4096->1024.
    per_layer_attn = 256 * (4096 + 4096) + 2 * 256 * (4096 + 1024) + 256 * (4096 + 4096)
    assert per_layer_attn == 6_815_744
    score = 260 * 4096  # the seq-cls head (no bias), trained as a modules_to_save copy
    assert plan.counts.lora_params == 11 * per_layer_attn  # layers 25..35
    assert plan.counts.bias_params == 0  # Qwen3 projections have no bias, so lora_only adds nothing
    assert plan.counts.modules_to_save == {"score": score}
    assert plan.counts.trainable_params == 11 * per_layer_attn + score == 76_038_144
    gate_up = 2 * 256 * (4096 + 12288)  # intermediate 12288
    down = 256 * (12288 + 4096)
    by_name = {o.name: o for o in plan.options}
    assert [o.trainable_params for o in plan.options] == [
        76_038_144,
        11 * (per_layer_attn + gate_up) + score,
        11 * (per_layer_attn + gate_up + down) + score,
    ]
    assert plan.options[1].trainable_params == 168_312_832
    assert plan.options[2].trainable_params == 214_450_176
    assert by_name["attention only"].current
    # PEFT keeps LoRA weights in fp32 (autocast_adapter_dtype) and the score copy in bf16.
    assert plan.adapter_bytes == 11 * per_layer_attn * 4 + score * 2


def test_seed001_negative_layers_resolve_to_the_last_six(qwen3_8b_260: Any) -> None:
    lora = {**SEED000, "layers_to_transform": [-6, -5, -4, -3, -2, -1]}
    plan = build_plan(qwen3_8b_260, lora, with_options=False)
    assert plan.spec.layers_to_transform == [30, 31, 32, 33, 34, 35]  # 36 layers: -1 is layer 35
    assert plan.spec.layer_resolution[0] == (-6, 30)
    assert plan.counts.trainable_params == 6 * 6_815_744 + 260 * 4096
    assert "layers_to_transform -6 -> layer 30" in plan.notes


def test_seed002_gpt2_c_proj_matches_the_mlp_too() -> None:
    arch = get_arch_record("openai-community/gpt2", task="causal-lm", num_labels=None)
    plan = build_plan(
        arch, {"task_type": "CAUSAL_LM", "r": 8, "lora_alpha": 16, "target_modules": ["c_attn", "c_proj"]}
    )
    c_attn = 8 * (768 + 2304)  # fused QKV, 768 -> 3 * 768
    attn_c_proj = 8 * (768 + 768)
    mlp_c_proj = 8 * (3072 + 768)  # the MLP's down projection is also called c_proj
    assert plan.counts.trainable_params == 12 * (c_attn + attn_c_proj + mlp_c_proj) == 811_008
    assert any("'c_proj' matches modules of different kinds" in w and "mlp" in w for w in plan.warnings)
    # The real attention-only figure, as the option table shows it.
    assert plan.options[0].target_modules == ["c_attn", "attn.c_proj"]
    assert plan.options[0].trainable_params == 12 * (c_attn + attn_c_proj) == 442_368


def test_seed004_kogpt2_lm_head_and_the_160_mb_adapter() -> None:
    arch = get_arch_record("skt/kogpt2-base-v2", task="causal-lm", num_labels=None)
    plan = build_plan(
        arch, {"task_type": "CAUSAL_LM", "r": 16, "lora_alpha": 32, "target_modules": ["lm_head"]}
    )
    assert plan.counts.trainable_params == 16 * (768 + 51200) == 831_488
    # PEFT saves lm_head's full base weight (51200 x 768) with the adapter when lm_head is targeted.
    assert plan.counts.saved_extra == ["lm_head"]
    assert plan.adapter_bytes == (831_488 + 51200 * 768) * 4
    assert 160e6 < plan.adapter_bytes < 161e6  # the seed's "160MB"
    assert any("save_embedding_layers" in w for w in plan.warnings)


def _problems(exc: pytest.ExceptionInfo[PlanError]) -> list[str]:
    return [p.line() for p in exc.value.problems]


def test_target_that_matches_nothing_lists_what_exists(qwen3_8b_260: Any) -> None:
    with pytest.raises(PlanError) as e:
        build_plan(qwen3_8b_260, {**SEED000, "target_modules": ["q_proj", "c_attn"]}, source="exp.yaml")
    (line,) = _problems(e)
    assert line.startswith("exp.yaml: lora.config.target_modules: target 'c_attn' matches no module")
    for name in ("q_proj", "gate_proj", "down_proj", "o_proj"):
        assert name in line


def test_layers_out_of_range(qwen3_8b_260: Any) -> None:
    with pytest.raises(PlanError) as e:
        build_plan(qwen3_8b_260, {**SEED000, "layers_to_transform": [30, 36, -37]}, source="exp.yaml")
    (line,) = _problems(e)
    assert "[36, -37] are out of range" in line and "36 layers" in line and "0..35" in line


def test_target_outside_the_chosen_layers() -> None:
    arch = get_arch_record("openai-community/gpt2", task="causal-lm", num_labels=None)
    with pytest.raises(PlanError) as e:
        build_plan(arch, {"target_modules": ["c_attn", "wte"], "layers_to_transform": [0]})
    assert "'wte' exists but not in layers [0]" in _problems(e)[0]


def test_regex_target_with_layers_is_refused_like_peft() -> None:
    arch = get_arch_record("openai-community/gpt2", task="causal-lm", num_labels=None)
    with pytest.raises(PlanError) as e:
        build_plan(arch, {"target_modules": "all-linear", "layers_to_transform": [0]})
    assert "PEFT refuses layers_to_transform when target_modules is a string" in _problems(e)[0]


def test_unmodelled_option_is_refused_not_miscounted() -> None:
    arch = get_arch_record("openai-community/gpt2", task="causal-lm", num_labels=None)
    with pytest.raises(PlanError) as e:
        build_plan(
            arch, {"target_modules": ["c_attn"], "layer_replication": [[0, 4], [2, 5]], "bias": "some"}
        )
    lines = _problems(e)
    assert len(lines) == 2  # both problems at once
    assert "layer_replication" in lines[0] and "bias" in lines[1]


def test_non_linear_target_is_an_error() -> None:
    arch = get_arch_record("openai-community/gpt2", task="causal-lm", num_labels=None)
    with pytest.raises(PlanError) as e:
        build_plan(arch, {"target_modules": ["ln_1"]})
    assert "is a LayerNorm; LoRA adapts Linear, Conv1D and Embedding layers only" in _problems(e)[0]


def test_negative_layers_ambiguous_for_encoder_decoder_with_unequal_stacks() -> None:
    from dataclasses import replace

    arch = get_arch_record("gogamza/kobart-base-v2", task="seq2seq", num_labels=None)
    uneven = replace(arch, layers_per_stack={"model.encoder.layers": 6, "model.decoder.layers": 4})
    with pytest.raises(PlanError) as e:
        build_plan(uneven, {"target_modules": ["q_proj"], "layers_to_transform": [-1]})
    assert "ambiguous" in _problems(e)[0]
    same = build_plan(arch, {"target_modules": ["q_proj"], "layers_to_transform": [-1]}, with_options=False)
    assert same.spec.layers_to_transform == [5]
    # layer 5 of the encoder (self_attn) and of the decoder (self_attn and encoder_attn), 768 -> 768
    assert same.counts.trainable_params == 3 * 8 * (768 + 768)
