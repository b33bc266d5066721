"""Precision policy per device, and the training_args conflicts of seed 003."""

from __future__ import annotations

from pathlib import Path

import pytest

from loralab.config.models import ExperimentConfig, ModelConfig
from loralab.train.precision import choose_precision, conflicts, training_args_overrides


def _cfg(dtype: str | None = None, quant: bool = False, **ta: object) -> ExperimentConfig:
    m = ModelConfig(
        name_or_path="x", torch_dtype=dtype, quantization={"load_in_4bit": True} if quant else None
    )
    return ExperimentConfig(source=Path("/tmp/x.yaml"), model=m, training_args=dict(ta))


@pytest.mark.parametrize(
    ("device", "bf16_ok", "load", "bf16", "fp16", "scaler", "qdtype"),
    [
        ("cpu", None, "float32", False, False, False, "float32"),
        ("cuda", True, "bfloat16", True, False, False, "bfloat16"),
        ("cuda", False, "float16", False, True, True, "float16"),
    ],
)
def test_policy_table(
    device: str, bf16_ok: bool | None, load: str, bf16: bool, fp16: bool, scaler: bool, qdtype: str
) -> None:
    p = choose_precision(_cfg("bfloat16", quant=True), device=device, cuda_bf16_supported=bf16_ok)
    assert (p.device, p.load_dtype, p.bf16, p.fp16, p.grad_scaler, p.qlora_compute_dtype) == (
        device, load, bf16, fp16, scaler, qdtype,
    )  # fmt: skip
    # never a GradScaler over bf16 weights (seed 003)
    assert not (p.grad_scaler and p.load_dtype == "bfloat16")
    assert training_args_overrides(p) == {"bf16": bf16, "fp16": fp16, "use_cpu": device == "cpu"}


def test_fp32_configured_on_bf16_gpu_is_kept() -> None:
    p = choose_precision(_cfg("float32"), device="cuda", cuda_bf16_supported=True)
    assert p.load_dtype == "float32" and p.bf16 and p.qlora_compute_dtype is None


def test_seed003_fp16_scaler_on_bf16_weights_is_an_error() -> None:
    cfg = _cfg("bfloat16", fp16=True)
    found = conflicts(cfg, choose_precision(cfg, device="cuda", cuda_bf16_supported=True))
    err = [f for f in found if f.check == "precision.fp16_on_bf16"]
    assert err and err[0].severity == "error" and "BFloat16" in err[0].message and "bf16: true" in err[0].fix


def test_bf16_on_gpu_without_bf16_and_cpu_override() -> None:
    cfg = _cfg(None, bf16=True)
    found = conflicts(cfg, choose_precision(cfg, device="cuda", cuda_bf16_supported=False))
    assert [f.check for f in found] == ["precision.bf16_unsupported"]
    cpu = conflicts(cfg, choose_precision(cfg, device="cpu"))
    assert [(f.check, f.severity) for f in cpu] == [("precision.cpu_fp32", "warning")]
    assert "training_args.bf16" in cpu[0].message
    assert conflicts(_cfg(None), choose_precision(_cfg(None), device="cpu")) == []
