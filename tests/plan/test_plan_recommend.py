"""`recommend`: what it picks fits by the memory model, and `plan` of its YAML agrees."""

from __future__ import annotations

from pathlib import Path

import pytest
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
    from loralab.config import load_experiment

    assert not load_experiment(out).notes  # transformers 5 names only: no legacy key mapped
    assert cfg["training_args"]["activation_checkpointing"] is rec.setup.gradient_checkpointing


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


# ---- issue 12: learning rate, steps, warmup, CPU target, --data ------------------------------------

MINILM_HIDDEN = 384  # all-MiniLM-L6-v2's hidden_size (the demo's model)


def test_learning_rate_of_the_demo_model_is_in_the_evidence_range() -> None:
    from loralab.plan.recommend import learning_rate_for

    lr = learning_rate_for("bert", MINILM_HIDDEN)
    # LoRA = 10 x full fine-tuning (LoRA Without Regret); full FT = 5e-5 x (2000/width)^P with
    # P = 0.781 (Llama fit) or 0.0775 (Qwen fit): the two ends of the range at width 384.
    llama_end = 10 * 5e-5 * (2000 / 384) ** 0.781
    qwen_end = 10 * 5e-5 * (2000 / 384) ** 0.0775
    assert lr.low == pytest.approx(qwen_end) and lr.high == pytest.approx(llama_end)
    assert 5.6e-4 < qwen_end < 5.7e-4 and 1.8e-3 < llama_end < 1.82e-3
    assert lr.low <= lr.value <= lr.high
    # bert has no published fit: the geometric mean of the ends, 1.02e-3, rounded to 1e-3
    assert lr.value == 1e-3
    # issue 12's repro: 2e-4 (QLoRA's 7B constant) trained the demo model to 0.4795 accuracy
    assert lr.value >= 5 * 2e-4


def test_learning_rate_uses_the_family_fit_where_one_is_published() -> None:
    from loralab.plan.recommend import learning_rate_for

    # SmolLM2-135M is a Llama (hidden 576): 10 x 5e-5 x (2000/576)^0.781 = 1.32e-3 -> 1e-3
    smol = learning_rate_for("llama", 576)
    assert smol.value == 1e-3 and "Llama" in smol.reason
    # Qwen3-8B (hidden 4096): 10 x 5e-5 x (2000/4096)^0.0775 = 4.73e-4 -> 5e-4
    assert learning_rate_for("qwen3", 4096).value == 5e-4
    # the rate falls with the width
    assert learning_rate_for("llama", 8192).value < learning_rate_for("llama", 2048).value


@pytest.mark.parametrize(
    ("x", "nice"), [(1.02e-3, 1e-3), (1.6e-3, 2e-3), (2.6e-4, 3e-4), (4.1e-4, 5e-4), (7.7e-4, 1e-3)]
)
def test_nice_number_rounds_on_a_log_scale(x: float, nice: float) -> None:
    from loralab.plan.recommend import nice_number

    assert nice_number(x) == nice


def test_small_data_gets_smaller_batches_not_too_few_steps() -> None:
    from loralab.plan.recommend import MIN_STEPS, batch_and_epochs, step_budget, step_warnings

    # 320 tweets: batch 32 -> 10 x 3 = 30 steps; 16 -> 60; 8 -> 40 x 3 = 120 >= 100
    assert batch_and_epochs(320, "seq-cls", None)[:2] == (8, 3)
    # Banking77 (10,003 rows) keeps the full batch: ceil(10003/32) = 313 x 3 = 939 steps
    assert batch_and_epochs(10_003, "seq-cls", None)[:2] == (32, 3)
    steps = step_budget(10_003, 32, 1, 1, 3)
    assert steps.total == 313 * 3 and not step_warnings(steps)
    # 100 rows: batch 8 -> 13 steps an epoch; epochs grow to 8 (104 steps)
    assert batch_and_epochs(100, "seq-cls", None)[:2] == (8, 8)
    # epochs the user fixed are kept, and too few steps is a warning with its fix
    eff, epochs, _ = batch_and_epochs(100, "seq-cls", 1)
    few = step_budget(100, eff, 1, 1, epochs)
    assert few.total == 13 < MIN_STEPS
    assert any("--epochs" in w for w in step_warnings(few))


