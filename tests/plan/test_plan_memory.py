"""The memory estimate's assembly: terms, verdict, search, and the setup read from a config."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from loralab.errors import ConfigError
from loralab.plan.estimate.memory import (
    CONTEXT_ALLOWANCE,
    DEVICE_TERMS,
    TrainSetup,
    estimate_memory,
    transient_bytes,
)
from loralab.plan.estimate.setup import Overrides, parse_size, setup_from_config
from loralab.plan.estimate.state_memory import Sharding

ROOT = Path(__file__).resolve().parents[2]
SEED000 = ROOT / "examples" / "seed000-qwen3-8b-phase1-attention.yaml"


def _seed000() -> tuple[Any, Any, dict[str, Any]]:
    from loralab.arch.resolve import resolve_model
    from loralab.plan.experiment import load_and_plan

    cfg, plan, _ = load_and_plan(SEED000, with_options=False)
    return cfg, plan, resolve_model("Qwen/Qwen3-8B").config


def test_setup_reads_the_config_under_transformers_and_deepspeed_names() -> None:
    cfg, plan, _ = _seed000()
    setup, notes = setup_from_config(cfg, plan.arch, Overrides(gpus=4))
    assert (setup.micro_batch, setup.seq_len) == (8, 256)  # per_device_train_batch_size, max_length
    assert setup.load_dtype == "bfloat16" and setup.autocast == "bfloat16"
    assert setup.gradient_accumulation_steps == 8
    # deepspeed/seed000-zero2.json: stage 2, no offload, bf16 enabled
    assert setup.sharding == Sharding(gpus=4, zero_stage=2, mixed_precision="bfloat16")
    assert setup.optim == "adamw_torch_fused"
    # DeepSpeed's engine casts the whole model (adapters too) to bf16 and runs no autocast
    act = setup.activation_setup()
    assert (act.dtype, act.adapter_dtype, act.autocast) == ("bfloat16", "bfloat16", None)
    flags = Overrides(
        gpus=2, micro_batch=2, seq_len=1024, gradient_checkpointing=True, zero_stage=3, offload=True
    )
    s2, _ = setup_from_config(cfg, plan.arch, flags)
    assert (s2.micro_batch, s2.seq_len, s2.gradient_checkpointing) == (2, 1024, True)
    assert (s2.sharding.zero_stage, s2.sharding.offload_optimizer, s2.gpus) == (3, "cpu", 2)
    assert notes == []


def test_terms_add_up_and_the_overhead_is_the_stated_allowance() -> None:
    cfg, plan, hf = _seed000()
    setup, _ = setup_from_config(cfg, plan.arch, Overrides(gpus=4))
    est = estimate_memory(plan, hf, setup, budget=parse_size("24GiB"))
    per = est.per_device
    assert per["total"] == sum(per[k] for k in DEVICE_TERMS)
    others = sum(per[k] for k in DEVICE_TERMS if k != "overhead")
    assert per["overhead"] == CONTEXT_ALLOWANCE + int(0.05 * others)
    assert est.fits is (per["total"] <= 24 * 2**30)
    assert est.host["total"] == 0  # no offload in seed 000's ZeRO-2 config
    js = est.to_json()
    assert set(js["per_device"]) == {*DEVICE_TERMS, "total"} and js["fits"] == est.fits


def test_largest_micro_batch_and_length_are_the_boundary() -> None:
    cfg, plan, hf = _seed000()
    setup, _ = setup_from_config(cfg, plan.arch, Overrides(gpus=4))
    budget = parse_size("24GiB")
    est = estimate_memory(plan, hf, setup, budget=budget)
    mb, sl = est.max_micro_batch, est.max_seq_len
    assert mb and sl

    def total(**kw: int) -> int:
        return estimate_memory(plan, hf, replace(setup, **kw)).per_device["total"]

    assert total(micro_batch=mb) <= budget < total(micro_batch=mb + 1)
    assert total(seq_len=sl) <= budget < total(seq_len=sl + 64)


def test_transient_is_the_larger_of_the_loss_and_a_layer_backward_by_hand() -> None:
    from loralab.plan.estimate.activations import ActivationEstimate
    from loralab.plan.experiment import load_and_plan

    _, plan, _ = load_and_plan(ROOT / "examples" / "smollm2-sft-korean.yaml", with_options=False)
    hf = {"hidden_size": 576, "vocab_size": 49152}
    setup = TrainSetup(micro_batch=2, seq_len=128, load_dtype="bfloat16", autocast="bfloat16")
    got = transient_bytes(plan, hf, setup, ActivationEstimate(total=0))
    rows, v = 2 * 128, 49152
    # bf16 logits: forward keeps them plus a float32 copy (2 + 4 bytes); backward holds float32
    # d(log_softmax) and d(logits) and the bf16 cast back (8 + 2): the backward side is larger
    assert got == max(rows * v * (2 + 4), rows * v * (8 + 2), 2 * 128 * (2 * 576 + 2 * 1536) * 2)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("80GiB", 80 * 2**30),
        ("24GB", 24 * 10**9),
        ("8", 8 * 2**30),
        ("512MiB", 512 * 2**20),
        ("1.5G", 3 * 2**29),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


def test_parse_size_error_names_the_flag() -> None:
    with pytest.raises(ConfigError, match="--gpu-mem"):
        parse_size("lots")


def test_a_family_without_activation_model_gives_a_lower_bound(tmp_path: Path) -> None:
    import json

    from loralab.arch.resolve import resolve_model
    from loralab.plan.experiment import load_and_plan

    folder = tmp_path / "tiny-phi"
    folder.mkdir()
    phi = {"model_type": "phi", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}
    phi |= {"num_attention_heads": 4, "vocab_size": 256}
    (folder / "config.json").write_text(json.dumps(phi), encoding="utf-8")
    cfg_path = tmp_path / "x.yaml"
    cfg_path.write_text(
        f"model: {{name_or_path: {folder}, task: causal-lm, torch_dtype: bfloat16}}\n"
        "lora: {enable: true, config: {r: 8, lora_alpha: 16, target_modules: [q_proj, v_proj]}}\n",
        encoding="utf-8",
    )
    cfg, plan, _ = load_and_plan(cfg_path, with_options=False)
    setup, _ = setup_from_config(cfg, plan.arch, Overrides())
    hf = resolve_model(str(folder)).config
    roomy = estimate_memory(plan, hf, setup, budget=parse_size("80GiB"))
    assert not roomy.modelled and roomy.per_device["activations"] == 0
    assert roomy.fits is None and roomy.max_micro_batch is None  # a lower bound cannot say "fits"
    assert any("'phi'" in n and "lower bound" in n for n in roomy.notes)
    tight = estimate_memory(plan, hf, setup, budget=parse_size("512MiB"))
    assert tight.fits is False  # the allowance alone exceeds 512 MiB


def test_tokens_per_epoch_are_the_training_texts_tokenized_and_truncated() -> None:
    import csv

    from loralab.commands.plan import data_tokens
    from loralab.config import load_experiment
    from loralab.train.loading import load_tokenizer

    cfg = load_experiment(ROOT / "examples" / "smollm2-seqcls-tweets.yaml")
    tokens, source = data_tokens(cfg, 96)
    # reference: the CSV read with the csv module, every text tokenized alone, cut at max_length 96
    with open(ROOT / "examples" / "data" / "healthtweets-train.csv", encoding="utf-8", newline="") as f:
        texts = [r["text"] for r in csv.DictReader(f)]
    tok = load_tokenizer(cfg)
    assert tokens == sum(min(len(tok(t)["input_ids"]), 96) for t in texts)
    assert f"{len(texts):,} rows" in source
