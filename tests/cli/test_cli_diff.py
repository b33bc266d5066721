"""`loralab diff A B`: two configs compared by meaning (seed 001's pair, spelling equivalences, the
JSON contract, the Markdown report). Plans are config-only (Qwen3-8B's bundled config, no weights)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from loralab.commands.diff import run_diff

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
CURRENT = EXAMPLES / "seed001-current-training.yaml"
BACKUP = EXAMPLES / "seed001-backup-deepspeed.yaml"


def diff_json(
    a: Path, b: Path, capsys: pytest.CaptureFixture[str], gpus: int | None = None
) -> dict[str, Any]:
    run_diff(a, b, gpus=gpus, as_json=True, markdown=None, console=Console(width=200))
    obj: dict[str, Any] = json.loads(capsys.readouterr().out)
    return obj


def by_key(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["key"]: d for d in obj["differences"]}


def derived(obj: dict[str, Any], quantity: str) -> dict[str, Any]:
    return next(d for d in obj["derived"] if d["quantity"].startswith(quantity))


def write(tmp_path: Path, name: str, body: dict[str, Any], ds: dict[str, Any] | None = None) -> Path:
    if ds is not None:
        (tmp_path / f"{name}-ds.json").write_text(json.dumps(ds))
        body = {**body, "deepspeed": f"{name}-ds.json"}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def base(**training: Any) -> dict[str, Any]:
    """A Qwen3-8B seq-cls config like seed 001's, with training_args overridden."""
    return {
        "model": {
            "name_or_path": "Qwen/Qwen3-8B",
            "task": "seq-cls",
            "num_labels": 4,
            "torch_dtype": "bfloat16",
        },
        "lora": {"config": {"r": 16, "lora_alpha": 32, "target_modules": ["q_proj", "v_proj"]}},
        "data": {"max_length": 128},
        "training_args": {"learning_rate": 1e-4, "per_device_train_batch_size": 8, "bf16": True, **training},
    }


# ---- seed 001 ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seed001() -> dict[str, Any]:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        run_diff(CURRENT, BACKUP, gpus=4, as_json=True, markdown=None, console=Console(width=200))
    obj: dict[str, Any] = json.loads(buf.getvalue())
    return obj


def test_seed001_lora_scale_unchanged_and_parameters_1_5x(seed001: dict[str, Any]) -> None:
    scale = derived(seed001, "LoRA scale")
    assert scale["a"] == scale["b"] == 2.0
    assert "256/128" in scale["note"] and "512/256" in scale["note"]
    d = by_key(seed001)
    assert d["lora.lora_alpha"]["impact"] == "none"  # alpha only keeps alpha/r at 2.0
    assert "2 in both" in d["lora.lora_alpha"]["why"]
    assert (d["lora.r"]["a"], d["lora.r"]["b"]) == (128, 256)
    lora = derived(seed001, "LoRA parameters")
    # r=128 x 8 layers vs r=256 x 6 layers of q/k/v/o: 1.5x, not the 2x the seed's authors wrote
    assert (lora["a"], lora["b"]) == (27_262_976, 40_894_464)
    assert lora["b"] / lora["a"] == 1.5
    trainable = derived(seed001, "trainable parameters")
    assert (trainable["a"], trainable["b"]) == (28_327_936, 41_959_424)  # + the 260-label score head
    assert "1.48x" in trainable["note"]


def test_seed001_schedule_linear_default_vs_deepspeed_cosine(seed001: dict[str, Any]) -> None:
    sched = by_key(seed001)["learning-rate schedule (resolved)"]
    assert sched["a"] == "linear (Trainer)"  # the Trainer's default decays: not a constant rate
    assert sched["b"] == "WarmupCosineLR (DeepSpeed)"
    assert "replaces the Trainer's lr_scheduler_type" in sched["why"]
    by = derived(seed001, "schedule set by")
    assert "default (linear)" in by["a"] and by["b"].startswith("DeepSpeed scheduler block")
    curve = derived(seed001, "learning-rate schedule")
    assert "linear decay to 0" in curve["a"]
    assert "cosine decay to 2.5e-07" in curve["b"]
    # B's warmup_num_steps "auto" takes the Trainer's warmup_steps, which B leaves at 0: one step
    assert derived(seed001, "warmup steps")["b"] == 1


def test_seed001_equal_effective_batch_offload_and_layers(seed001: dict[str, Any]) -> None:
    eff = derived(seed001, "effective batch")
    assert eff["a"] == eff["b"] == 128
    assert "4 x 32 x 1" in eff["note"] and "4 x 16 x 2" in eff["note"]
    d = by_key(seed001)
    assert d["training_args.per_device_train_batch_size"]["impact"] == "low"
    offload = d["deepspeed.zero_optimization.offload_optimizer"]
    assert (offload["a"], offload["b"]) == ("none", "cpu (pinned)")
    assert "less GPU memory per device" in offload["why"] and "slower steps" in offload["why"]
    assert derived(seed001, "  of which optimizer")["b"] == 0  # its states live on the host
    assert derived(seed001, "host memory")["b"] > 0
    layers = derived(seed001, "layers adapted")
    assert (layers["a"], layers["b"]) == (list(range(28, 36)), list(range(30, 36)))
    assert "B wrote -6..-1" in layers["note"]
    groups = {x["group"] for x in seed001["differences"]}
    assert {"LoRA", "optimisation", "schedule", "batch", "distributed"} <= groups
    assert all(x["impact"] in ("high", "medium", "low", "none") and x["why"] for x in seed001["differences"])


