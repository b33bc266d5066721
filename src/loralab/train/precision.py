"""Which dtype the weights load in and which mixed-precision path training takes, per device.

Seed 003 lost four of six models to one mismatch: weights loaded in bf16 while the Trainer ran
fp16 autocast with a GradScaler, whose CUDA unscale kernel has no bf16 version
("_amp_foreach_non_finite_check_and_unscale_cuda" not implemented for 'BFloat16'). The policy here
never pairs a GradScaler with bf16, and `conflicts` reports a user's training_args that would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loralab.config.models import ExperimentConfig
from loralab.train.findings import Finding

_HALF = ("bfloat16", "float16")


@dataclass
class PrecisionPolicy:
    device: str  # "cpu" | "cuda" | "mps"
    load_dtype: str  # dtype the base weights load in: float32 / bfloat16 / float16
    bf16: bool  # bf16 autocast (TrainingArguments.bf16)
    fp16: bool  # fp16 autocast (TrainingArguments.fp16)
    grad_scaler: bool  # the Trainer uses a GradScaler exactly when fp16 autocast is on
    qlora_compute_dtype: str | None  # bnb_4bit_compute_dtype when model.quantization is set
    reason: str


def detect_device() -> str:
    # torch: `plan` imports this module through loading and stays torch-free
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def _cuda_bf16() -> bool:
    # torch: `plan` imports this module through loading and stays torch-free
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def choose_precision(
    cfg: ExperimentConfig, *, device: str | None = None, cuda_bf16_supported: bool | None = None
) -> PrecisionPolicy:
    """The precision path for `cfg` on `device` (detected via torch when not given)."""
    if device is None:
        device = "cpu" if cfg.training_args.get("use_cpu") else detect_device()
    wanted = cfg.model.torch_dtype if cfg.model.torch_dtype not in (None, "auto") else None
    quant = bool(cfg.model.quantization)
    if device == "cuda":
        bf16_ok = _cuda_bf16() if cuda_bf16_supported is None else cuda_bf16_supported
        if bf16_ok and wanted != "float16":
            return PrecisionPolicy(
                device=device,
                load_dtype=wanted or "bfloat16",
                bf16=True,
                fp16=False,
                grad_scaler=False,
                qlora_compute_dtype="bfloat16" if quant else None,
                reason="CUDA with bf16: bf16 autocast, no GradScaler (bf16 has fp32's exponent range)",
            )
        # fp16 autocast needs a GradScaler; weights never bf16 here (seed 003). PEFT keeps the
        # adapters in fp32 (autocast_adapter_dtype), so the scaler unscales fp32 master weights.
        load = "float32" if wanted == "float32" else "float16"
        why = "CUDA without bf16" if not bf16_ok else "model.torch_dtype float16"
        return PrecisionPolicy(
            device=device,
            load_dtype=load,
            bf16=False,
            fp16=True,
            grad_scaler=True,
            qlora_compute_dtype="float16" if quant else None,
            reason=f"{why}: fp16 autocast with a GradScaler over fp32 adapter weights",
        )
    # CPU autocast is bf16-only and slow, and half-precision matmuls on CPU are slower than fp32;
    # MPS mixed precision is not relied on either. fp32 everywhere.
    return PrecisionPolicy(
        device=device,
        load_dtype="float32",
        bf16=False,
        fp16=False,
        grad_scaler=False,
        qlora_compute_dtype="float32" if quant else None,
        reason=f"{device}: fp32 weights and compute, no autocast"
        + (f" (model.torch_dtype {wanted} overridden)" if wanted in _HALF else ""),
    )


def training_args_overrides(policy: PrecisionPolicy) -> dict[str, Any]:
    """The TrainingArguments fields that implement `policy`."""
    return {"bf16": policy.bf16, "fp16": policy.fp16, "use_cpu": policy.device == "cpu"}


def _flag(cfg: ExperimentConfig, name: str) -> bool:
    return bool(cfg.training_args.get(name))


def conflicts(cfg: ExperimentConfig, policy: PrecisionPolicy) -> list[Finding]:
    """The user's training_args precision flags that contradict the weights' dtype or the hardware."""
    out: list[Finding] = []
    fp16, bf16 = _flag(cfg, "fp16"), _flag(cfg, "bf16")
    bf16_weights = cfg.model.torch_dtype == "bfloat16" or policy.load_dtype == "bfloat16"
    if fp16 and bf16_weights:
        out.append(
            Finding(
                "precision.fp16_on_bf16",
                "error",
                "training_args.fp16 is true while the weights load in bfloat16: the fp16 GradScaler "
                'fails on bf16 gradients with "_amp_foreach_non_finite_check_and_unscale_cuda" not '
                "implemented for 'BFloat16' (seed 003: 4 of 6 models)",
                "use bf16: true instead of fp16: true, or remove both and let loralab choose",
            )
        )
    if fp16 and bf16:
        out.append(
            Finding(
                "precision.fp16_and_bf16",
                "error",
                "training_args sets both fp16 and bf16; the Trainer refuses that combination",
                "keep one of them (bf16 on GPUs that support it)",
            )
        )
    if bf16 and policy.device == "cuda" and not policy.bf16 and policy.fp16:
        out.append(
            Finding(
                "precision.bf16_unsupported",
                "error",
                "training_args.bf16 is true but this GPU has no bf16 support; the Trainer stops at start-up",
                "use fp16: true (loralab loads the weights in float16 and keeps the adapters in fp32)",
            )
        )
    if policy.device != "cuda":
        asked = [f"training_args.{n}" for n in ("fp16", "bf16") if _flag(cfg, n)]
        if cfg.model.torch_dtype in _HALF:
            asked.append(f"model.torch_dtype {cfg.model.torch_dtype}")
        if asked:
            out.append(
                Finding(
                    "precision.cpu_fp32",
                    "warning",
                    f"on {policy.device} loralab trains in fp32; {', '.join(asked)} is overridden",
                    "nothing to do for a CPU run; on a GPU these settings apply",
                )
            )
    return out
