"""`loralab evaluate`: score a run's adapter on a split or a file, or score predictions made elsewhere.

Both paths end in the same functions `train` uses (evaluate_classification / generation_metrics),
so the numbers of `train`, `evaluate RUN_DIR` and `evaluate --predictions` agree by construction.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from loralab.errors import ConfigError, LoralabError, Problem


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise LoralabError(f"{path.parent} is not a complete run directory: {path.name} is missing")
    return json.loads(path.read_text(encoding="utf-8"))


def _load_run_model(run_dir: Path, cfg: Any) -> tuple[Any, Any]:
    from peft import PeftModel
    from transformers import AutoTokenizer

    from loralab.train.loading import load_model
    from loralab.train.precision import choose_precision

    tokenizer = AutoTokenizer.from_pretrained(str(run_dir / "tokenizer"))
    policy = choose_precision(cfg)
    base = load_model(cfg, policy, run_dir=run_dir, tokenizer=tokenizer)
    # safetensors only: PeftModel reads adapter_model.safetensors (no pickle fallback is written).
    model = PeftModel.from_pretrained(base, str(run_dir / "adapter"))
    model.eval()
    return model, tokenizer


def _split_file(cfg: Any, data: Path | None, split: str) -> Path:
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
    from loralab.config import load_experiment

    cfg = load_experiment(run_dir / "config.yaml")
    if cfg.model.task != "seq-cls":
        from loralab.evaluate.run_eval_lm import evaluate_lm_run

        return evaluate_lm_run(run_dir, cfg, data=data, split=split)
    return _evaluate_classification_run(run_dir, cfg, _split_file(cfg, data, split), data is None and split)


def _evaluate_classification_run(
    run_dir: Path, cfg: Any, path: Path, split: str | bool
) -> tuple[dict[str, Any], Path]:
    from rich.progress import Progress

    from loralab.data import encode_rows, load_label_map, read_rows
    from loralab.evaluate.classification import evaluate_classification
    from loralab.train.batching import PadCollator
    from loralab.train.encode import classification_examples
    from loralab.train.predict import predict_classes, write_predictions_csv
    from loralab.train.run import quiet_libraries, write_json

    quiet_libraries()
    label_map = load_label_map(run_dir / "labels.json")
    counts = _read_json(run_dir / "train_counts.json")
    train_counts = {label_map.label2id[k]: int(v) for k, v in counts.items() if k in label_map.label2id}
    d = cfg.data
    rowset = read_rows(
        path, text_field=d.text_field, text_template=d.text_template, label_field=d.label_field
    )
    enc = encode_rows(rowset.rows, label_map)
    if not enc.rows:
        raise LoralabError(f"{path}: no row has a label the run was trained on ({enc.unseen_summary()})")
    model, tokenizer = _load_run_model(run_dir, cfg)
    texts = [r.text or "" for r in enc.rows]
    ex = classification_examples(
        tokenizer, texts, enc.label_ids, [f"{path.name}:{r.line}" for r in enc.rows], int(d.max_length or 128)
    )
    collator = PadCollator(tokenizer.pad_token_id, padding_side=tokenizer.padding_side)
    with Progress(transient=True) as bar:
        task = bar.add_task("predict", total=len(ex))
        preds = predict_classes(model, ex, collator, batch_size=128, progress=lambda n: bar.advance(task, n))
    metrics = evaluate_classification(
        ex.labels, preds.pred, preds.prob, label_map.id2label, train_counts, texts=texts
    )
    metrics.update(split=split or path.name, loss=preds.loss, file=str(path), unseen_labels=enc.unseen)
    out = run_dir / f"eval-{split if isinstance(split, str) else path.stem}"
    out.mkdir(exist_ok=True)
    write_predictions_csv(out / "predictions.csv", ex, preds, label_map.id2label)
    write_json(out / "metrics.json", metrics)
    return metrics, out


# ---- predictions made elsewhere ---------------------------------------------------------------
def _read_table(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise LoralabError(f"{path}: predictions file not found")
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        rows = []
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise LoralabError(f"{path}:{i}: not JSON ({e.msg})") from e
        return rows
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _columns(rows: list[dict[str, Any]], path: Path, want: tuple[str, str]) -> tuple[list[str], list[str]]:
    have = set(rows[0]) if rows else set()
    missing = [c for c in want if c not in have]
    if missing:
        raise ConfigError(
            [
                Problem(
                    str(path),
                    "",
                    f"missing column(s) {', '.join(missing)}; found: {', '.join(sorted(have)) or 'nothing'}",
                    f"name the columns {want[0]} and {want[1]}",
                )
            ]
        )
    return [str(r[want[0]] or "") for r in rows], [str(r[want[1]] or "") for r in rows]


def score_predictions(path: Path, *, task: str, rouge_tokenizer: str = "auto") -> dict[str, Any]:
    rows = _read_table(path)
    if task == "classification":
        from loralab.evaluate.classification import evaluate_classification

        pred, gold = _columns(rows, path, ("pred", "gold"))
        labels = sorted(set(gold) | set(pred))
        ids = {lab: i for i, lab in enumerate(labels)}
        id2label = dict(enumerate(labels))
        # Without the training set, buckets rank classes by their frequency among the gold labels.
        counts: dict[int, int] = {}
        for g in gold:
            counts[ids[g]] = counts.get(ids[g], 0) + 1
        conf = [float(r["prob"]) for r in rows] if rows and "prob" in rows[0] else None
        m = evaluate_classification([ids[g] for g in gold], [ids[p] for p in pred], conf, id2label, counts)
        m["bucket_basis"] = "gold-label frequency in this file"
        return m
    if task == "generation":
        from loralab.evaluate.generation import generation_metrics
        from loralab.evaluate.guards import check_metrics

        pred, ref = _columns(rows, path, ("prediction", "reference"))
        m = generation_metrics(pred, ref, tokenizer=rouge_tokenizer)
        m["warnings"] = check_metrics(m, task="generation", predictions=pred, references=ref)
        return m
    raise ConfigError([Problem("--task", "", f"unknown task {task!r}", "use classification or generation")])
