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


FIX_RERUN = "restore the file, or run `loralab evaluate RUN_DIR` and report on the eval-test folder it writes"
FIX_OPTIONAL = "restore the file, or move it out of the run directory (the report runs without it)"
JSON_NAMES = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number"}


def _json_kind(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    return JSON_NAMES.get(type(value), type(value).__name__)


def _read_text(path: Path, fix: str = FIX_OPTIONAL) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ReportError(f"{path}: not UTF-8 text (byte {e.start}) (fix: {fix})") from e
    except OSError as e:
        raise ReportError(f"{path}: cannot be read ({e.strerror or e}) (fix: check the file)") from e


def _read_json(path: Path, fix: str = FIX_OPTIONAL) -> dict[str, Any]:
    text = _read_text(path, fix)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        what = "empty file" if not text.strip() else f"not valid JSON ({e.msg}, line {e.lineno})"
        raise ReportError(f"{path}: {what} (fix: {fix})") from e
    if not isinstance(data, dict):
        raise ReportError(
            f"{path}: holds {_json_kind(data)}, not the JSON object loralab writes (fix: {fix})"
        )
    return data


def _check_metrics(path: Path, metrics: dict[str, Any]) -> None:
    """The shapes the report reads from metrics.json: a hand-edited or foreign file fails here, naming
    the key, instead of deep inside a plot."""
    shapes = {
        "per_class": dict,
        "buckets": list,
        "ci": dict,
        "never_predicted": list,
        "confusion_pairs": list,
    }
    for key, kind in shapes.items():
        value = metrics.get(key)
        if value is not None and not isinstance(value, kind):
            raise ReportError(
                f"{path}: {key} is {_json_kind(value)}, not {JSON_NAMES[kind]} (fix: {FIX_RERUN})"
            )
    inner = [(f"per_class.{k}", v) for k, v in (metrics.get("per_class") or {}).items()]
    inner += [(f"buckets[{i}]", b) for i, b in enumerate(metrics.get("buckets") or [])]
    inner += [(f"confusion_pairs[{i}]", c) for i, c in enumerate(metrics.get("confusion_pairs") or [])]
    for key, value in inner:
        if not isinstance(value, dict):
            raise ReportError(f"{path}: {key} is {_json_kind(value)}, not an object (fix: {FIX_RERUN})")
        for field_name in ("support", "f1", "train_count", "count", "mean_f1"):
            v = value.get(field_name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
                raise ReportError(f"{path}: {key}.{field_name} is {v!r}, not a number (fix: {FIX_RERUN})")


def _read_log(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if not path.is_file():
        return rows
    for line in _read_text(path).splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a run killed mid-write leaves a partial last line; the rest is still useful
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _read_labels(path: Path) -> list[str]:
    if not path.is_file():
        return []
    data = _read_json(path)
    try:
        id2label = data.get("id2label")
        if isinstance(id2label, dict):
            return [str(id2label[k]) for k in sorted(id2label, key=lambda k: int(k))]
        if isinstance(data.get("label2id"), dict):
            l2i = data["label2id"]
            return sorted(l2i, key=lambda k: int(l2i[k]))
    except (TypeError, ValueError) as e:
        raise ReportError(f"{path}: label ids are not integers ({e}) (fix: {FIX_OPTIONAL})") from e
    return []


def _read_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.yaml"
    if not path.exists():
        # runs written before config.yaml existed kept the experiment file under its own name
        others = sorted(run_dir.glob("*.yaml"))
        if len(others) != 1:
            return {}
        path = others[0]
    try:  # optional (the LoRA rank, best-epoch metric): a damaged one does not stop the report
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _read_predictions(path: Path) -> pd.DataFrame:
    """predictions.csv with id, gold, pred as text: an empty cell is the empty label (a generative
    classifier that produced nothing) and "NA" or "None" are labels, never a float NaN that breaks
    sorting against strings."""
    try:
        preds = pd.read_csv(path, dtype={"id": str, "gold": str, "pred": str}, keep_default_na=False)
    except pd.errors.EmptyDataError as e:
        raise ReportError(f"{path}: empty file, not even a header (fix: {FIX_RERUN})") from e
    except pd.errors.ParserError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ReportError(f"{path}: not a readable CSV ({first}) (fix: {FIX_RERUN})") from e
    except UnicodeDecodeError as e:
        raise ReportError(f"{path}: not UTF-8 text (byte {e.start}) (fix: {FIX_RERUN})") from e
    except OSError as e:
        raise ReportError(f"{path}: cannot be read ({e.strerror or e}) (fix: check the file)") from e
    missing = {"id", "gold", "pred"} - set(preds.columns)
    if missing:
        raise ReportError(
            f"{path}: missing column(s) {sorted(missing)}; found {sorted(map(str, preds.columns))} "
            f"(fix: {FIX_RERUN})"
        )
    if preds.empty:
        raise ReportError(f"{path}: a header but no rows, nothing to report on (fix: {FIX_RERUN})")
    if "text" not in preds.columns:
        preds["text"] = ""
    preds["text"] = preds["text"].astype(str)
    return preds


def load_run(run_dir: Path, name: str | None = None) -> Run:
    """Parse a run directory; raises ReportError naming the missing or damaged file when it cannot."""
    run_dir = Path(run_dir)
    fix = "give a run directory written by `loralab train`"
    if not run_dir.exists():
        raise ReportError(f"{run_dir}: no such run directory (fix: {fix})")
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: is a file, not a run directory (fix: {fix})")
    for required in ("metrics.json", "predictions.csv"):
        if not (run_dir / required).is_file():
            raise ReportError(
                f"{run_dir}: no {required}, so it is not a finished run (fix: {fix}, or run "
                "`loralab evaluate RUN_DIR` and report on the eval-test folder it writes)"
            )
    preds = _read_predictions(run_dir / "predictions.csv")
    metrics = _read_json(run_dir / "metrics.json", FIX_RERUN)
    _check_metrics(run_dir / "metrics.json", metrics)
    record_path = run_dir / "record.json"
    try:  # optional, and only read for hints: a damaged one does not stop the report
        environment = _read_json(run_dir / "environment.json")
    except (OSError, ReportError):
        environment = {}
    return Run(
        path=run_dir,
        name=name or run_dir.resolve().name,
        metrics=metrics,
        predictions=preds,
        log=_read_log(run_dir / "train_log.jsonl"),
        record=_read_json(record_path) if record_path.exists() else {},
        config=_read_config(run_dir),
        labels=_read_labels(run_dir / "labels.json"),
        environment=environment,
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
