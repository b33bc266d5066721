"""Model-state memory (weights, trainable, gradients, optimizer) against a real step, and by hand.

Reference: `loralab.plan.measure.twin.measure_step` runs forward, backward and one step of the optimizer
Trainer would build (its own factory) on a tiny transformers model with PEFT's LoRA, then sums the
bytes of each storage once: frozen parameters, trainable parameters, `.grad`, `optimizer.state`.
The estimate never sees the model, only the arch record built on the meta device.
"""

from __future__ import annotations

from typing import Any

import pytest
from plan_tiny_models import tiny_peft

from loralab.plan.estimate.state_memory import (
    Quantization,
    Sharding,
    Tensor,
    optimizer_bytes,
    quantized_weight_bytes,
    state_memory,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")


def measured_and_estimated(
    family: str, task: str, dtype: str, optim: str, **lora: Any
) -> tuple[dict[str, int], dict[str, int]]:
    from loralab.plan.measure.twin import measure_step, twin_batch

    model, plan = tiny_peft(family, task, dtype=dtype, **lora)
    measured = measure_step(model, twin_batch(model, task, 2, 16), optim=optim).terms()
    measured.pop("activations")
    est = state_memory(plan, load_dtype=dtype, optim=optim)
    return measured, est.per_device


CASES: list[tuple[str, str, str, str, dict[str, Any]]] = [
    ("llama", "causal-lm", "float32", "adamw_torch", {}),
    ("llama", "causal-lm", "bfloat16", "adamw_torch_fused", {}),  # fp32 adapters on a bf16 base
    ("llama", "seq-cls", "bfloat16", "adamw_torch", {"bias": "all"}),  # score copy + biases
    ("qwen3", "seq-cls", "bfloat16", "adafactor", {"target_modules": ["q_proj", "v_proj"]}),
    ("qwen3", "causal-lm", "float32", "sgd", {"target_modules": ["o_proj"], "layers_to_transform": [2]}),
    ("gpt2", "causal-lm", "float32", "adamw_torch", {"bias": "lora_only", "use_dora": True}),
    ("bert", "seq-cls", "bfloat16", "adamw_torch", {"lora_bias": True}),
    ("bart", "seq2seq", "float32", "adafactor", {"modules_to_save": ["lm_head"]}),
    ("gpt_neox", "causal-lm", "bfloat16", "adamw_torch_fused", {"r": 4, "bias": "all"}),
    ("gemma2", "seq-cls", "bfloat16", "adamw_torch", {"impl": "eager"}),
]


@pytest.mark.parametrize(("family", "task", "dtype", "optim", "lora"), CASES, ids=lambda v: str(v))
def test_state_memory_matches_a_real_step(
    family: str, task: str, dtype: str, optim: str, lora: dict[str, Any]
) -> None:
    measured, estimated = measured_and_estimated(family, task, dtype, optim, **lora)
    assert {k: estimated[k] for k in measured} == measured


def test_adamw_bytes_by_hand() -> None:
    # one LoRA pair on a 64 -> 32 Linear, r=8, fp32: A is 8x64, B is 32x8
    a, b = Tensor("A", (8, 64), "float32"), Tensor("B", (32, 8), "float32")
    # exp_avg + exp_avg_sq in the parameter's dtype, plus a float32 `step` per tensor
    assert optimizer_bytes([a, b], "adamw_torch") == 2 * (8 * 64 * 4) + 4 + 2 * (32 * 8 * 4) + 4
    # Adafactor: row (8) + column (64) second moments for A, 32 + 8 for B, and an RMS scalar each,
    # all in float32
    assert optimizer_bytes([a, b], "adafactor") == 4 * (8 + 64 + 1) + 4 * (32 + 8 + 1)
    assert optimizer_bytes([a, b], "sgd") == 0
    # bitsandbytes 8-bit: A has 512 elements (< 4096: 32-bit states); a 64x128 tensor has 8192:
    # two uint8 states + a float32 absmax per 256-element block each
    big = Tensor("big", (64, 128), "float32")
    assert optimizer_bytes([a, big], "adamw_8bit") == 2 * 4 * 512 + 2 * (8192 + 4 * 32)


def test_bitsandbytes_weight_layouts_by_hand() -> None:
    n = 4096 * 4096
    # NF4: two values per byte, one float32 absmax per 64 values, the 16-entry float32 code
    assert quantized_weight_bytes(n, Quantization(bits=4), 4096) == n // 2 + 4 * (n // 64) + 64
    # double quantization: uint8 absmax per block, float32 scale per 256 blocks, offset, nested code
    blocks = n // 64
    expected = n // 2 + blocks + 4 * (blocks // 256) + 4 + 4 * 256 + 64
    assert quantized_weight_bytes(n, Quantization(bits=4, double_quant=True), 4096) == expected
    # LLM.int8: one byte per weight and a float32 scale (SCB) per output row
    assert quantized_weight_bytes(n, Quantization(bits=8), 4096) == n + 4 * 4096


def test_quantization_from_config_defaults_follow_bitsandbytesconfig() -> None:
    from transformers import BitsAndBytesConfig

    q = Quantization.from_config({"load_in_4bit": True})
    ref = BitsAndBytesConfig(load_in_4bit=True)
    assert q is not None
    assert q.quant_type == ref.bnb_4bit_quant_type
    assert q.double_quant == ref.bnb_4bit_use_double_quant
    assert q.compute_dtype == str(ref.bnb_4bit_compute_dtype).replace("torch.", "")
    q2 = Quantization.from_config(
        {"load_in_4bit": True, "bnb_4bit_compute_dtype": "bfloat16", "bnb_4bit_use_double_quant": True}
    )
    assert q2 == Quantization(bits=4, quant_type="fp4", double_quant=True, compute_dtype="bfloat16")
    assert Quantization.from_config({"load_in_8bit": True}) == Quantization(bits=8)


def test_deepspeed_auto_resolves_from_training_args() -> None:
    ds = {
        "bf16": {"enabled": "auto"},
        "zero_optimization": {"stage": 2, "offload_optimizer": {"device": "none"}},
    }
    sh = Sharding.from_deepspeed(ds, {"bf16": True}, 4)
    assert sh == Sharding(gpus=4, zero_stage=2, mixed_precision="bfloat16")
    off = {
        "zero_optimization": {
            "stage": 3,
            "offload_optimizer": {"device": "cpu"},
            "offload_param": {"device": "cpu"},
        }
    }
    sh3 = Sharding.from_deepspeed(off, {}, 2)
    assert (sh3.offload_optimizer, sh3.offload_param, sh3.mixed_precision) == ("cpu", "cpu", None)


def _seed000_plan() -> Any:
    from pathlib import Path

    from loralab.plan.experiment import plan_from_config

    root = Path(__file__).resolve().parents[2]
    plan, _ = plan_from_config(root / "examples" / "seed000-qwen3-8b-phase1-attention.yaml")
    return plan


def test_zero_sharding_by_hand_on_seed000() -> None:
    plan = _seed000_plan()
    t = 76_038_144  # trainable parameters: LoRA on q,k,v,o of layers 25-35 plus the score copy
    base = plan.arch.total_params
    z2 = state_memory(
        plan, load_dtype="bfloat16", sharding=Sharding(gpus=4, zero_stage=2, mixed_precision="bfloat16")
    )
    # DeepSpeed casts everything to bf16; ZeRO-2 shards the fp32 master + Adam (12 bytes) and the
    # bf16 gradients over the 4 ranks; weights stay whole on each
    assert z2.per_device == {
        "weights": 2 * base,
        "trainable": 2 * t,
        "gradients": 2 * t // 4,
        "optimizer": 12 * t // 4,
    }
    z3 = state_memory(
        plan,
        load_dtype="bfloat16",
        sharding=Sharding(gpus=4, zero_stage=3, offload_optimizer="cpu", mixed_precision="bfloat16"),
    )
    assert z3.per_device == {
        "weights": 2 * base // 4,
        "trainable": 2 * t // 4,
        "gradients": 2 * t // 4,
        "optimizer": 0,
    }
    # offloaded per rank: its 12-byte state partition and its fp32 gradient partition
    assert z3.host == {"weights": 0, "trainable": 0, "gradients": 4 * t // 4, "optimizer": 12 * t // 4}
    # plain DDP over 4 GPUs: nothing sharded; fp32 adapters; buckets double the gradients
    ddp = state_memory(plan, load_dtype="bfloat16", optim="adamw_torch", sharding=Sharding(gpus=4))
    lora, score = 74_973_184, 1_064_960
    assert ddp.per_device["trainable"] == 4 * lora + 2 * score
    assert ddp.per_device["gradients"] == 2 * (4 * lora + 2 * score)
