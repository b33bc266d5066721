"""`loralab evaluate RUN_DIR`: predict with a run's adapter on a split or a file and score the result."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from peft import PeftModel, get_peft_model_state_dict
from rich.progress import Progress
from transformers import AutoTokenizer

from loralab.arch.hf import max_length_problem
from loralab.arch.resolve import resolve_model
from loralab.config import load_experiment
from loralab.config.models import ExperimentConfig
from loralab.errors import ConfigError, Problem, RunDirError
from loralab.io import quiet_libraries, tensor_names, write_json
from loralab.predict.files import ADAPTER_WEIGHTS, FIX_CONFIG, FIX_RUN, check_run_files
from loralab.train.loading import load_model
from loralab.train.precision import choose_precision
from loralab.train.prefix_cache import reuse_run_cache
from loralab.train.tasks import MAX_GENERATE_EVALUATE, task_for

PREDICT_BATCH = 128


def load_run_model(run_dir: Path, cfg: ExperimentConfig) -> tuple[Any, Any]:
    """The run's base model with its adapter, in eval mode, and the tokenizer it trained with."""
    check_run_files(run_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(run_dir / "tokenizer"))
    except (OSError, ValueError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RunDirError(
            Problem(str(run_dir / "tokenizer"), "", f"cannot be loaded ({first})", FIX_RUN)
        ) from e
    policy = choose_precision(cfg)
    base = load_model(cfg, policy, run_dir=run_dir, tokenizer=tokenizer)
    adapter = run_dir / "adapter"
    try:
        with warnings.catch_warnings():
            # _check_adapter_complete turns this warning into an error that names the file
            warnings.filterwarnings("ignore", message="Found missing adapter keys")
            # check_run_files refused pickles, so PEFT can only read the safetensors file
            model = PeftModel.from_pretrained(base, str(adapter))
    except RuntimeError as e:
        if "size mismatch" not in str(e) and "state_dict" not in str(e):
            raise
        what = f"its tensors do not fit the run's model ({_first_mismatch(e)})"
        raise RunDirError(Problem(str(adapter / ADAPTER_WEIGHTS), "", what, FIX_CONFIG)) from e
    _check_adapter_complete(model, adapter / ADAPTER_WEIGHTS)
    model.eval()
    return model, tokenizer


def _first_mismatch(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln]
    return lines[0] if lines else str(e).strip().splitlines()[0]


def _check_adapter_complete(model: Any, weights: Path) -> None:
    """PEFT only warns when the file lacks tensors the config's targets need, and those keep their
    initial values: lora_B is zero, so the adapter silently does nothing and the scores are the base
    model's. A file from another run or a hand-edited one is an error instead."""
    expected = set(get_peft_model_state_dict(model))
    missing = sorted(expected - tensor_names(weights))
    if missing:
        what = f"lacks {len(missing)} of the {len(expected)} tensors its config needs (e.g. {missing[0]})"
        raise RunDirError(Problem(str(weights), "", what, FIX_CONFIG))


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
    check_run_files(run_dir)
    cfg = load_experiment(run_dir / "config.yaml")
    m = cfg.model
    conf = resolve_model(m.name_or_path, revision=m.revision, trust_remote_code=m.trust_remote_code).config
    # A run directory edited by hand (or an old one) could tokenise past the model's positions.
    problem = max_length_problem(conf, cfg.max_length, file=str(run_dir / "config.yaml"))
    if problem is not None:
        raise ConfigError([problem])
    quiet_libraries()
    task = task_for(cfg)
    task.restore(run_dir)
    path = split_file(cfg, data, split)
    rows = task.read_eval_file(path)  # a file the run cannot score fails before the model loads
    model, tokenizer = load_run_model(run_dir, cfg)
    ex = task.eval_examples(tokenizer, rows)
    name = split if data is None else path.name
    # The run's test split scored again reads the run's prefix cache when it is there (issue 13).
    collator, _ = reuse_run_cache(cfg, model, run_dir, {name: ex}, task.collator(model, tokenizer))
    with Progress(transient=True) as bar:
        t = bar.add_task("predict", total=len(ex))
        scored = task.score(
            model,
            tokenizer,
            ex,
            collator,
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
