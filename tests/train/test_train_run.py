"""`loralab train` end to end on a tiny random BERT: run directory, aligned predictions, metrics equal
to scikit-learn's from the written predictions, safetensors only, resume after kill -9, NaN stop."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from train_fixtures import experiment_yaml, make_data, tiny_bert

from loralab.train.run import train


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    model = tiny_bert(root / "model")
    train_csv, test_csv = make_data(root / "data")
    return {"root": root, "model": model, "train": train_csv, "test": test_csv}


@pytest.fixture(scope="module")
def finished_run(setup: dict[str, Path]) -> Path:
    cfg = experiment_yaml(setup["root"], setup["model"], setup["train"], setup["test"])
    out = setup["root"] / "run-a"
    result = train(cfg, output=out, quiet=True)
    assert result is not None
    return out


def test_run_directory_has_the_fixed_files(finished_run: Path) -> None:
    for name in (
        "config.yaml",
        "status.json",
        "labels.json",
        "class_weights.json",
        "data_report.json",
        "train_log.jsonl",
        "metrics.json",
        "predictions.csv",
        "record.json",
        "environment.json",
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "tokenizer/tokenizer.json",
    ):
        assert (finished_run / name).exists(), name
    assert json.loads((finished_run / "status.json").read_text())["status"] == "completed"
    # safetensors only: no pickled weights anywhere in the run
    assert not list(finished_run.rglob("*.bin")) and not list(finished_run.rglob("*.pt"))
    steps = [json.loads(line) for line in (finished_run / "train_log.jsonl").read_text().splitlines()]
    train_steps = [s for s in steps if s["kind"] == "train"]
    assert train_steps and {"loss", "learning_rate", "grad_norm", "samples_per_s", "tokens_per_s"} <= set(
        train_steps[0]
    )
    record = json.loads((finished_run / "record.json").read_text())
    # r=4; per layer query, key, value, attention.output.dense (32->32), intermediate.dense (32->64),
    # output.dense (64->32); "dense" also matches the pooler (32->32); the classifier is copied whole.
    per_layer = 4 * 4 * (32 + 32) + 4 * (32 + 64) + 4 * (64 + 32)
    assert record["lora_params"] == 2 * per_layer + 4 * (32 + 32) + (32 * 3 + 3)
    assert set(record["metrics"]) >= {"weighted_f1", "macro_f1", "tail_f1", "accuracy", "val_loss"}


def test_predictions_are_aligned_with_their_inputs(finished_run: Path, setup: dict[str, Path]) -> None:
    with setup["test"].open(encoding="utf-8") as f:
        by_line = {i + 2: row for i, row in enumerate(csv.DictReader(f))}  # header is line 1
    with (finished_run / "predictions.csv").open(encoding="utf-8") as f:
        preds = list(csv.DictReader(f))
    assert len(preds) == len(by_line)
    for p in preds:
        src = by_line[int(p["id"].rsplit(":", 1)[1])]
        assert p["text"] == src["text"] and p["gold"] == src["category"]


def test_metrics_equal_sklearn_from_the_predictions_file(finished_run: Path) -> None:
    from sklearn.metrics import accuracy_score, f1_score

    with (finished_run / "predictions.csv").open(encoding="utf-8") as f:
        preds = list(csv.DictReader(f))
    gold = [p["gold"] for p in preds]
    pred = [p["pred"] for p in preds]
    m = json.loads((finished_run / "metrics.json").read_text())
    labels = sorted(set(gold))
    assert m["accuracy"] == pytest.approx(accuracy_score(gold, pred), abs=1e-12)
    weighted = f1_score(gold, pred, labels=labels, average="weighted")
    assert m["weighted_f1"] == pytest.approx(weighted, abs=1e-12)
    assert m["macro_f1"] == pytest.approx(f1_score(gold, pred, labels=labels, average="macro"), abs=1e-12)
    assert m["accuracy"] > 0.75  # chance is 1/3: training really happened


def _run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "loralab", "train", *args, "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def test_resume_after_kill_gives_the_same_final_metrics(finished_run: Path, setup: dict[str, Path]) -> None:
    cfg = setup["root"] / "exp.yaml"
    out = setup["root"] / "run-killed"
    proc = _run_cli(str(cfg), "--output", str(out))
    deadline = time.time() + 120
    while time.time() < deadline:
        done = sorted(out.glob("checkpoint*/checkpoint-*/.complete")) + sorted(
            (out / "checkpoints").glob("checkpoint-*/.complete")
        )
        if len(done) >= 3:  # a few checkpoints in: mid-run
            break
        if proc.poll() is not None:
            pytest.fail(f"run ended before it could be killed: {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert json.loads((out / "status.json").read_text())["status"] == "running"  # died without a word
    resumed = _run_cli(str(cfg), "--output", str(out), "--resume")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    a = json.loads((finished_run / "metrics.json").read_text())
    b = json.loads((out / "metrics.json").read_text())
    for k in ("accuracy", "weighted_f1", "macro_f1"):
        assert b[k] == a[k]
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-6)


def test_nan_loss_stops_the_run_with_step_and_cause(
    setup: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from loralab.train.trainer import LoralabTrainer, NonFiniteLoss

    real = LoralabTrainer.compute_loss

    def poisoned(self: LoralabTrainer, *args: object, **kwargs: object) -> object:
        loss = real(self, *args, **kwargs)  # type: ignore[arg-type]
        # From the 12th optimizer step on the loss is NaN, as after an fp16 overflow.
        return loss * float("nan") if self.state.global_step >= 11 else loss

    monkeypatch.setattr(LoralabTrainer, "compute_loss", poisoned)
    cfg = experiment_yaml(tmp_path, setup["model"], setup["train"], setup["test"], epochs=2)
    out = tmp_path / "run-nan"
    with pytest.raises(NonFiniteLoss) as e:
        train(cfg, output=out, quiet=True)
    assert e.value.step == 12
    assert e.value.last_checkpoint is not None and e.value.last_checkpoint.endswith("checkpoint-10")
    assert "training loss became nan at step 12" in e.value.message()
    assert "Likely cause: learning rate" in e.value.message()  # lr 2e-2 is high for this model
    status = json.loads((out / "status.json").read_text())
    assert status["status"] == "failed" and "NonFiniteLoss" in status["error"]
    assert (out / "train_log.jsonl").read_text()  # what was logged before the failure is kept


def test_without_evaluation_every_training_row_trains(setup: dict[str, Path], tmp_path: Path) -> None:
    cfg = experiment_yaml(tmp_path, setup["model"], setup["train"], setup["test"], epochs=1)
    cfg.write_text(cfg.read_text().replace("eval_strategy: epoch", "eval_strategy: 'no'"))
    result = train(cfg, output=tmp_path / "run", quiet=True)
    assert result is not None
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())
    assert report["train"]["rows"] == 150  # make_data's 150 rows, none held out
    assert "validation" not in report
    # with evaluation on, a stratified 10% is held out for it
    (tmp_path / "b").mkdir()
    cfg2 = experiment_yaml(tmp_path / "b", setup["model"], setup["train"], setup["test"], epochs=1)
    train(cfg2, output=tmp_path / "run-b", quiet=True)
    report_b = json.loads((tmp_path / "run-b" / "data_report.json").read_text())
    assert (report_b["train"]["rows"], report_b["validation"]["rows"]) == (135, 15)
