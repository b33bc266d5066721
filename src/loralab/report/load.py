"""Read a `loralab train` run directory into one object the report renders.

Only `metrics.json` and `predictions.csv` are required; everything else (record, config, logs, labels)
is optional, and keys added to metrics.json later (`ci`, `confusion_pairs`, `ece`) are recomputed from
the predictions when missing, so reports work for runs written before those keys existed.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from loralab.errors import LoralabError
from loralab.evaluate.training_log import best_epoch


class ReportError(LoralabError):
    """The run directories cannot be reported on as asked (missing files, different test sets)."""


@dataclass
class Run:
    """One run directory: its files parsed, plus a short display name."""

    path: Path
    name: str
    metrics: dict[str, Any]
    predictions: pd.DataFrame
    log: list[dict[str, Any]] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)

    @property
    def per_class(self) -> dict[str, dict[str, Any]]:
        pc: dict[str, dict[str, Any]] = self.metrics.get("per_class") or {}
        return pc

    @property
    def buckets(self) -> list[dict[str, Any]]:
        b: list[dict[str, Any]] = self.metrics.get("buckets") or []
        return b

    def lora_rank(self) -> Any:
        """`r` from the resolved config (`lora.config.r`), else None."""
        lora = self.config.get("lora") or {}
        cfg = lora.get("config") if isinstance(lora, dict) else None
        return (cfg or {}).get("r") if isinstance(cfg, dict) else None

    def memory_device(self) -> str | None:
        """Where `peak_memory_gb_per_gpu` was measured: "cuda" (max allocated per GPU) or "cpu" (the
        process's peak RSS, host RAM); None when the run directory does not say. Records since
        `peak_memory_device` say it; older ones are read from `peak_memory_kind`, a `device` field,
        the step log's `memory_kind`, or environment.json listing no GPU (then only RSS is measured)."""
        rec = self.record
        if rec.get("peak_memory_device") in ("cuda", "cpu"):
            return str(rec["peak_memory_device"])
        hints = [_text(rec.get("peak_memory_kind"))]
        hints += [_text(rec.get(key)).lower() for key in ("device", "hardware")]
        hints += [_text(row.get("memory_kind")) for row in reversed(self.log)]
        for hint in hints:
            if hint.startswith(("cuda", "gpu")):
                return "cuda"
            if hint.startswith("cpu"):
                return "cpu"
        if self.environment.get("gpus") == []:
            return "cpu"  # torch saw no CUDA device, so the peak was the process's RSS
        return None

    def best_epoch(self) -> float | None:
        """The record's `best_epoch`; when it has none (records before loralab computed it without
        `metric_for_best_model`), the epoch of the best evaluation in train_log.jsonl, by the
        configured `metric_for_best_model`/`greater_is_better`, else the lowest validation loss."""
        stored = self.record.get("best_epoch")
        if isinstance(stored, int | float) and not isinstance(stored, bool):
            return float(stored)
        ta = self.config.get("training_args")
        ta = ta if isinstance(ta, dict) else {}
        metric = ta.get("metric_for_best_model")
        greater = ta.get("greater_is_better")
        return best_epoch(
            self.log,
            str(metric) if metric else None,
            bool(greater) if isinstance(greater, bool) else None,
        )

    def evaluated(self) -> bool:
        """Whether train_log.jsonl holds any evaluation row."""
        return any(r.get("kind") == "eval" for r in self.log)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ReportError(f"{path}: not valid JSON ({e})") from e


def _read_log(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if not path.exists():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a run killed mid-write leaves a partial last line; the rest is still useful
    return rows


def _read_labels(path: Path) -> list[str]:
    if not path.exists():
        return []
    data = _read_json(path)
    id2label = data.get("id2label") if isinstance(data, dict) else None
    if isinstance(id2label, dict):
        return [str(id2label[k]) for k in sorted(id2label, key=lambda k: int(k))]
    if isinstance(data, dict) and isinstance(data.get("label2id"), dict):
        l2i = data["label2id"]
        return sorted(l2i, key=lambda k: int(l2i[k]))
    return []


def _read_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.yaml"
    if not path.exists():
        # runs written before config.yaml existed kept the experiment file under its own name
        others = sorted(run_dir.glob("*.yaml"))
        if len(others) != 1:
            return {}
        path = others[0]
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def load_run(run_dir: Path, name: str | None = None) -> Run:
    """Parse a run directory; raises ReportError naming the missing file when it cannot."""
    run_dir = Path(run_dir)
    for required in ("metrics.json", "predictions.csv"):
        if not (run_dir / required).exists():
            raise ReportError(f"{run_dir}: no {required} (is this a finished `loralab train` run directory?)")
    preds = pd.read_csv(run_dir / "predictions.csv", dtype={"id": str, "gold": str, "pred": str})
    missing = {"id", "gold", "pred"} - set(preds.columns)
    if missing:
        raise ReportError(f"{run_dir / 'predictions.csv'}: missing column(s) {sorted(missing)}")
    if "text" not in preds.columns:
        preds["text"] = ""
    preds["text"] = preds["text"].fillna("").astype(str)
    record_path = run_dir / "record.json"
    try:  # optional, and only read for hints: a damaged one does not stop the report
        environment = _read_json(run_dir / "environment.json")
    except (OSError, ReportError):
        environment = {}
    return Run(
        path=run_dir,
        name=name or run_dir.resolve().name,
        metrics=_read_json(run_dir / "metrics.json"),
        predictions=preds,
        log=_read_log(run_dir / "train_log.jsonl"),
        record=_read_json(record_path) if record_path.exists() else {},
        config=_read_config(run_dir),
        labels=_read_labels(run_dir / "labels.json"),
        environment=environment if isinstance(environment, dict) else {},
    )


def load_runs(run_dirs: list[Path]) -> list[Run]:
    """Load several runs, making display names unique (two `runs/x` from different parents)."""
    runs = [load_run(Path(d)) for d in run_dirs]
    seen: Counter[str] = Counter()
    for i, run in enumerate(runs):
        seen[run.name] += 1
        if seen[run.name] > 1:
            runs[i].name = f"{run.name} ({seen[run.name]})"
    return runs


def confusion_pairs(run: Run, top: int = 10, examples: int = 3) -> list[dict[str, Any]]:
    """Most frequent (gold, pred) mistakes with example texts: metrics.json's when present."""
    stored = run.metrics.get("confusion_pairs")
    if isinstance(stored, list) and stored:
        return stored[:top]
    p = run.predictions
    wrong = p[p["gold"] != p["pred"]]
    counts = Counter(zip(wrong["gold"], wrong["pred"], strict=True))
    out = []
    for (g, q), n in counts.most_common(top):
        texts = wrong[(wrong["gold"] == g) & (wrong["pred"] == q)]["text"].head(examples).tolist()
        out.append({"gold": g, "pred": q, "count": int(n), "examples": texts})
    return out


def most_confused_matrix(run: Run, k: int = 15) -> tuple[list[str], np.ndarray]:
    """Confusion counts restricted to the k classes with the most off-diagonal mass (errors as gold
    plus errors as prediction), so a 260-class matrix shrinks to the part worth looking at."""
    p = run.predictions
    wrong = p[p["gold"] != p["pred"]]
    mass: Counter[str] = Counter(wrong["gold"]) + Counter(wrong["pred"])
    classes = [c for c, _ in sorted(mass.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]
    index = {c: i for i, c in enumerate(classes)}
    m = np.zeros((len(classes), len(classes)), dtype=int)
    for g, q in zip(p["gold"], p["pred"], strict=True):
        if g in index and q in index:
            m[index[g], index[q]] += 1
    return classes, m


def low_f1_classes(run: Run, threshold: float) -> list[tuple[str, dict[str, Any]]]:
    """Classes with test support whose F1 is below the threshold, worst first."""
    rows = [
        (k, v) for k, v in run.per_class.items() if v.get("support", 0) > 0 and v.get("f1", 0) < threshold
    ]
    return sorted(rows, key=lambda kv: (kv[1].get("f1", 0.0), kv[0]))


def epoch_curves(run: Run) -> dict[str, list[tuple[float, float]]]:
    """(epoch, value) series from train_log.jsonl: train loss, eval loss, eval F1s/accuracy."""
    series: dict[str, list[tuple[float, float]]] = {}
    for row in run.log:
        epoch = row.get("epoch")
        if not isinstance(epoch, int | float):
            continue
        kind = row.get("kind")
        keys = ["loss"] if kind == "train" else []
        if kind == "eval":
            keys = ["eval_loss", "eval_accuracy", "eval_weighted_f1", "eval_macro_f1", "eval_tail_f1"]
        for key in keys:
            v = row.get(key)
            if isinstance(v, int | float) and np.isfinite(v):
                series.setdefault(key, []).append((float(epoch), float(v)))
    return series
