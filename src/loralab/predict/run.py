"""`loralab evaluate RUN_DIR`: predict with a run's adapter on a split or a file and score the result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peft import PeftModel
from rich.progress import Progress
from transformers import AutoTokenizer

from loralab.config import load_experiment
from loralab.config.models import ExperimentConfig
from loralab.errors import ConfigError, Problem
from loralab.io import quiet_libraries, write_json
from loralab.train.loading import load_model
from loralab.train.precision import choose_precision
from loralab.train.tasks import MAX_GENERATE_EVALUATE, task_for

PREDICT_BATCH = 128


def load_run_model(run_dir: Path, cfg: ExperimentConfig) -> tuple[Any, Any]:
    """The run's base model with its adapter, in eval mode, and the tokenizer it trained with."""
    tokenizer = AutoTokenizer.from_pretrained(str(run_dir / "tokenizer"))
    policy = choose_precision(cfg)
    base = load_model(cfg, policy, run_dir=run_dir, tokenizer=tokenizer)
    # safetensors only: PeftModel reads adapter_model.safetensors (no pickle fallback is written).
    model = PeftModel.from_pretrained(base, str(run_dir / "adapter"))
    model.eval()
    return model, tokenizer


def split_file(cfg: ExperimentConfig, data: Path | None, split: str) -> Path:
    """The file to score: --data, else the run's file of that split."""
    if data is not None:
        return data
    key = {"test": "test_file", "validation": "validation_file", "train": "train_file"}.get(split)
    if key is None:
        raise ConfigError(
            [Problem("--split", "", f"unknown split {split!r}", "use test, validation or train")]
        )
    path = getattr(cfg.data, key)
    if not path:
        raise ConfigError(
            [Problem(str(cfg.source), f"data.{key}", f"the run has no {split} file", "pass --data FILE")]
        )
    return Path(cfg.resolve_path(path))


def evaluate_run(
    run_dir: Path, *, data: Path | None = None, split: str = "test"
) -> tuple[dict[str, Any], Path]:
    """Predict with the run's adapter and write predictions.csv + metrics.json under run_dir/eval-<name>/."""
    cfg = load_experiment(run_dir / "config.yaml")
    quiet_libraries()
    task = task_for(cfg)
    task.restore(run_dir)
    path = split_file(cfg, data, split)
    rows = task.read_eval_file(path)  # a file the run cannot score fails before the model loads
    model, tokenizer = load_run_model(run_dir, cfg)
    ex = task.eval_examples(tokenizer, rows)
    name = split if data is None else path.name
    with Progress(transient=True) as bar:
        t = bar.add_task("predict", total=len(ex))
        scored = task.score(
            model,
            tokenizer,
            ex,
            task.collator(model, tokenizer),
            split=name,
            batch_size=PREDICT_BATCH,
            max_generate=MAX_GENERATE_EVALUATE,
            progress=lambda n: bar.advance(t, n),
        )
    metrics = scored.metrics | rows.extra
    out = run_dir / f"eval-{split if data is None else path.stem}"
    out.mkdir(exist_ok=True)
    scored.write_predictions(out / "predictions.csv")
    write_json(out / "metrics.json", metrics)
    return metrics, out
