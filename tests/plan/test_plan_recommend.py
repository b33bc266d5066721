"""`recommend`: what it picks fits by the memory model, and `plan` of its YAML agrees."""

from __future__ import annotations

from pathlib import Path

import yaml
from rich.console import Console

from loralab.commands.recommend import run_recommend
from loralab.plan.recommend import rank_for


def _recommend(tmp_path: Path, gpu_mem: str, gpus: int) -> tuple[object, Path]:
    out = tmp_path / "rec.yaml"
    rec = run_recommend(
        "Qwen/Qwen3-8B",
        task="seq-cls",
        num_labels=260,
        rows=100_000,
        data=None,
        gpu_mem=gpu_mem,
        gpus=gpus,
        seq_len=512,
        bf16=True,
        out_path=str(out),
        as_json=False,
        console=Console(file=open(tmp_path / "out.txt", "w"), width=200),  # noqa: SIM115
    )
    return rec, out


def _plan_total(path: Path, gpus: int) -> tuple[int, bool | None]:
    from loralab.arch.resolve import resolve_model
    from loralab.plan.estimate.memory import estimate_memory
    from loralab.plan.estimate.setup import Overrides, setup_from_config
    from loralab.plan.experiment import load_and_plan

    cfg, plan, _ = load_and_plan(path, with_options=False)
    setup, _ = setup_from_config(cfg, plan.arch, Overrides(gpus=gpus))
    hf = resolve_model(cfg.model.name_or_path).config
    est = estimate_memory(plan, hf, setup, budget=None, search=False)
    return est.per_device["total"], est.fits


def test_qwen3_8b_on_four_24gib_gpus_fits_and_plan_agrees(tmp_path: Path) -> None:
    rec, out = _recommend(tmp_path, "24GiB", 4)
    assert rec.memory.fits and rec.memory.per_device["total"] <= 24 * 2**30
    assert rec.setup.quantization is None  # bf16 weights fit next to the step on 24 GiB
    keys = {c.key: c for c in rec.choices}
    assert keys["lora.config.r"].value == 16  # 100k rows
    assert set(keys["lora.config.target_modules"].value) == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    assert all(c.reason for c in rec.choices)
    cfg = yaml.safe_load(out.read_text(encoding="utf-8"))
    assert cfg["training_args"]["per_device_train_batch_size"] == rec.setup.micro_batch
    # effective batch 32 = micro-batch x accumulation x GPUs
    assert rec.setup.micro_batch * cfg["training_args"]["gradient_accumulation_steps"] * 4 == 32
    total, _ = _plan_total(out, 4)
    assert total == rec.memory.per_device["total"] <= 24 * 2**30


def test_qwen3_8b_on_one_8gib_gpu_goes_4bit_and_says_why(tmp_path: Path) -> None:
    rec, out = _recommend(tmp_path, "8GiB", 1)
    assert rec.memory.fits
    assert rec.setup.quantization is not None and rec.setup.quantization.bits == 4
    why = {c.key: c.reason for c in rec.choices}["model.quantization"]
    assert "GiB" in why and "NF4" in why
    cfg = yaml.safe_load(out.read_text(encoding="utf-8"))
    assert cfg["model"]["quantization"]["load_in_4bit"] is True
    total, _ = _plan_total(out, 1)
    assert total == rec.memory.per_device["total"] <= 8 * 2**30


def test_rank_follows_the_data_not_the_model() -> None:
    assert [rank_for(n)[0] for n in (2_000, 50_000, 1_000_000)] == [8, 16, 64]
