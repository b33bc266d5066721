"""The activation estimate against what autograd really keeps, on tiny real models.

Reference: `saved_tensors_hooks` during a real forward pass of a tiny transformers model with PEFT's
LoRA applied (loralab.plan.measure.saved), each storage once, parameters excluded; under gradient
checkpointing plus the inputs the checkpoint holds; tensors saved by a graph that is freed during the
forward pass (DoRA's weight-norm pass) are left out. The estimate never sees the model: it replays
the family's forward on the arch record (built on the meta device from the same config).
DoRA's cases are in test_plan_dora_activations.py.
The issue asks for [0.9, 1.1]; all but two cases are exact to the byte (those two are off by 2 and
256 bytes), so the test holds them to 1%.
"""

from __future__ import annotations

from typing import Any

import pytest
from plan_tiny_models import tiny_peft

from loralab.plan.estimate.activation_models import estimate_activations
from loralab.plan.estimate.activations import ActivationSetup

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")


def measured_and_estimated(
    family: str,
    task: str = "causal-lm",
    *,
    b: int = 2,
    s: int = 24,
    dtype: str = "float32",
    autocast: str | None = None,
    impl: str = "sdpa",
    gc: bool = False,
    **lora: Any,
) -> tuple[int, int]:
    from loralab.plan.measure.saved import forward_saving
    from loralab.plan.measure.twin import twin_batch

    model, plan = tiny_peft(family, task, dtype=dtype, impl=impl, gc=gc, **lora)
    batch = twin_batch(model, task, b, s)

    def run() -> Any:
        with torch.autocast("cpu", dtype=getattr(torch, autocast or "bfloat16"), enabled=bool(autocast)):
            return model(**batch).loss

    loss, saved = forward_saving(model, run)
    loss.backward()
    setup = ActivationSetup(
        micro_batch=b,
        seq_len=s,
        dtype=dtype,
        autocast=autocast,
        attn_implementation=impl,
        gradient_checkpointing=gc,
        device="cpu",
        padded=False,
    )
    return saved.total, estimate_activations(plan, model.config.to_dict(), setup).total


CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("llama", "causal-lm", {}),
    ("llama", "causal-lm", {"lora_dropout": 0.1}),
    ("llama", "causal-lm", {"impl": "eager", "b": 3, "s": 40}),
    ("llama", "causal-lm", {"dtype": "bfloat16", "lora_dropout": 0.05}),
    ("llama", "causal-lm", {"autocast": "bfloat16"}),
    ("llama", "causal-lm", {"gc": True}),
    ("llama", "causal-lm", {"target_modules": ["q_proj", "v_proj"], "layers_to_transform": [2]}),
    ("llama", "seq-cls", {"s": 64}),
    ("qwen3", "causal-lm", {"b": 4, "s": 16}),
    ("qwen3", "causal-lm", {"dtype": "bfloat16", "impl": "eager"}),
    (
        "qwen3",
        "seq-cls",
        {"target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"], "layers_to_transform": [1, 2]},
    ),
    ("qwen3", "seq-cls", {"gc": True, "r": 16, "target_modules": ["q_proj", "v_proj"]}),
    ("gpt2", "causal-lm", {}),  # attn_pdrop=0.1: the CPU's sdpa takes the math path
    ("gpt2", "causal-lm", {"impl": "eager", "s": 48}),
    ("gpt2", "causal-lm", {"gc": True}),
    ("gpt2", "causal-lm", {"autocast": "bfloat16", "lora_dropout": 0.1}),
    ("bert", "seq-cls", {}),
    ("bert", "seq-cls", {"impl": "eager", "b": 4}),
    ("bert", "seq-cls", {"target_modules": ["query", "value"]}),
    ("bert", "seq-cls", {"autocast": "bfloat16", "gc": True}),
    ("bart", "seq2seq", {}),
    ("bart", "seq2seq", {"gc": True}),
    ("bart", "seq2seq", {"dtype": "bfloat16", "lora_dropout": 0.1, "s": 40}),
    ("bart", "seq2seq", {"autocast": "bfloat16", "impl": "eager"}),
    # bf16 logits under CPU autocast: cross_entropy keeps a float32 log_softmax (seed 003's KoBART)
    (
        "bart",
        "seq2seq",
        {"dtype": "bfloat16", "autocast": "bfloat16", "target_modules": ["q_proj", "v_proj"]},
    ),
    ("qwen3", "seq-cls", {"dtype": "bfloat16", "autocast": "bfloat16", "lora_dropout": 0.05}),
    ("gpt_neox", "causal-lm", {}),
    ("gpt_neox", "causal-lm", {"impl": "eager", "gc": True}),
    # eager attention under checkpointing: every layer's checkpoint holds the (b, 1, s, s) mask
    ("llama", "causal-lm", {"impl": "eager", "gc": True}),
    ("bart", "seq2seq", {"impl": "eager", "gc": True}),
    # Gemma-2: four norms per layer, soft-capped scores and logits (eager only), two masks
    ("gemma2", "causal-lm", {"impl": "eager"}),
    ("gemma2", "causal-lm", {"impl": "eager", "dtype": "bfloat16", "lora_dropout": 0.1}),
    ("gemma2", "causal-lm", {"impl": "eager", "autocast": "bfloat16", "s": 40}),
    ("gemma2", "causal-lm", {"impl": "eager", "gc": True}),
    (
        "gemma2",
        "seq-cls",
        {"impl": "eager", "target_modules": ["q_proj", "v_proj"], "layers_to_transform": [2]},
    ),
    ("gpt_neox", "causal-lm", {"impl": "eager", "dtype": "bfloat16", "lora_dropout": 0.1}),
]


