"""`loralab plan` and `loralab modules` as a user runs them: output, JSON contract, errors, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def loralab(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "loralab", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        check=False,
    )


def test_plan_json_seed000_baseline() -> None:
    p = loralab("plan", str(EXAMPLES / "seed000-qwen3-8b-phase1-attention.yaml"), "--json")
    assert p.returncode == 0, p.stderr
    obj = json.loads(p.stdout)
    assert obj["trainable_params"] == 76_038_144
    assert obj["lora_params"] == 11 * 6_815_744
    assert obj["bias_params"] == 0
    assert obj["modules_to_save_params"] == 260 * 4096
    assert obj["model"]["name"] == "Qwen/Qwen3-8B"
    assert obj["model"]["architecture"] == "Qwen3ForSequenceClassification"
    assert obj["model"]["num_layers"] == 36
    assert obj["model"]["total_params"] == obj["model"]["total_params"] > 7_000_000_000
    assert len(obj["modules"]) == 44  # 4 projections x 11 layers
    first = obj["modules"][0]
    assert set(first) >= {"name", "kind", "layer", "in_features", "out_features", "lora_params"}
    assert first == {
        **first,
        "name": "model.layers.25.self_attn.q_proj",
        "layer": 25,
        "lora_params": 2_097_152,
    }
    assert [o["trainable_params"] for o in obj["options"]] == [76_038_144, 168_312_832, 214_450_176]
    assert isinstance(obj["warnings"], list)


def test_plan_human_gpt2_warns_about_c_proj() -> None:
    p = loralab("plan", str(EXAMPLES / "seed002-gpt2-attention.yaml"))
    assert p.returncode == 0, p.stderr
    assert "811,008" in p.stdout
    assert "matches modules of different kinds" in p.stdout
    assert "mlp.c_proj" in p.stdout


def test_config_errors_are_one_line_each_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "model:\n  name_or_path: Qwen/Qwen3-8B\n  task: seq-cls\n  num_labels: 260\n"
        "lora:\n  enable: true\n  config:\n    r: 8\n    lora_alpah: 16\n    target_modules: [q_proj]\n"
        "trainig_args: {}\n"
    )
    p = loralab("plan", str(bad))
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    assert "lora_alpah" in p.stderr and "lora_alpha" in p.stderr
    assert "trainig_args" in p.stderr and "training_args" in p.stderr
    assert str(bad) in p.stderr
    debug = loralab("--debug", "plan", str(bad))
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_target_matching_nothing_lists_existing_modules(tmp_path: Path) -> None:
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(
        "model:\n  name_or_path: openai-community/gpt2\n  task: causal-lm\n"
        "lora:\n  config:\n    r: 8\n    target_modules: [q_proj]\n"
    )
    p = loralab("plan", str(cfg))
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    line = next(s for s in p.stderr.splitlines() if "q_proj" in s)
    assert "lora.config.target_modules" in line
    for name in ("c_attn", "c_fc", "c_proj", "lm_head", "wte"):
        assert name in line


def test_unknown_model_offline_lists_bundled_models(tmp_path: Path) -> None:
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(
        "model:\n  name_or_path: nobody/no-such-model\n  task: causal-lm\n"
        "lora:\n  config:\n    target_modules: [q_proj]\n"
    )
    p = loralab("plan", str(cfg))
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    assert "nobody/no-such-model" in p.stderr and "Qwen/Qwen3-8B" in p.stderr


def test_modules_lists_gpt2_conv1d_layers() -> None:
    p = loralab("modules", "openai-community/gpt2", "--json")
    assert p.returncode == 0, p.stderr
    rows = {r["name"]: r for r in json.loads(p.stdout)["modules"]}
    assert rows["transformer.h.N.attn.c_attn"]["in_features"] == 768
    assert rows["transformer.h.N.attn.c_attn"]["out_features"] == 2304
    assert rows["transformer.h.N.attn.c_proj"]["kind"] == "attention"
    assert rows["transformer.h.N.mlp.c_proj"]["kind"] == "mlp"
    assert rows["transformer.h.N.mlp.c_proj"]["count"] == 12


def test_modules_unknown_task_is_a_clear_error() -> None:
    p = loralab("modules", "openai-community/gpt2", "--task", "classification")
    assert p.returncode == 2 and "unknown task" in p.stderr and "seq-cls" in p.stderr


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_example_loads_and_plans(example: Path) -> None:
    from loralab.plan.experiment import plan_from_config

    plan, _notes = plan_from_config(example)
    assert plan.counts.trainable_params > 0


def test_modules_default_task_follows_the_model() -> None:
    # KoBART is an encoder-decoder: without --task it is listed as the seq2seq model, both stacks.
    p = loralab("modules", "gogamza/kobart-base-v2", "--json")
    assert p.returncode == 0, p.stderr
    obj = json.loads(p.stdout)
    assert obj["architecture"] == "BartForConditionalGeneration"
    names = {r["name"] for r in obj["modules"]}
    assert "model.encoder.layers.N.self_attn.q_proj" in names
    assert "model.decoder.layers.N.encoder_attn.q_proj" in names


def test_broken_pipe_is_not_an_internal_error() -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    p = subprocess.run(
        f"{sys.executable} -m loralab modules openai-community/gpt2 | head -1",
        shell=True,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert "internal error" not in p.stderr


def test_plan_json_memory_and_time_for_seed000_on_four_gpus_zero2() -> None:
    p = loralab(
        "plan",
        str(EXAMPLES / "seed000-qwen3-8b-phase1-attention.yaml"),
        "--json",
        "--gpus",
        "4",
        "--zero-stage",
        "2",
        "--gpu-mem",
        "24GiB",
        "--tokens",
        "1000000",
    )
    assert p.returncode == 0, p.stderr
    obj = json.loads(p.stdout)
    mem = obj["memory"]
    terms = ("weights", "trainable", "gradients", "optimizer", "activations", "transient", "overhead")
    assert set(mem["per_device"]) == {*terms, "total"}
    assert mem["per_device"]["total"] == sum(mem["per_device"][k] for k in terms)
    # 76,038,144 trainable: bf16 under DeepSpeed; 12-byte fp32 master + Adam sharded over 4
    assert mem["per_device"]["trainable"] == 2 * 76_038_144
    assert mem["per_device"]["optimizer"] == 12 * 76_038_144 // 4
    assert set(mem["host"]) >= {"weights", "optimizer", "total"}
    assert isinstance(mem["fits"], bool) and mem["max_micro_batch"] >= 1
    t = obj["time"]
    assert t["tokens"] == 20 * 1_000_000  # num_train_epochs: 20
    fpt = (t["flops_per_step_forward"] + t["flops_per_step_backward"]) / (8 * 256)
    assert t["flops_per_token"] == pytest.approx(fpt)
    assert t["hours"] == pytest.approx(fpt * t["tokens"] / (4 * t["tflops_per_gpu"] * 1e12) / 3600)
    # LoRA on layers 25-35 of 36, Qwen3 without dropout: layers 0-24 are cached
    pc = obj["prefix_cache"]
    assert pc["used"] and (pc["boundary_layer"], pc["num_layers"], pc["dtype"]) == (25, 36, "bfloat16")
    # --tokens and no data file: 1,000,000 tokens (the validation 10% of them included) x 4096 x 2 bytes
    assert pc["bytes_on_disk"] == 1_000_000 * 4096 * 2
    step = t["flops_per_step_forward"] + t["flops_per_step_backward"]  # the time estimate's step
    assert pc["flops_per_step_uncached"] == step
    assert pc["speedup_step"] == pytest.approx(step / pc["flops_per_step_cached"])


def test_plan_measure_twin_ratios() -> None:
    p = loralab("plan", str(EXAMPLES / "seed000-qwen3-8b-phase1-attention.yaml"), "--json", "--measure")
    assert p.returncode == 0, p.stderr
    ratios = json.loads(p.stdout)["measure"]["ratios"]
    for term in ("weights", "trainable", "gradients", "optimizer"):
        assert ratios[term] == 1.0, term
    assert 0.9 <= ratios["activations"] <= 1.1


def test_plan_bad_gpu_mem_is_one_line() -> None:
    p = loralab("plan", str(EXAMPLES / "seed000-qwen3-8b-phase1-attention.yaml"), "--gpu-mem", "lots")
    assert p.returncode != 0
    assert "--gpu-mem" in p.stderr and "Traceback" not in p.stderr


def test_recommend_json_and_missing_labels() -> None:
    p = loralab(
        "recommend",
        "Qwen/Qwen3-8B",
        "--task",
        "seq-cls",
        "--num-labels",
        "260",
        "--rows",
        "100000",
        "--gpu-mem",
        "24GiB",
        "--gpus",
        "4",
        "--json",
    )
    assert p.returncode == 0, p.stderr
    obj = json.loads(p.stdout)
    assert obj["memory"]["fits"] is True
    assert {c["key"] for c in obj["choices"]} >= {"lora.config.r", "training_args.learning_rate"}
    bad = loralab("recommend", "Qwen/Qwen3-8B", "--task", "seq-cls", "--rows", "10", "--gpu-mem", "24GiB")
    assert bad.returncode != 0 and "--num-labels" in bad.stderr and "Traceback" not in bad.stderr
