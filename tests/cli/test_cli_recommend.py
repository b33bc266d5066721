"""`loralab recommend` end to end (issue 12): --data fills the YAML, the CPU target, the one-line
errors, and --validate's winner written into the YAML with the study's table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from loralab.commands import recommend_validate
from loralab.commands.recommend import run_recommend
from loralab.experiments.tune import Trial, Validation

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "data"


def loralab(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loralab", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_cpu_recommendation_from_data_is_ready_to_train(tmp_path: Path) -> None:
    out = tmp_path / "rec.yaml"
    p = loralab(
        "recommend",
        "gpt2",
        "--task",
        "seq-cls",
        "--data",
        str(EXAMPLES / "healthtweets-train.csv"),
        "--cpu",
        "--seq-len",
        "96",
        "--out",
        str(out),
    )
    assert p.returncode == 0, p.stderr
    assert "ready: `loralab train" in p.stdout and "warning" not in p.stdout
    cfg = yaml.safe_load(out.read_text(encoding="utf-8"))
    assert cfg["model"]["num_labels"] == 16
    assert (cfg["data"]["text_field"], cfg["data"]["label_field"]) == ("text", "source")
    ta = cfg["training_args"]
    # 320 tweets: effective batch 8 (40 steps an epoch) so 3 epochs give 120 >= 100 steps
    assert (ta["per_device_train_batch_size"], ta["gradient_accumulation_steps"], ta["num_train_epochs"]) == (
        8,
        1,
        3,
    )
    # 10 warmup steps of 120: the fraction transformers 5 reads from warmup_steps < 1
    assert ta["warmup_steps"] == round(10 / 120, 3)
    assert cfg["lora"]["config"]["lora_dropout"] == 0.0 and ta["use_cpu"] is True


def test_columns_that_say_nothing_are_one_line(tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    data.write_text("a,b,c\nx,y,z\nu,v,w\n", encoding="utf-8")
    p = loralab("recommend", "gpt2", "--task", "seq-cls", "--data", str(data), "--cpu")
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert "a, b, c" in p.stderr and "--text-field" in p.stderr


def test_validate_needs_data() -> None:
    p = loralab("recommend", "gpt2", "--rows", "500", "--cpu", "--validate")
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert "--validate" in p.stderr and "--data" in p.stderr


def test_bad_budget_is_one_line() -> None:
    p = loralab("recommend", "gpt2", "--rows", "500", "--cpu", "--validate", "--budget", "soon")
    assert p.returncode != 0 and "--budget" in p.stderr and "Traceback" not in p.stderr


def _fake_validation(config: dict[str, Any], **_: Any) -> Validation:
    lr = config["training_args"]["learning_rate"]
    plain = Trial("lr=1e-3", {}, 0.80, 30.0, "done")
    best = Trial("lr=2e-3", {"training_args.learning_rate": 2 * lr}, 0.83, 31.0, "done")
    return Validation(
        metric="weighted_f1",
        higher_is_better=True,
        trials=[plain, best],
        best=best,
        baseline=plain,
        steps=60,
        train_rows=480,
        heldout_rows=32,
        budget_s=300,
        seconds=120.0,
        study_dir=Path("x"),
        reason="lr=2e-3 beat the plain lr=1e-3 by 3.0 points of weighted F1",
    )


def test_validated_winner_goes_into_the_yaml_with_its_table(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(recommend_validate, "validate_recommendation", _fake_validation)
    out = tmp_path / "rec.yaml"
    console = Console(file=open(tmp_path / "out.txt", "w"), width=200)  # noqa: SIM115
    rec = run_recommend(
        "gpt2",
        task="seq-cls",
        num_labels=None,
        rows=None,
        data=str(EXAMPLES / "healthtweets-train.csv"),
        gpu_mem=None,
        gpus=1,
        seq_len=96,
        bf16=True,
        out_path=str(out),
        as_json=False,
        console=console,
        cpu=True,
        validate=recommend_validate.validator(300, str(out), console, quiet=True),
    )
    text = out.read_text(encoding="utf-8")
    cfg = yaml.safe_load(text)
    assert cfg["training_args"]["learning_rate"] == 2 * rec.learning_rate.value
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert any("lr=2e-3" in h and "<- chosen" in h for h in header)
    assert any("120 s of a 300 s budget" in h for h in header)
    why = {c.key: c.reason for c in rec.choices}["training_args.learning_rate"]
    assert why.startswith("--validate: lr=2e-3 beat")
    assert recommend_validate.validation_folder(str(out)) == tmp_path / "rec-validate"


@pytest.mark.parametrize("text,seconds", [("15m", 900.0), ("90s", 90.0), ("1h", 3600.0), ("600", 600.0)])
def test_budget_durations(text: str, seconds: float) -> None:
    from loralab.commands.recommend import parse_duration

    assert parse_duration(text) == seconds


def test_target_is_this_hosts_gpu_else_its_cpu(monkeypatch: Any) -> None:
    from loralab.commands import recommend as cmd

    monkeypatch.setattr(cmd, "gpu_memory", lambda: None)
    t = cmd.pick_target(None, cpu=False)
    # no GPU: 80% of the physical RAM (os.sysconf, read independently here)
    import os

    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert (t.device, t.memory) == ("cpu", int(ram * 0.8))
    monkeypatch.setattr(cmd, "gpu_memory", lambda: 80 * 2**30)
    assert cmd.pick_target(None, cpu=False).device == "cuda"
    assert cmd.pick_target(None, cpu=True).device == "cpu"  # --cpu wins over a GPU
    assert cmd.pick_target("24GiB", cpu=False).memory == 24 * 2**30


def test_write_launch_writes_the_recommendations_launch_files(tmp_path: Path) -> None:
    """`recommend --write-launch`: the recommended config and plan's launch files for it, whose memory
    `plan --write-launch` on the written experiment gives again (one code path, read back)."""
    import json

    from typer.testing import CliRunner

    from loralab.cli import app

    out = tmp_path / "launch"
    args = ["Qwen/Qwen3-8B", "--task", "seq-cls", "--num-labels", "10", "--rows", "5000"]
    args += ["--gpu-mem", "80GiB", "--gpus", "8", "--nodes", "2", "--layout", "zero3"]
    res = CliRunner().invoke(app, ["recommend", *args, "--json", "--write-launch", str(out)])
    assert res.exit_code == 0, res.output
    launch = json.loads(res.stdout)["launch"]
    assert (launch["layout"], launch["gpus_per_node"], launch["nodes"]) == ("zero3", 8, 2)
    names = sorted(Path(f).name for f in launch["files"])
    assert names == ["README.txt", "deepspeed.json", "experiment.yaml", "launch.sh", "slurm.sbatch"]
    assert (out / "recommended.yaml").is_file()  # the recommendation itself, as --out writes it
    plan_args = ["plan", str(out / "experiment.yaml"), "--no-options", "--json", "--gpus", "8"]
    plan_args += ["--nodes", "2", "--gpu-mem", "80GiB", "--write-launch", str(tmp_path / "again")]
    again = CliRunner().invoke(app, plan_args)
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["launch"]["memory"] == launch["memory"]