def test_seed001_text_output(capsys: pytest.CaptureFixture[str]) -> None:
    run_diff(CURRENT, BACKUP, gpus=4, as_json=False, markdown=None, console=Console(width=220))
    out = capsys.readouterr().out
    assert "Differences" in out and "Derived quantities" in out
    assert "WarmupCosineLR" in out and "27,262,976" in out


# ---- spelling equivalences -----------------------------------------------------------------------


def test_identical_configs_have_no_differences(capsys: pytest.CaptureFixture[str]) -> None:
    obj = diff_json(CURRENT, CURRENT, capsys, gpus=4)
    assert obj["differences"] == []
    assert all(d["a"] == d["b"] for d in obj["derived"])


def test_negative_layers_equal_positive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    neg, pos = base(), base()
    neg["lora"]["config"]["layers_to_transform"] = [-6, -5, -4, -3, -2, -1]
    pos["lora"]["config"]["layers_to_transform"] = [30, 31, 32, 33, 34, 35]
    obj = diff_json(write(tmp_path, "neg", neg), write(tmp_path, "pos", pos), capsys)
    assert obj["differences"] == []
    assert any("-6..-1 resolves to 30-35" in n for n in obj["notes"])


def test_warmup_ratio_equals_fractional_warmup_steps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = write(tmp_path, "ratio", base(warmup_ratio=0.1))
    b = write(tmp_path, "steps", base(warmup_steps=0.1))
    obj = diff_json(a, b, capsys)
    assert obj["differences"] == []


def test_deepspeed_auto_equals_explicit_value(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    zero = {"zero_optimization": {"stage": 2}}
    auto = {**zero, "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
            "bf16": {"enabled": "auto"}}  # fmt: skip
    explicit = {
        **zero,
        "train_micro_batch_size_per_gpu": 8,
        "gradient_accumulation_steps": 1,
        "bf16": {"enabled": True},
    }
    obj = diff_json(
        write(tmp_path, "auto", base(), auto), write(tmp_path, "explicit", base(), explicit), capsys
    )
    assert obj["differences"] == []


def test_explicit_default_equals_omitted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """lr_scheduler_type: linear is the Trainer's default; an omitted key is the same run."""
    obj = diff_json(
        write(tmp_path, "a", base()), write(tmp_path, "b", base(lr_scheduler_type="linear")), capsys
    )
    keys = [d["key"] for d in obj["differences"]]
    assert "learning-rate schedule (resolved)" not in keys


def test_changed_scale_is_high_impact(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    b = base()
    b["lora"]["config"]["lora_alpha"] = 64
    obj = diff_json(write(tmp_path, "a", base()), write(tmp_path, "b", b), capsys)
    alpha = by_key(obj)["lora.lora_alpha"]
    assert alpha["impact"] == "high" and "2 -> 4" in alpha["why"]


def test_processes_default_to_one_with_a_note(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    obj = diff_json(
        write(tmp_path, "a", base()), write(tmp_path, "b", base(gradient_accumulation_steps=2)), capsys
    )
    assert derived(obj, "processes")["a"] == 1
    assert any("pass --gpus N" in n for n in obj["notes"])
    assert by_key(obj)["training_args.gradient_accumulation_steps"]["impact"] == "high"  # 8 vs 16


def test_steps_from_training_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = "\n".join(json.dumps({"text": f"row {i}", "label": i % 4}) for i in range(100))
    (tmp_path / "train.jsonl").write_text(rows + "\n")
    cfg = base(num_train_epochs=2)
    cfg["data"] = {
        "train_file": "train.jsonl",
        "text_field": "text",
        "label_field": "label",
        "max_length": 128,
    }
    obj = diff_json(write(tmp_path, "a", cfg), write(tmp_path, "b", cfg), capsys, gpus=2)
    per_epoch = derived(obj, "optimizer steps per epoch")
    assert per_epoch["a"] == 7  # ceil(ceil(100 / 2) / 8)
    assert derived(obj, "optimizer steps in total")["a"] == 14


# ---- reports -------------------------------------------------------------------------------------


def test_markdown_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    md = tmp_path / "diff.md"
    run_diff(CURRENT, BACKUP, gpus=4, as_json=False, markdown=md, console=Console(width=200))
    text = md.read_text(encoding="utf-8")
    assert text.startswith("# loralab diff")
    assert "## Differences" in text and "### LoRA" in text and "## Derived quantities" in text
    assert "| lora.lora_alpha | 256 | 512 | none |" in text
    assert "WarmupCosineLR" in text


def test_warmup_count_equals_fraction_of_known_steps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """10% of 14 optimizer steps is 2 (ceil), the same warmup as warmup_steps: 2."""
    rows = "\n".join(json.dumps({"text": f"row {i}", "label": i % 4}) for i in range(100))
    (tmp_path / "train.jsonl").write_text(rows + "\n")
    data = {"train_file": "train.jsonl", "text_field": "text", "label_field": "label", "max_length": 128}
    a, b = base(num_train_epochs=2, warmup_steps=0.1), base(num_train_epochs=2, warmup_steps=2)
    a["data"] = b["data"] = data
    obj = diff_json(write(tmp_path, "a", a), write(tmp_path, "b", b), capsys, gpus=2)
    assert obj["differences"] == []
    assert derived(obj, "warmup steps")["a"] == derived(obj, "warmup steps")["b"] == 2
