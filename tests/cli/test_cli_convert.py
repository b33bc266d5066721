"""`loralab convert` and `loralab diff` on other tools' files, through the command line: an Axolotl file
and a LLaMA-Factory file for the same recipe differ only where the tools' defaults differ."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from loralab.cli import app

AXOLOTL = """
base_model: Qwen/Qwen3-8B
adapter: lora
lora_r: 16
lora_alpha: 32
lora_dropout: 0.05
lora_target_linear: true
micro_batch_size: 4
gradient_accumulation_steps: 8
num_epochs: 3
learning_rate: 0.0002
sequence_len: 1024
bf16: true
wandb_project: demo
"""
LLAMA_FACTORY = """
model_name_or_path: Qwen/Qwen3-8B
stage: sft
do_train: true
finetuning_type: lora
lora_rank: 16
lora_dropout: 0.05
lora_target: all
template: qwen3
cutoff_len: 1024
per_device_train_batch_size: 4
gradient_accumulation_steps: 8
learning_rate: 2.0e-4
num_train_epochs: 3.0
bf16: true
"""


def _files(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "axolotl.yml", tmp_path / "llamafactory.yaml"
    a.write_text(AXOLOTL, encoding="utf-8")
    b.write_text(LLAMA_FACTORY, encoding="utf-8")
    return a, b


def test_diff_of_two_tools_reports_their_hidden_defaults(tmp_path: Path) -> None:
    a, b = _files(tmp_path)
    res = CliRunner().invoke(app, ["diff", str(a), str(b), "--json"])
    assert res.exit_code == 0, res.output
    obj = json.loads(res.stdout)
    diffs = {d["key"]: d for d in obj["differences"]}
    # Axolotl's lr_scheduler defaults to cosine, the Trainer's (LLaMA-Factory passes it through) to linear
    sched = diffs["learning-rate schedule (resolved)"]
    assert sched["a"].startswith("cosine") and sched["b"].startswith("linear") and sched["impact"] == "medium"
    # equal by meaning: lora_target_linear / lora_target all (all-linear); LLaMA-Factory's alpha 2 x rank = 32
    assert not [k for k in diffs if k.startswith("lora.")]
    assert diffs["training_args.do_train"]["impact"] == "none"
    assert any("wandb_project (from Axolotl)" in n for n in obj["notes"])  # carried, never dropped


def test_convert_writes_a_loralab_file_that_loads(tmp_path: Path) -> None:
    from loralab.config import load_experiment

    a, _ = _files(tmp_path)
    out = tmp_path / "converted.yaml"
    res = CliRunner().invoke(app, ["convert", str(a), "--to", "loralab", "-o", str(out)])
    assert res.exit_code == 0, res.output
    text = out.read_text(encoding="utf-8")
    assert "# from lora_r" in text and "wandb_project" in text
    cfg = load_experiment(out)
    assert cfg.source_format == "loralab" and cfg.lora_config_dict()["r"] == 16
    assert yaml.safe_load(text)["training_args"]["lr_scheduler_type"] == "cosine"
    bad = CliRunner().invoke(app, ["convert", str(a), "--to", "axolotl"])
    assert bad.exit_code != 0 and "--to loralab" in bad.output


def test_format_flag_overrides_detection(tmp_path: Path) -> None:
    a, _ = _files(tmp_path)
    ok = CliRunner().invoke(app, ["plan", str(a), "--format", "axolotl", "--json", "--no-options"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["lora"]["r"] == 16
    # read as a DeepSpeed file it names no model: one line naming the file, non-zero exit
    bad = CliRunner().invoke(app, ["plan", str(a), "--format", "deepspeed"])
    assert bad.exit_code != 0 and "names no model" in bad.output and "Traceback" not in bad.output
    check = CliRunner().invoke(app, ["train", str(a), "--format", "axolotl", "--check"])
    # train's preflight runs on the converted experiment (the twin step included)
    assert check.exit_code == 0 and "preflight: ok" in check.output, check.output
    assert "one training step of a 2-layer" in check.output
