"""Preflight catches seed 003's four failures, and the twin step runs (or fails as a finding)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_train_loading import make_cfg, minilm_folder, tiny_decoder

from loralab.train import preflight
from loralab.train.preflight import run_preflight


@pytest.fixture(scope="module")
def decoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_decoder(tmp_path_factory.mktemp("llama_pf"))


def _checks(report: preflight.PreflightReport, severity: str | None = None) -> set[str]:
    return {f.check for f in report.findings if severity is None or f.severity == severity}


def test_valid_decoder_config_twin_passes(decoder: Path) -> None:
    r = run_preflight(make_cfg(str(decoder)), device="cpu")
    assert r.ok, r.lines()
    assert "twin" in _checks(r, "info")
    # seed 003: right padding and token_type_ids with a decoder-only model are reported
    assert {"tokenizer.padding_side", "inputs.token_type_ids", "tokenizer.pad_token"} <= _checks(r)
    assert any("loralab drops them" in line for line in r.lines())


def test_seed003_bf16_weights_with_fp16_scaler(decoder: Path) -> None:
    cfg = make_cfg(str(decoder), task="seq-cls", num_labels=3, torch_dtype="bfloat16",
                   lora={"r": 4, "target_modules": ["q_proj"]})  # fmt: skip
    cfg.training_args["fp16"] = True
    r = run_preflight(cfg, device="cpu")
    assert not r.ok
    errors = _checks(r, "error")
    assert "precision.fp16_on_bf16" in errors
    # the twin reproduces it: the seq-cls head copy PEFT trains is bf16, the GradScaler cannot unscale it
    twin = [f for f in r.findings if f.check.startswith("twin.")]
    assert twin and "BFloat16" in twin[0].message and "GradScaler" in twin[0].message


def test_seed003_device_map_offload_is_reported(decoder: Path) -> None:
    cfg = make_cfg(str(decoder))
    object.__setattr__(cfg.model, "device_map", "auto")
    r = run_preflight(cfg, device="cpu", with_twin=False)
    assert "loading.offload_folder" in _checks(r, "info")


def test_qlora_on_cpu_and_bad_target_are_both_reported(decoder: Path) -> None:
    cfg = make_cfg(str(decoder), quantization={"load_in_4bit": True},
                   lora={"r": 4, "target_modules": ["nope_proj"]})  # fmt: skip
    r = run_preflight(cfg, device="cpu")
    errors = _checks(r, "error")
    assert {"qlora.device", "plan.lora.config.target_modules"} <= errors  # collected, not first-only
    assert "twin" in _checks(r, "info")  # skipped, not crashed


def test_unknown_model_type_without_trust_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "made_up_arch", "hidden_size": 64}))
    r = run_preflight(make_cfg(str(tmp_path)), device="cpu")
    err = [f for f in r.findings if f.check == "model.remote_code"]
    assert err and err[0].severity == "error" and "trust_remote_code" in err[0].fix


def test_minilm_twin_passes_with_token_type_ids() -> None:
    lora = {"r": 2, "target_modules": ["query", "value"], "layers_to_transform": [-1]}
    cfg = make_cfg(minilm_folder(), task="seq-cls", num_labels=4, lora=lora)
    r = run_preflight(cfg, device="cpu")
    assert r.ok, r.lines()
    assert "twin" in _checks(r, "info") and "inputs.token_type_ids" not in _checks(r)


def test_broken_twin_is_a_finding_not_a_crash(decoder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (2x64 and 48x64)\nmore")

    monkeypatch.setattr(preflight, "_twin_batch", broken)
    r = run_preflight(make_cfg(str(decoder)), device="cpu")
    twin = [f for f in r.findings if f.check == "twin.forward"]
    assert twin and twin[0].severity == "error" and "mat1 and mat2" in twin[0].message
    assert "more" not in twin[0].message


def test_weights_that_do_not_fit_are_an_error(decoder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preflight, "available_memory", lambda device: 1000)
    r = run_preflight(make_cfg(str(decoder)), device="cpu", with_twin=False)
    assert "memory.weights" in _checks(r, "error")


def test_zero3_without_gathered_save_is_an_error(decoder: Path) -> None:
    """peft #2892: ZeRO-3 without stage3_gather_16bit_weights_on_model_save saves no adapter."""
    cfg = make_cfg(str(decoder))
    key = "deepspeed.zero_optimization.stage3_gather_16bit_weights_on_model_save"
    for zero, expected in (
        ({"stage": 3}, {key}),
        ({"stage": 3, "stage3_gather_16bit_weights_on_model_save": "auto"}, {key}),  # accelerate: false
        ({"stage": 3, "stage3_gather_16bit_weights_on_model_save": True}, set()),
        ({"stage": 2}, set()),  # ZeRO-2 keeps whole parameters on every rank
    ):
        cfg.deepspeed = {"zero_optimization": zero}
        r = run_preflight(cfg, device="cpu", with_twin=False)
        assert _checks(r, "error") & {key} == expected, zero


def test_fsdp_on_cpu_is_reported_as_ddp(decoder: Path) -> None:
    # measured: `loralab train` with training_args.fsdp on 2 CPU processes runs DDP (accelerate 1.15)
    cfg = make_cfg(str(decoder))
    cfg.training_args["fsdp"] = "full_shard auto_wrap"
    r = run_preflight(cfg, device="cpu", with_twin=False)
    assert "training_args.fsdp" in _checks(r, "warning")
    assert any("the run is DDP" in line for line in r.lines())
