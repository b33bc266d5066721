"""`plan` and the config loader on hostile values (issue 10, B and C): each is a config error naming the
key or flag with a fix, or a warning, never an "internal error" and never a plan of the impossible."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from test_train_loading import minilm_folder  # tests/train is on sys.path (conftest)

from loralab.arch.hf import max_length_problem, max_positions, position_limit
from loralab.commands.plan import PlanExtras, run_plan
from loralab.config import load_experiment
from loralab.errors import ConfigError
from loralab.plan.estimate.setup import Overrides, parse_size, setup_from_config
from loralab.plan.estimate.timing import check_rate_inputs
from loralab.plan.experiment import plan_experiment

GPT2 = """
model: {name_or_path: gpt2, task: seq-cls, num_labels: 3}
lora:
  config: {r: 8, lora_alpha: 16, target_modules: [c_attn]}
training_args: {per_device_train_batch_size: 4, bf16: true}
"""


def write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems(path: Path) -> dict[str, Any]:
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    return {p.key: p for p in info.value.problems}


# ---- the config: DeepSpeed and training_args values that crash a run or plan nonsense -------------


@dataclass(frozen=True)
class Bad:
    id: str
    yaml: str  # appended to GPT2
    key: str
    fix: str  # a substring of the fix


BAD = [
    Bad("ZeRO stage 7", "deepspeed: {zero_optimization: {stage: 7}}", "deepspeed.zero_optimization.stage",
        "0, 1, 2 or 3"),
    Bad("ZeRO stage -1", "deepspeed: {zero_optimization: {stage: -1}}", "deepspeed.zero_optimization.stage",
        "0, 1, 2 or 3"),
    Bad("ZeRO stage true", "deepspeed: {zero_optimization: {stage: true}}",
        "deepspeed.zero_optimization.stage", "0, 1, 2 or 3"),
    Bad("ZeRO stage text", "deepspeed: {zero_optimization: {stage: two}}",
        "deepspeed.zero_optimization.stage", "0, 1, 2 or 3"),
    Bad("zero_optimization a number", "deepspeed: {zero_optimization: 2}", "deepspeed.zero_optimization",
        "stage: 2"),
    Bad("no zero_optimization", "deepspeed: {bf16: {enabled: auto}}", "deepspeed.zero_optimization",
        "zero_optimization: {stage: 0}"),
    Bad("bf16 a bool", "deepspeed: {zero_optimization: {stage: 2}, bf16: true}", "deepspeed.bf16",
        "enabled: true"),
    Bad("bf16.enabled text", "deepspeed: {zero_optimization: {stage: 2}, bf16: {enabled: 'yes'}}",
        "deepspeed.bf16.enabled", '"auto"'),
    Bad("offload to a gpu", "deepspeed: {zero_optimization: {stage: 2, offload_optimizer: {device: gpu}}}",
        "deepspeed.zero_optimization.offload_optimizer.device", "cpu, nvme or none"),
    Bad("optimizer offload at stage 0",
        "deepspeed: {zero_optimization: {stage: 0, offload_optimizer: {device: cpu}}}",
        "deepspeed.zero_optimization.offload_optimizer", "stage: 2"),
    Bad("offload_param a string", "deepspeed: {zero_optimization: {stage: 3, offload_param: cpu}}",
        "deepspeed.zero_optimization.offload_param", "device: cpu"),
    Bad("bf16 and fp16 both on",
        "deepspeed: {zero_optimization: {stage: 2}, bf16: {enabled: true}, fp16: {enabled: true}}",
        "deepspeed.fp16", "keep bf16"),
    Bad("DeepSpeed fp16 against training_args bf16", "deepspeed: {zero_optimization: {stage: 2}, "
        "fp16: {enabled: true}}", "deepspeed.fp16.enabled", '"auto"'),
    Bad("DeepSpeed lr against learning_rate",
        "deepspeed: {zero_optimization: {stage: 1}, optimizer: {type: AdamW, params: {lr: 1.0e-3}}}",
        "deepspeed.optimizer.params.lr", '"auto"'),
    Bad("DeepSpeed betas against adam_beta*",
        "deepspeed: {zero_optimization: {stage: 1}, optimizer: {type: AdamW, params: {betas: [0.9, 0.95]}}}",
        "deepspeed.optimizer.params.betas", '"auto"'),
]  # fmt: skip
TRAINING_ARGS = [
    ("logging_steps", "0"),
    ("save_steps", "-5"),
    ("eval_steps", "2.5"),
    ("weight_decay", "-0.1"),
    ("adam_beta2", "1.5"),
    ("adam_epsilon", "-1.0e-8"),
    ("dataloader_num_workers", "-1"),
    ("label_smoothing_factor", "2.0"),
]
BAD += [Bad(f"training_args.{key} {value}", "", f"training_args.{key}", "") for key, value in TRAINING_ARGS]


def _text(case: Bad) -> str:
    if case.key.startswith("training_args."):
        name = case.key.split(".", 1)[1]
        value = dict(TRAINING_ARGS)[name]
        return GPT2.replace("bf16: true}", f"bf16: true, {name}: {value}}}")
    return GPT2 + case.yaml + "\n"


@pytest.mark.parametrize("case", BAD, ids=[c.id for c in BAD])
def test_config_refuses(case: Bad, tmp_path: Path) -> None:
    found = problems(write(tmp_path, _text(case)))
    assert case.key in found, found
    assert case.fix in found[case.key].fix


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = GPT2.replace("bf16: true}", "bf16: true, logging_steps: 0}") + (
        "deepspeed: {zero_optimization: {stage: 7, offload_optimizer: {device: gpu}}}\n"
    )
    assert {
        "training_args.logging_steps",
        "deepspeed.zero_optimization.stage",
        "deepspeed.zero_optimization.offload_optimizer.device",
    } <= set(problems(write(tmp_path, text)))


@pytest.mark.parametrize(
    "ds",
    [
        "{zero_optimization: {stage: auto}, bf16: {enabled: auto}}",
        "{zero_optimization: {stage: 3, offload_param: {device: cpu}}, bf16: {enabled: true}}",
        "{zero_optimization: {stage: 0}, optimizer: {type: AdamW, params: {lr: auto, betas: [0.9, 0.999]}}}",
    ],
)
def test_valid_deepspeed_configs_load(ds: str, tmp_path: Path) -> None:
    assert load_experiment(write(tmp_path, GPT2 + f"deepspeed: {ds}\n")).deepspeed


@pytest.mark.parametrize(("env", "stage"), [(None, 2), ("3", 3)])
def test_zero_stage_auto_is_the_stage_accelerate_fills(
    env: str | None, stage: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """transformers' HfTrainerDeepSpeedConfig fills no stage; accelerate's DeepSpeedPlugin, which the
    Trainer builds, puts ACCELERATE_DEEPSPEED_ZERO_STAGE (default 2) in an "auto" one."""
    if env is None:
        monkeypatch.delenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", raising=False)
    else:
        monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", env)
    cfg = load_experiment(write(tmp_path, GPT2 + "deepspeed: {zero_optimization: {stage: auto}}\n"))
    plan = plan_experiment(cfg, with_options=False)
    setup, notes = setup_from_config(cfg, plan.arch, Overrides(gpus=2))
    assert setup.sharding.zero_stage == stage
    assert any('"auto"' in n and str(stage) in n for n in notes)
    assert cfg.deepspeed == {"zero_optimization": {"stage": "auto"}}  # the run gets it as written


# ---- flags: every one out of range, at once, named ------------------------------------------------


def test_overrides_out_of_range_are_named_together(tmp_path: Path) -> None:
    cfg = load_experiment(write(tmp_path, GPT2))
    plan = plan_experiment(cfg, with_options=False)
    with pytest.raises(ConfigError) as info:
        setup_from_config(cfg, plan.arch, Overrides(gpus=0, micro_batch=-1, seq_len=0, zero_stage=7))
    assert [p.file for p in info.value.problems] == ["--gpus", "--micro-batch", "--seq-len", "--zero-stage"]
    with pytest.raises(ConfigError) as info:
        setup_from_config(cfg, plan.arch, Overrides(zero_stage=0, offload=True, attn_implementation="fast"))
    assert [p.file for p in info.value.problems] == ["--offload", "--attn-implementation"]
    for size in ("0", "0GiB", "-3GiB"):
        with pytest.raises(ConfigError, match="--gpu-mem"):
            parse_size(size)
    with pytest.raises(ConfigError) as info:
        check_rate_inputs(tflops=-1, mfu=5, tokens_per_epoch=-100)
    assert [p.file for p in info.value.problems] == ["--tflops", "--mfu", "--tokens"]
    check_rate_inputs(tflops=None, mfu=1.0, tokens_per_epoch=0)  # 0 tokens: "unknown", not an error


def loralab(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "loralab", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        check=False,
    )


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--gpus", "0", "--micro-batch", "-1", "--mfu", "5", "--tokens", "-100"],
         ["--gpus", "--micro-batch", "--mfu", "--tokens"]),
        (["--seq-len", "0", "--tflops", "-1", "--zero-stage", "7"],
         ["--seq-len", "--tflops", "--zero-stage"]),
        (["--seq-len", "5000"], ["--seq-len", "1024", "n_positions"]),  # GPT-2's position table
    ],
    ids=["gpus-micro-batch-mfu-tokens", "seq-len-tflops-zero-stage", "seq-len-past-positions"],
)  # fmt: skip
def test_cli_flags_out_of_range(flags: list[str], named: list[str], tmp_path: Path) -> None:
    r = loralab("plan", str(write(tmp_path, GPT2)), "--no-options", *flags, cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "internal error" not in r.stderr and "Traceback" not in r.stderr
    for name in named:
        assert name in r.stderr, r.stderr


@pytest.mark.parametrize(
    ("stage", "code", "says"),
    [("auto", 0, "ZeRO-2"), ("7", 2, "deepspeed.zero_optimization.stage")],
)
def test_cli_zero_stage(stage: str, code: int, says: str, tmp_path: Path) -> None:
    cfg = write(tmp_path, GPT2 + f"deepspeed: {{zero_optimization: {{stage: {stage}}}}}\n")
    r = loralab("plan", str(cfg), "--no-options", "--gpus", "2", cwd=tmp_path)
    assert r.returncode == code, r.stdout + r.stderr
    assert "internal error" not in r.stderr
    assert says in r.stdout + r.stderr
    assert "ZeRO-7" not in r.stdout


# ---- B: data.max_length against the model's positions --------------------------------------------


@pytest.mark.parametrize(
    ("config", "tokens", "key", "hard"),
    [
        ({"model_type": "gpt2", "n_positions": 1024}, 1024, "n_positions", True),
        ({"model_type": "gpt2", "max_position_embeddings": 1024}, 1024, "max_position_embeddings", True),
        ({"model_type": "bert", "max_position_embeddings": 512}, 512, "max_position_embeddings", True),
        ({"model_type": "roberta", "max_position_embeddings": 514, "pad_token_id": 1}, 512,
         "max_position_embeddings - 2", True),
        ({"model_type": "xlm-roberta", "max_position_embeddings": 514}, 512,
         "max_position_embeddings - 2", True),
        ({"model_type": "bart", "max_position_embeddings": 1024}, 1024, "max_position_embeddings", True),
        ({"model_type": "deberta-v2", "max_position_embeddings": 512}, 512, "max_position_embeddings", True),
        ({"model_type": "deberta-v2", "max_position_embeddings": 512, "position_biased_input": False}, 512,
         "max_position_embeddings", False),
        ({"model_type": "llama", "max_position_embeddings": 131072}, 131072,
         "max_position_embeddings", False),
        ({"model_type": "gpt_neox", "max_position_embeddings": 2048}, 2048, "max_position_embeddings", False),
    ],
)  # fmt: skip
def test_position_limits(config: dict[str, Any], tokens: int, key: str, hard: bool) -> None:
    limit = position_limit(config)
    assert limit is not None and (limit.tokens, limit.key, limit.hard) == (tokens, key, hard)
    assert max_positions(config) == (tokens if hard else None)
    problem = max_length_problem(config, tokens + 1, file="exp.yaml")
    assert (problem is not None) == hard
    assert max_length_problem(config, tokens, file="exp.yaml") is None


def test_no_position_limit() -> None:
    assert position_limit({"model_type": "t5", "d_model": 512}) is None  # relative buckets
    assert max_length_problem({"model_type": "t5"}, 10**6, file="exp.yaml") is None


@pytest.mark.parametrize(
    ("model", "data", "seq_len", "key", "says"),
    [
        ("gpt2", "{max_length: 100000}", None, "data.max_length", "n_positions"),
        ("gpt2", "{max_length: 1024}", 2048, "", "--seq-len"),
    ],
)
def test_plan_refuses_lengths_past_the_position_table(
    model: str, data: str, seq_len: int | None, key: str, says: str, tmp_path: Path
) -> None:
    cfg = write(tmp_path, GPT2 + f"data: {data}\n")
    extra = PlanExtras(overrides=Overrides(seq_len=seq_len))
    with pytest.raises(ConfigError) as info:
        run_plan(cfg, as_json=True, with_options=False, out=Console(), extra=extra)
    (problem,) = info.value.problems
    assert problem.key == key and says in problem.line() and "1024 or less" in problem.fix


def test_plan_warns_past_a_rotary_models_context(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (
        GPT2.replace("gpt2", "Qwen/Qwen3-0.6B").replace("[c_attn]", "[q_proj]")
        + "data: {max_length: 100000}\n"
    )
    run_plan(write(tmp_path, text), as_json=True, with_options=False, out=Console(), extra=PlanExtras())
    warnings = json.loads(capsys.readouterr().out)["warnings"]
    assert any("data.max_length 100000" in w and "40960" in w for w in warnings), warnings


# ---- C: a rank above the layer's width -------------------------------------------------------------


@pytest.mark.parametrize(("r", "warned"), [(100000, True), (769, True), (768, False), (8, False)])
def test_rank_above_the_layer_width_is_a_warning(r: int, warned: bool, tmp_path: Path) -> None:
    text = GPT2.replace("r: 8, lora_alpha: 16, target_modules: [c_attn]", f"r: {r}, target_modules: [c_proj]")
    plan = plan_experiment(load_experiment(write(tmp_path, text)), with_options=False)
    found = [w for w in plan.warnings if "exceeds the width" in w]
    assert bool(found) == warned, plan.warnings
    if warned:
        # attn.c_proj is 768 x 768 and mlp.c_proj 3072 -> 768: both have min(in, out) 768
        assert "r <= 768" in found[0] and f"r {r}" in found[0]
        assert f"{(r - 768) * (768 + 768) * 12 + (r - 768) * (3072 + 768) * 12:,}" in found[0]


def test_rank_above_a_384_wide_encoder(tmp_path: Path) -> None:
    """The brief's case: r 100000 on MiniLM's 384-wide layers."""
    text = f"""
model: {{name_or_path: {minilm_folder()}, task: seq-cls, num_labels: 4}}
lora:
  config: {{r: 100000, target_modules: [query, value]}}
"""
    plan = plan_experiment(load_experiment(write(tmp_path, text)), with_options=False)
    assert any("r <= 384" in w and "query, value" in w for w in plan.warnings), plan.warnings
