"""Training time: FLOPs per token of the LoRA step, tokens per epoch, hours at a sustained rate.

The FLOPs come from the same replay of the family's forward pass as the activations
(`loralab.plan.estimate.activation_models`): every matmul at 2 FLOPs per multiply-add, forward through the
whole model; backward only where a gradient flows (a frozen weight computes only dX, and not at all
below the lowest adapted layer; LoRA's A and B also compute their weight gradients); the fused
attention backward recomputes QK^T (FlashAttention-2); under gradient checkpointing each layer's
forward runs twice. Tests check the count against `torch.utils.flop_counter.FlopCounterMode` on
tiny real models. Elementwise ops (norms, activations, softmax) are left out, as in PaLM's MFU
accounting (Chowdhery et al. 2022, appendix B), so the hours are for the matmul work at the stated
model-FLOPs utilisation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loralab.errors import ConfigError, Problem

# Dense bf16 tensor-core TFLOP/s (no sparsity) and memory (GiB), from the vendors' datasheets.
GPUS: dict[str, tuple[float, float]] = {
    "H200": (989.0, 141.0),
    "H100-SXM": (989.0, 80.0),
    "H100-PCIe": (756.0, 80.0),
    "A100-80GB": (312.0, 80.0),
    "A100-40GB": (312.0, 40.0),
    "L40S": (362.0, 48.0),
    "A10G": (70.0, 24.0),
    "L4": (121.0, 24.0),
    "RTX-4090": (165.0, 24.0),
    "RTX-3090": (71.0, 24.0),
    "V100": (125.0, 32.0),  # fp16 (no bf16)
    "T4": (65.0, 16.0),  # fp16 (no bf16)
}
# Sustained share of the peak: LoRA fine-tuning with HF Trainer on one node typically reaches
# 30-45% MFU on A100/H100; we take the low end so the hours are an upper-side estimate.
DEFAULT_MFU = 0.35


@dataclass
class TimeEstimate:
    flops_per_token: float
    flops_forward: int  # per micro-batch step
    flops_backward: int
    flops_recompute: int
    tokens_per_epoch: int | None  # None (or 0) when unknown: no --tokens and no data.train_file
    epochs: float
    gpus: int
    tflops_per_gpu: float  # sustained rate used for the hours
    rate_source: str
    tokens_source: str
    notes: list[str] = field(default_factory=list)

    @property
    def tokens(self) -> int | None:
        """Tokens over all epochs; None when the tokens per epoch are unknown."""
        if not self.tokens_per_epoch:
            return None
        return int(self.tokens_per_epoch * self.epochs)

    @property
    def hours(self) -> float | None:
        rate = self.tflops_per_gpu * 1e12 * self.gpus
        if not rate or not self.tokens:
            return None  # no token count: pass --tokens or give data.train_file
        return self.flops_per_token * self.tokens / rate / 3600

    def to_json(self) -> dict[str, Any]:
        """The keys are an API (`loralab plan --json`); unknown token counts are null, not 0."""
        return {
            "flops_per_token": self.flops_per_token,
            "flops_per_step_forward": self.flops_forward,
            "flops_per_step_backward": self.flops_backward,
            "flops_per_step_recompute": self.flops_recompute,
            "tokens_per_epoch": self.tokens_per_epoch or None,
            "epochs": self.epochs,
            "tokens": self.tokens,
            "gpus": self.gpus,
            "tflops_per_gpu": self.tflops_per_gpu,
            "rate": self.rate_source,
            "tokens_from": self.tokens_source,
            "hours": self.hours,
        }


def check_rate_inputs(tflops: float | None, mfu: float | None, tokens_per_epoch: int | None) -> None:
    """Every rate or token count out of range, at once and named by its flag: 500% MFU, a negative
    TFLOP/s or token count would otherwise print impossible or negative hours."""
    problems = []
    if tflops is not None and not tflops > 0:
        problems.append(Problem("--tflops", "", f"{tflops:g} is out of range", "give more than 0"))
    if mfu is not None and not 0 < mfu <= 1:
        problems.append(
            Problem(
                "--mfu", "", f"{mfu:g} is out of range", "give a fraction, more than 0 and at most 1 (0.35)"
            )
        )
    if tokens_per_epoch is not None and tokens_per_epoch < 0:
        problems.append(Problem("--tokens", "", f"{tokens_per_epoch} is out of range", "give 1 or more"))
    if problems:
        raise ConfigError(problems)


def sustained_rate(tflops: float | None, gpu: str | None, mfu: float | None) -> tuple[float, str]:
    """TFLOP/s per GPU to divide by, and where it came from."""
    check_rate_inputs(tflops, mfu, None)
    if tflops:
        return float(tflops), f"--tflops {tflops:g}"
    share = mfu if mfu else DEFAULT_MFU
    name = gpu or "A100-80GB"
    if name not in GPUS:
        raise ConfigError([Problem("--gpu", "", f"unknown GPU {name!r}", "use one of " + ", ".join(GPUS))])
    peak = GPUS[name][0]
    return peak * share, f"{name} {peak:g} TFLOP/s bf16 x {share:.0%} MFU"


def estimate_time(
    act: Any,
    setup: Any,
    *,
    tokens_per_epoch: int | None,
    tokens_source: str,
    epochs: float = 1.0,
    tflops: float | None = None,
    gpu: str | None = None,
    mfu: float | None = None,
) -> TimeEstimate:
    """Time from the step's FLOPs in `act` (the ActivationEstimate of one micro-batch of `setup`)."""
    fwd, bwd, rec = act.flops_forward, act.flops_backward, act.flops_recompute
    check_rate_inputs(tflops, mfu, tokens_per_epoch)
    rate, source = sustained_rate(tflops, gpu, mfu)
    notes = []
    if tflops and mfu:
        notes.append(f"--tflops {tflops:g} is the sustained rate itself: --mfu is not applied to it")
    if setup.gradient_checkpointing:
        notes.append("gradient checkpointing: each layer's forward runs again in backward")
    return TimeEstimate(
        flops_per_token=(fwd + bwd + rec) / (setup.micro_batch * setup.seq_len),
        flops_forward=fwd,
        flops_backward=bwd,
        flops_recompute=rec,
        tokens_per_epoch=tokens_per_epoch or None,  # 0 from a caller means "not known"
        epochs=epochs,
        gpus=setup.gpus,
        tflops_per_gpu=rate,
        rate_source=source,
        tokens_source=tokens_source,
        notes=notes,
    )
