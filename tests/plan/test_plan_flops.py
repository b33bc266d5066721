"""FLOPs of a LoRA training step against torch.utils.flop_counter on tiny real models.

Reference: `FlopCounterMode` around a real forward and backward of a tiny transformers model with
PEFT's LoRA. It counts matmuls (mm, addmm, bmm) and the fused attention kernels; the CPU's flash
kernel is not in its registry, so the test registers it with torch's own sdpa formulas (the same
ones it uses for the CUDA kernels). The estimate replays the family's forward on the arch record.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from plan_tiny_models import tiny_peft

from loralab.plan.estimate.activation_models import estimate_activations
from loralab.plan.estimate.activations import ActivationSetup

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")


@pytest.fixture(scope="module", autouse=True)
def cpu_flash_formulas() -> Iterator[None]:
    from torch.utils import flop_counter as fc

    aten = torch.ops.aten
    fwd, bwd = (
        aten._scaled_dot_product_flash_attention_for_cpu,
        aten._scaled_dot_product_flash_attention_for_cpu_backward,
    )

    def f(query: Any, key: Any, value: Any, *args: Any, out_val: Any = None, **kw: Any) -> int:
        return fc.sdpa_flop_count(query.shape, key.shape, value.shape)

    def b(grad: Any, query: Any, key: Any, value: Any, *args: Any, out_val: Any = None, **kw: Any) -> int:
        return fc.sdpa_backward_flop_count(grad.shape, query.shape, key.shape, value.shape)

    fc.register_flop_formula(fwd, get_raw=True)(f)
    fc.register_flop_formula(bwd, get_raw=True)(b)
    yield
    for op in (fwd, bwd):
        fc.flop_registry.pop(op, None)
        fc.flop_registry.pop(op.default, None)


def counted_and_estimated(
    family: str,
    task: str = "causal-lm",
    *,
    b: int = 2,
    s: int = 24,
    impl: str = "sdpa",
    gc: bool = False,
    **lora: Any,
) -> tuple[int, int, int, int]:
    from torch.utils.flop_counter import FlopCounterMode

    from loralab.plan.measure.twin import twin_batch

    model, plan = tiny_peft(family, task, impl=impl, gc=gc, **lora)
    batch = twin_batch(model, task, b, s)
    with FlopCounterMode(display=False) as counter:
        loss = model(**batch).loss
        forward = counter.get_total_flops()
        loss.backward()
    total = counter.get_total_flops()
    setup = ActivationSetup(
        micro_batch=b,
        seq_len=s,
        dtype="float32",
        attn_implementation=impl,
        gradient_checkpointing=gc,
        device="cpu",
        padded=False,
    )
    est = estimate_activations(plan, model.config.to_dict(), setup)
    return forward, total, est.flops_forward, est.flops_forward + est.flops_backward + est.flops_recompute


CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("llama", "causal-lm", {}),
    ("llama", "causal-lm", {"impl": "eager"}),
    ("llama", "causal-lm", {"target_modules": ["q_proj", "v_proj"], "layers_to_transform": [2]}),
    ("llama", "causal-lm", {"target_modules": ["o_proj"], "layers_to_transform": [1]}),
    ("qwen3", "seq-cls", {}),
    ("qwen3", "seq-cls", {"target_modules": ["gate_proj"], "layers_to_transform": [1]}),
    ("gpt2", "causal-lm", {}),  # attn_pdrop=0.1: the CPU's sdpa runs as plain matmuls
    ("bert", "seq-cls", {"s": 40}),
    ("bart", "seq2seq", {}),
    ("gpt_neox", "causal-lm", {"b": 3}),
    ("gemma2", "causal-lm", {"impl": "eager"}),
]


@pytest.mark.parametrize(("family", "task", "opts"), CASES, ids=lambda v: str(v))
def test_step_flops_match_flop_counter(family: str, task: str, opts: dict[str, Any]) -> None:
    forward, total, est_forward, est_total = counted_and_estimated(family, task, **opts)
    assert est_forward == forward
    assert est_total == total


def test_checkpointing_adds_the_recomputed_forward() -> None:
    # Under checkpointing the replay is within 0.3% of the counter (it counts three lora_A input
    # gradients in the first layer that autograd skips there); without it the counts are exact.
    _, total, _, est_total = counted_and_estimated("llama", gc=True)
    _, plain, _, est_plain = counted_and_estimated("llama")
    assert est_plain == plain
    assert est_total == pytest.approx(total, rel=0.005)
    assert total > plain


def test_lora_flops_by_hand() -> None:
    """Top layer of a 3-layer tiny Llama, LoRA r=8 on q_proj only, eager attention, b=2, s=24."""
    b, s, h, heads, kv, d, inter, vocab, r = 2, 24, 64, 4, 2, 16, 160, 256, 8
    n = b * s
    layer_fwd = 2 * n * h * (heads * d + 2 * kv * d + h + 3 * inter) + 2 * 2 * b * heads * s * s * d
    lora_fwd = 2 * n * r * (h + heads * d)
    forward = 3 * layer_fwd + lora_fwd + 2 * n * h * vocab
    # backward: lm_head dX; in layer 2 everything above q_proj passes dX (o, gate, up, down, and
    # the attention's two matmuls on the q side: d(scores) -> dq, and d(probs) from PV); k and v
    # need nothing; LoRA's dB, d(h) through B, dA (its input needs no gradient)
    backward = (
        2 * n * h * vocab
        + 2 * n * h * (h + 3 * inter)
        + 2 * 2 * b * heads * s * s * d
        + 2 * (2 * n * r * heads * d)
        + 2 * n * h * r
    )
    _, total, est_fwd, est_total = counted_and_estimated(
        "llama", impl="eager", target_modules=["q_proj"], layers_to_transform=[2]
    )
    assert est_fwd == forward
    assert est_total == total == forward + backward
