"""DoRA's saved activations and FLOPs against PEFT's real forward, on the tiny models.

PEFT's DoRA (Liu et al. 2024, arXiv:2402.09353; peft/tuners/lora/dora.py `DoraLinearLayer.forward`)
rescales the base output by `magnitude / ||W + s*BA||_c` with the norm detached (§4.3), so beyond
LoRA's A and B inputs each adapted Linear keeps the norm, the scale, the LoRA branch's output and the
base output (recomputed on dropout(x) when lora_dropout > 0). The reference is the same
saved_tensors_hooks measurement as tests/plan/test_plan_activations.py; the graph DoRA builds for the
norm (`lora_B(lora_A(eye))`, and for Conv1D the norm's input) is freed before backward and reported
as `transient`, outside the total.

Every case is checked twice: the whole estimate against the measurement, with the tolerance of
the LoRA cases (1%), and DoRA's own share (DoRA minus the same config with plain LoRA) to the byte.
"""

from __future__ import annotations

from typing import Any

import pytest
from test_plan_activations import measured_and_estimated
from test_plan_flops import counted_and_estimated

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

QV = ["q_proj", "v_proj"]

CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("llama", "causal-lm", {}),
    ("llama", "causal-lm", {"lora_dropout": 0.1}),  # base output recomputed on dropout(x)
    ("llama", "causal-lm", {"dtype": "bfloat16"}),
    # bf16 weights, float32 adapters: the recomputation keeps W.to(float32), a copy per module
    ("llama", "causal-lm", {"dtype": "bfloat16", "lora_dropout": 0.1}),
    ("llama", "causal-lm", {"autocast": "bfloat16"}),
    ("llama", "causal-lm", {"autocast": "bfloat16", "lora_dropout": 0.1}),
    ("llama", "causal-lm", {"dtype": "bfloat16", "autocast": "bfloat16", "lora_dropout": 0.1}),
    ("llama", "causal-lm", {"gc": True, "lora_dropout": 0.1}),
    ("llama", "causal-lm", {"target_modules": QV, "layers_to_transform": [2]}),
    # DoraEmbeddingLayer: scale * base lookup + scale * (rows @ B) * s
    ("llama", "causal-lm", {"target_modules": [*QV, "embed_tokens"]}),
    ("llama", "causal-lm", {"target_modules": [*QV, "embed_tokens"], "autocast": "bfloat16"}),
    ("llama", "causal-lm", {"target_modules": [*QV, "embed_tokens"], "dtype": "bfloat16"}),
    ("qwen3", "seq-cls", {"lora_dropout": 0.05}),
    # GPT-2's Conv1D (fan_in_fan_out): the base output minus the bias; with dropout PEFT's
    # `transpose` makes W.T a fresh nn.Parameter, so the recomputation keeps its input as well
    ("gpt2", "causal-lm", {}),
    ("gpt2", "causal-lm", {"lora_dropout": 0.1}),
    ("gpt2", "causal-lm", {"dtype": "bfloat16", "lora_dropout": 0.1}),
    ("gpt2", "causal-lm", {"autocast": "bfloat16", "lora_dropout": 0.1}),
    ("gpt2", "causal-lm", {"autocast": "bfloat16"}),
    ("gpt2", "causal-lm", {"gc": True, "lora_dropout": 0.1}),
    ("bert", "seq-cls", {}),
    ("bert", "seq-cls", {"lora_dropout": 0.1}),
    # the two LoRA residuals of test_plan_activations (256 bytes under CPU autocast, 2 bytes for bf16
    # BERT/BART) are outside DoRA's part and carry over unchanged
    ("bert", "seq-cls", {"autocast": "bfloat16"}),
    ("bert", "seq-cls", {"dtype": "bfloat16", "lora_dropout": 0.1}),
    ("bart", "seq2seq", {"lora_dropout": 0.1}),
    ("bart", "seq2seq", {"dtype": "bfloat16"}),
    ("gpt_neox", "causal-lm", {"lora_dropout": 0.1}),
    ("gemma2", "causal-lm", {"impl": "eager", "dtype": "bfloat16", "lora_dropout": 0.1}),
]


@pytest.mark.parametrize(("family", "task", "opts"), CASES, ids=lambda v: str(v))
def test_dora_estimate_matches_saved_tensors(family: str, task: str, opts: dict[str, Any]) -> None:
    measured, estimated = measured_and_estimated(family, task, use_dora=True, **opts)
    lora_measured, lora_estimated = measured_and_estimated(family, task, **opts)
    assert estimated == pytest.approx(measured, rel=0.01), (measured, estimated)
    assert estimated - lora_estimated == measured - lora_measured
    # under checkpointing a layer keeps only its input, whatever the adapter: DoRA's tensors come back
    # with the layer's recomputation (the estimate's largest_layer), not in the total
    assert (measured > lora_measured) is not opts.get("gc", False)