def test_steps_and_warmup_match_transformers_trainer(tmp_path: Path) -> None:
    """The step count and warmup against the Trainer itself on a 1-parameter model."""
    import torch
    from transformers import Trainer, TrainingArguments

    from loralab.plan.recommend import step_budget

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"loss": (self.w * x).pow(2).mean()}

    rows, micro, accum, epochs = 37, 4, 3, 2
    budget = step_budget(rows, micro, accum, 1, epochs)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=accum,
        num_train_epochs=epochs,
        warmup_steps=budget.warmup,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
    )
    data = [{"x": torch.tensor([1.0])} for _ in range(rows)]
    trainer = Trainer(model=Tiny(), args=args, train_dataset=data)
    trainer.train()
    # 37 rows / 4 = 10 batches; 10 / 3 = 3 whole windows + 1 partial = 4 steps an epoch, x 2
    assert trainer.state.max_steps == budget.total == 8
    assert args.get_warmup_steps(budget.total) == budget.warmup_steps


def _minilm() -> str:
    from loralab.demo import minilm_folder

    return str(minilm_folder())


def test_demo_model_on_this_cpu_fills_everything_and_plan_agrees(tmp_path: Path) -> None:
    from loralab.config import load_experiment
    from loralab.demo import data_folder

    out = tmp_path / "rec.yaml"
    rec = run_recommend(
        _minilm(),
        task="seq-cls",
        num_labels=None,
        rows=None,
        data=str(data_folder() / "train.csv"),
        gpu_mem=None,
        gpus=1,
        seq_len=64,
        bf16=True,
        out_path=str(out),
        as_json=False,
        console=Console(file=open(tmp_path / "out.txt", "w"), width=200),  # noqa: SIM115
        cpu=True,
    )
    cfg = yaml.safe_load(out.read_text(encoding="utf-8"))
    assert cfg["model"]["num_labels"] == 77
    assert cfg["data"]["text_field"] == "text" and cfg["data"]["label_field"] == "category"
    assert Path(cfg["data"]["test_file"]).name == "test.csv"
    ta = cfg["training_args"]
    assert ta["use_cpu"] is True and "bf16" not in ta and cfg["model"]["torch_dtype"] == "float32"
    # CPU: the whole effective batch of 32 in one micro-batch, no accumulation
    assert (ta["per_device_train_batch_size"], ta["gradient_accumulation_steps"]) == (32, 1)
    assert ta["learning_rate"] == 1e-3 and 0 < ta["warmup_steps"] < 1
    assert "warmup_ratio" not in ta and "gradient_checkpointing" not in ta
    text = (tmp_path / "out.txt").read_text()
    assert "ready: `loralab train" in text
    loaded = load_experiment(out)
    assert not loaded.notes  # no legacy name mapped, no default filled silently
    total, _ = _plan_total(out, 1)
    assert total == rec.memory.per_device["total"]
    assert rec.memory.setup.device == "cpu"


def test_lm_steps_count_the_rows_left_after_the_validation_split(tmp_path: Path) -> None:
    rec = run_recommend(
        "gpt2",
        task="causal-lm",
        num_labels=None,
        rows=656,  # the Korean chat pairs in examples/data
        data=None,
        gpu_mem=None,
        gpus=1,
        seq_len=128,
        bf16=True,
        out_path=None,
        as_json=False,
        console=Console(file=open(tmp_path / "out.txt", "w"), width=200),  # noqa: SIM115
        cpu=True,
    )
    # train sets the first 656 // 10 = 65 rows aside; 591 rows / batch 16 = 37 steps x 3 epochs
    assert rec.steps.rows == 656 - 65
    assert rec.steps.total == 3 * 37 == 111
