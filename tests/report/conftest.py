"""Synthetic `loralab train` run directories for the report tests (no model is trained).

30 classes with geometrically falling training counts, ~10 test rows per class, ~80% accuracy with the
rare classes worse, 3 epochs of train/eval log rows; metrics.json is computed by loralab's own
evaluator from those predictions, so its numbers are consistent with predictions.csv.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from loralab.evaluate.classification import classification_metrics, evaluate_classification

N_CLASSES = 30
ROWS_PER_CLASS = 10
WORDS = ["card", "transfer", "refund", "limit", "pin", "fee", "cash", "top up", "account", "rate"]


def make_predictions(rng: np.random.Generator, p_correct: np.ndarray) -> tuple[list[int], list[int]]:
    gold = np.repeat(np.arange(N_CLASSES), ROWS_PER_CLASS)
    correct = rng.random(len(gold)) < p_correct[gold]
    # mistakes go mostly to the "neighbouring" class, so confusion pairs repeat as in real data
    wrong = np.where(
        rng.random(len(gold)) < 0.7, (gold + 1) % N_CLASSES, rng.integers(0, N_CLASSES, len(gold))
    )
    wrong = np.where(wrong == gold, (gold + 2) % N_CLASSES, wrong)
    pred = np.where(correct, gold, wrong)
    return gold.tolist(), pred.tolist()


def write_run(
    run_dir: Path,
    *,
    seed: int = 0,
    accuracy_shift: float = 0.0,
    optional_keys: bool = True,
    ids: list[str] | None = None,
    phase: str = "baseline",
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj"),
) -> Path:
    """Write a finished run directory; `accuracy_shift` raises every class's chance of being right."""
    rng = np.random.default_rng(seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    labels = [f"intent_{i:02d}" for i in range(N_CLASSES)]
    id2label = dict(enumerate(labels))
    train_counts = {i: int(400 * 0.86**i) + 5 for i in range(N_CLASSES)}
    p_correct = np.clip(np.linspace(0.95, 0.6, N_CLASSES) + accuracy_shift, 0, 1)
    gold, pred = make_predictions(rng, p_correct)
    texts = [f"{WORDS[g % len(WORDS)]} question {k}, about {labels[g]}?" for k, g in enumerate(gold)]
    conf = np.clip(rng.normal(0.8, 0.1, len(gold)), 0.05, 0.999)
    row_ids = ids or [f"test.csv:{k + 2}" for k in range(len(gold))]
    if optional_keys:
        metrics: dict[str, Any] = evaluate_classification(
            gold, pred, conf.tolist(), id2label, train_counts, texts=texts, cuts=(5, 15), n_resamples=200
        )
    else:
        metrics = classification_metrics(gold, pred, id2label, train_counts, cuts=(5, 15))
    metrics["split"] = "test"
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    with (run_dir / "predictions.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "text", "gold", "pred", "prob", "topk"])
        for k, (g, p) in enumerate(zip(gold, pred, strict=True)):
            w.writerow(
                [row_ids[k], texts[k], labels[g], labels[p], f"{conf[k]:.6f}", f"{labels[p]}:{conf[k]:.4f}"]
            )
    _write_log(run_dir / "train_log.jsonl", rng)
    record = {
        "phase": phase,
        "model": "Qwen/Qwen3-8B",
        "target_modules": list(target_modules),
        "layers_to_transform": list(range(25, 36)),
        "lora_params": 76038144,
        "training_time_hours": 10.5,
        "peak_memory_gb_per_gpu": 17.2,
        "best_epoch": 3,
        "metrics": {k: metrics[k] for k in ("weighted_f1", "macro_f1", "tail_f1", "accuracy")},
        "per_class_f1": {b["name"]: b["mean_f1"] for b in metrics["buckets"]},
    }
    (run_dir / "record.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    config = {
        "lora": {"enable": True, "config": {"r": 256, "lora_alpha": 512}},
        "experiment": {"phase": phase},
    }
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    l2i = {name: i for i, name in id2label.items()}
    (run_dir / "labels.json").write_text(
        json.dumps({"label2id": l2i, "id2label": id2label}), encoding="utf-8"
    )
    return run_dir


def _write_log(path: Path, rng: np.random.Generator) -> None:
    rows: list[dict[str, Any]] = []
    step = 0
    for epoch in range(1, 4):
        for k in range(1, 6):
            step += 10
            e = epoch - 1 + k / 5
            rows.append({"step": step, "epoch": e, "loss": 3.0 / (1 + 2 * e) + rng.normal(0, 0.02),
                         "learning_rate": 4e-5 * (1 - e / 3.2), "grad_norm": 1.0, "samples_per_s": 90.0,
                         "tokens_per_s": 1400.0, "memory_bytes": 1_300_000_000, "kind": "train"})  # fmt: skip
        f1 = 0.55 + 0.1 * epoch
        rows.append({"step": step, "epoch": float(epoch), "eval_loss": 1.2 / epoch,
                     "eval_accuracy": f1 + 0.02, "eval_weighted_f1": f1, "eval_macro_f1": f1 - 0.02,
                     "eval_tail_f1": f1 - 0.08, "kind": "eval"})  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture
def make_run(tmp_path: Path) -> Callable[..., Path]:
    def _make(name: str, **kwargs: Any) -> Path:
        return write_run(tmp_path / "runs" / name, **kwargs)

    return _make