def test_dora_module_arithmetic_by_hand() -> None:
    """Tiny Llama, fp32, r=8 on q_proj (64 -> 64) and v_proj (64 -> 32) of the top layer only, b=2,
    s=24, no dropout: what DoRA keeps on top of LoRA, module by module. The layer's input needs no
    gradient (nothing below trains), so neither does the base output, and `scale - 1` is not kept."""
    b, s = 2, 24
    tokens = b * s
    extra = sum(
        out * 4  # ||W + s*BA||_c, kept by magnitude / norm (the divisor)
        + tokens * out * 4  # the base output (no bias), kept by (scale - 1) * base
        + out * 4  # scale = magnitude / norm, kept by scale * lora_result
        + tokens * out * 4  # lora_B(lora_A(x)), kept by the same product
        for out in (64, 32)
    )
    assert extra == 37632
    measured, estimated = measured_and_estimated(
        "llama", use_dora=True, target_modules=QV, layers_to_transform=[2]
    )
    lora_measured, lora_estimated = measured_and_estimated(
        "llama", target_modules=QV, layers_to_transform=[2]
    )
    assert measured - lora_measured == estimated - lora_estimated == extra


def test_dora_dropout_recomputation_by_hand() -> None:
    """bf16 tiny Llama with float32 adapters (PEFT's autocast_adapter_dtype), r=8 on q_proj of layers
    1 and 2, lora_dropout=0.1: DoRA recomputes the base output as F.linear(dropout(x), W.to(float32)).
    Layer 1's input needs no gradient; layer 2's does (layer 1 trains), which adds two tensors."""
    b, s, h, out = 2, 24, 64, 64
    tokens = b * s
    per_module = (
        out * 4  # the norm (float32, the adapters' dtype)
        + tokens * out * 4  # the recomputed base output: float32, as its input is
        + out * 4  # scale
        + tokens * out * 4  # the LoRA branch's output (float32)
    )
    extra = 2 * per_module + (
        out * 4  # layer 2: scale - 1, as the base output now needs a gradient
        + h * out * 4  # layer 2: the float32 copy of W the recomputation keeps for dX
    )
    lora = {
        "dtype": "bfloat16",
        "lora_dropout": 0.1,
        "target_modules": ["q_proj"],
        "layers_to_transform": [1, 2],
    }
    measured, estimated = measured_and_estimated("llama", use_dora=True, **lora)
    lora_measured, lora_estimated = measured_and_estimated("llama", **lora)
    assert measured - lora_measured == estimated - lora_estimated == extra


def test_dora_norm_graph_is_transient() -> None:
    """The (in, in) identity and the (in, r) product of `lora_B(lora_A(eye))` are packed by autograd
    but freed with their graph during the forward pass: the measurement sets them apart, the
    estimate leaves them out."""
    from plan_tiny_models import tiny_peft

    from loralab.plan.measure.saved import forward_saving
    from loralab.plan.measure.twin import twin_batch

    model, _ = tiny_peft("llama", "causal-lm", use_dora=True, target_modules=QV, layers_to_transform=[2])
    batch = twin_batch(model, "causal-lm", 2, 24)
    loss, saved = forward_saving(model, lambda: model(**batch).loss)
    loss.backward()
    n_in, r = 64, 8
    assert saved.transient == 2 * (n_in * n_in + n_in * r) * 4  # q_proj and v_proj


FLOP_CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("llama", "causal-lm", {"impl": "eager"}),
    ("llama", "causal-lm", {"impl": "eager", "lora_dropout": 0.1}),
    ("llama", "causal-lm", {"impl": "eager", "target_modules": [*QV, "embed_tokens"]}),
    ("gpt2", "causal-lm", {"lora_dropout": 0.1}),  # Conv1D: the recomputation's throwaway dW too
    ("bert", "seq-cls", {"lora_dropout": 0.1}),
]


@pytest.mark.parametrize(("family", "task", "opts"), FLOP_CASES, ids=lambda v: str(v))
def test_dora_step_flops_match_flop_counter(family: str, task: str, opts: dict[str, Any]) -> None:
    forward, total, est_forward, est_total = counted_and_estimated(family, task, use_dora=True, **opts)
    assert est_forward == forward
    assert est_total == total


def test_dora_flops_by_hand() -> None:
    """DoRA's matmuls beyond LoRA's for q_proj (64 -> 64, r=8) in the top layer of the tiny Llama,
    eager attention, b=2, s=24, lora_dropout=0.1."""
    b, s, n_in, out, r = 2, 24, 64, 64, 8
    extra_forward = (
        2 * n_in * n_in * r  # lora_A(eye(in)) for the norm, every step
        + 2 * n_in * r * out  # lora_B of that
        + 2 * b * s * n_in * out  # F.linear(dropout(x), W): the base output on the dropped input
    )
    # the identity pass has no backward (only its detached product is used); the recomputation's
    # input needs no gradient in the top layer and W is frozen: no backward either
    lora = {"impl": "eager", "lora_dropout": 0.1, "target_modules": ["q_proj"], "layers_to_transform": [2]}
    forward, total, est_forward, est_total = counted_and_estimated("llama", use_dora=True, **lora)
    lora_forward, lora_total, _, _ = counted_and_estimated("llama", **lora)
    assert forward - lora_forward == total - lora_total == extra_forward
    assert (est_forward, est_total) == (forward, total)