@pytest.mark.parametrize(("family", "task", "opts"), CASES, ids=lambda v: str(v))
def test_activation_estimate_matches_saved_tensors(family: str, task: str, opts: dict[str, Any]) -> None:
    measured, estimated = measured_and_estimated(family, task, **opts)
    assert estimated == pytest.approx(measured, rel=0.01), (measured, estimated)


def test_lora_layer_arithmetic_by_hand() -> None:
    """One tiny Llama, fp32, LoRA r=8 on q_proj and v_proj of the top layer only (layer 2 of 3),
    b=2, s=24, sdpa, no dropout. Below layer 2 nothing needs a gradient, so nothing is kept; in
    layer 2 the input norm's input has no gradient either. What remains:"""
    b, s, h, heads, kv, d, inter, vocab, r = 2, 24, 64, 4, 2, 16, 160, 256, 8
    tokens = b * s
    kept = (
        tokens * h * 4  # normed x, the input q_proj.lora_A and v_proj.lora_A share
        + 2 * tokens * r * 4  # q and v lora_B inputs
        + 2 * s * d * 4  # rotary cos and sin (shared by all layers), kept by q's rotary muls
        # sdpa: rotated q, k (no gradient needs k: frozen k_proj, but the kernel keeps it), v, output, lse
        + (tokens * heads * d + tokens * kv * d + tokens * kv * d + tokens * heads * d) * 4
        + b * heads * s * 4
        + (tokens * h + tokens) * 4  # post_attention_layernorm: input and rsqrt
        + 3 * tokens * inter * 4  # act_fn(gate) input, the two factors of act * up
        + (tokens * h + tokens) * 4  # final norm
        + tokens * vocab * 4  # log_softmax output of the loss
        + tokens * 8  # int64 targets
        + 4  # nll_loss's total_weight
    )
    measured, estimated = measured_and_estimated(
        "llama", target_modules=["q_proj", "v_proj"], layers_to_transform=[2]
    )
    # the k tensor under sdpa: rotated k still requires no grad but is kept by the kernel; our count
    # above includes it, and so do both sides
    assert estimated == measured == kept, (measured, estimated, kept)
