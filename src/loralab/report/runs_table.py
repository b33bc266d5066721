"""Runs side by side (`loralab compare`): the resolved config keys that differ, cost (trainable
parameters, adapter bytes, training time, peak memory with its device), metrics with their 95% CIs,
per-bucket F1, and each run's paired-bootstrap difference against a reference run on one metric.

Two runs are only like for like when they saw the same data with the same effective batch
(micro-batch x gradient accumulation x processes): the loss scale, the number of optimizer steps and
the learning-rate schedule all change with it. The table says so in a warning instead of silently
ranking such runs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from loralab.io import flatten
from loralab.report.compare import (
    METRIC_NAMES,
    METRICS,
    Difference,
    bucket_intervals,
    paired_bootstrap,
    run_intervals,
)
from loralab.report.document import fmt_ci, fmt_plain
from loralab.report.load import ReportError, Run

# The metrics a paired bootstrap can recompute from predictions.csv (classification).
COMPARE_METRICS = (*METRICS, "micro_f1", "tail_f1")
GENERATION_METRICS = ("rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "chrf", "perplexity")
SHOWN_METRICS = ("accuracy", "weighted_f1", "macro_f1", "micro_f1", "tail_f1", *GENERATION_METRICS)
ADAPTER_FILE = Path("adapter") / "adapter_model.safetensors"
# transformers' TrainingArguments defaults, for a config that leaves them out
DEFAULT_MICRO_BATCH = 8
DEFAULT_ACCUMULATION = 1
# `tracking` says where metrics go and `experiment.name` what the run is called (a study names each
# run differently): neither changes what is trained.
IGNORED_PREFIXES = ("tracking.",)
IGNORED_KEYS = ("experiment.name",)
PROCESS_KEYS = ("processes", "num_processes", "world_size", "n_processes", "nproc_per_node")
_ABSENT = "(not set)"


def differing_keys(configs: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Dotted key -> each run's value, for the keys whose values are not all equal (a key missing in
    one run counts as different). A run without a config (an empty dict) takes no part: its values
    are None, and it makes no key differ."""
    flats = [flatten(c) if c else None for c in configs]
    known = [f for f in flats if f is not None]
    keys = sorted(set().union(*(f.keys() for f in known))) if known else []
    out: dict[str, list[Any]] = {}
    for k in keys:
        if k.startswith(IGNORED_PREFIXES) or k in IGNORED_KEYS:
            continue
        values = [f.get(k, _ABSENT) for f in known]
        # compare as JSON so 1 and 1.0, or a tuple and a list, are not a difference
        if len({json.dumps(v, sort_keys=True, default=str) for v in values}) > 1:
            out[k] = [None if f is None else f.get(k, _ABSENT) for f in flats]
    return out


def is_classification(run: Run) -> bool:
    """Scored by the classification evaluator (per-class F1), so predictions.csv holds labels that a
    paired bootstrap can rescore; generation runs hold free text."""
    return bool(run.per_class) or "weighted_f1" in run.metrics


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def processes(run: Run) -> int:
    """Data-parallel processes of the run: from record.json or environment.json when they say, else 1."""
    for source in (run.record, run.environment):
        for key in PROCESS_KEYS:
            n = _int(source.get(key))
            if n and n > 0:
                return n
    return 1


def effective_batch(run: Run) -> dict[str, int]:
    """{"micro", "accumulation", "processes", "effective"} from the run's resolved config."""
    ta = run.config.get("training_args")
    ta = ta if isinstance(ta, dict) else {}
    micro = _int(ta.get("per_device_train_batch_size")) or DEFAULT_MICRO_BATCH
    accumulation = _int(ta.get("gradient_accumulation_steps")) or DEFAULT_ACCUMULATION
    procs = processes(run)
    return {"micro": micro, "accumulation": accumulation, "processes": procs,
            "effective": micro * accumulation * procs}  # fmt: skip


def data_identity(run: Run) -> dict[str, str]:
    """Data key -> what identifies its content: data_files.json's sha256 when the run recorded it,
    else the path from the config."""
    out: dict[str, str] = {}
    path = run.path / "data_files.json"
    try:
        recorded = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        recorded = {}
    for key, fp in (recorded if isinstance(recorded, dict) else {}).items():
        if isinstance(fp, dict) and fp.get("sha256"):
            out[key] = f"sha256:{fp['sha256']}"
    data = run.config.get("data")
    for key, value in (data if isinstance(data, dict) else {}).items():
        if key.endswith("_file") and value and f"data.{key}" not in out:
            out[f"data.{key}"] = f"path:{value}"
    return out


def adapter_bytes(run: Run) -> int | None:
    p = run.path / ADAPTER_FILE
    return p.stat().st_size if p.is_file() else None


def train_seconds(run: Run) -> float | None:
    """record.json's training time (hours, 4 decimals) in seconds; else the Trainer's train_runtime."""
    hours = run.record.get("training_time_hours")
    if isinstance(hours, int | float) and not isinstance(hours, bool):
        return float(hours) * 3600
    return trainer_runtime(run)


def trainer_runtime(run: Run) -> float | None:
    for row in reversed(run.log):
        v = row.get("train_runtime")
        if isinstance(v, int | float) and not isinstance(v, bool):
            return float(v)
    return None


@dataclass
class RunColumn:
    name: str
    path: str
    trainable_params: int | None
    adapter_bytes: int | None
    train_seconds: float | None
    trainer_runtime_s: float | None
    peak_memory_gb: float | None
    peak_memory_device: str | None
    batch: dict[str, int]
    data: dict[str, str]
    metrics: dict[str, dict[str, Any]]  # name -> {"value", "ci"}
    buckets: list[dict[str, Any]]  # {"name", "mean_f1", "ci"}


@dataclass
class RunsTable:
    metric: str
    reference: str
    runs: list[RunColumn]
    differing: dict[str, list[Any]]
    differences: list[Difference] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "reference": self.reference,
            "runs": [asdict(r) for r in self.runs],
            "differing_keys": self.differing,
            "differences": [
                {**asdict(d), "significant": d.significant, "sentence": d.sentence()}
                for d in self.differences
            ],
            "warnings": self.warnings,
            "notes": self.notes,
        }


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _column(run: Run, n_resamples: int, seed: int) -> RunColumn:
    stored = run.metrics.get("ci") or {}
    cis = run_intervals(run, n_resamples, seed) if is_classification(run) else stored
    metrics = {
        m: {"value": _number(run.metrics.get(m)), "ci": cis.get(m)}
        for m in SHOWN_METRICS
        if _number(run.metrics.get(m)) is not None
    }
    bucket_cis = bucket_intervals(run, n_resamples, seed) if run.buckets else []
    buckets = [
        {"name": str(b.get("name", "")), "mean_f1": _number(b.get("mean_f1")), "ci": ci}
        for b, ci in zip(run.buckets, bucket_cis, strict=True)
    ]
    return RunColumn(
        name=run.name,
        path=str(run.path),
        trainable_params=_int(run.record.get("lora_params")),
        adapter_bytes=adapter_bytes(run),
        train_seconds=train_seconds(run),
        trainer_runtime_s=trainer_runtime(run),
        peak_memory_gb=_number(run.record.get("peak_memory_gb_per_gpu")),
        peak_memory_device=run.memory_device(),
        batch=effective_batch(run),
        data=data_identity(run),
        metrics=metrics,
        buckets=buckets,
    )


def _warnings(cols: list[RunColumn]) -> list[str]:
    out = []
    if len({c.batch["effective"] for c in cols}) > 1:
        parts = [
            f"{c.name} {c.batch['effective']} ({c.batch['micro']} x {c.batch['accumulation']} x "
            f"{c.batch['processes']})"
            for c in cols
        ]
        out.append(
            "the runs differ in effective batch (micro-batch x accumulation x processes): "
            + ", ".join(parts)
            + "; their losses, step counts and schedules are not like for like"
        )
    keys = sorted(set().union(*(c.data.keys() for c in cols)))
    differ = [k for k in keys if len({c.data.get(k, _ABSENT) for c in cols}) > 1]
    if differ:
        out.append(
            f"the runs differ in data ({', '.join(differ)}: different files or contents per "
            "data_files.json); their metrics are not like for like"
        )
    return out


def build_runs_table(
    runs: list[Run],
    *,
    metric: str = "weighted_f1",
    reference: str | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> RunsTable:
    """Compare runs against `reference` (a run name; default the first run). Raises ReportError for an
    unknown metric or reference, or when two runs were scored on different test rows."""
    if not runs:
        raise ReportError("no runs to compare (fix: give run directories or a study directory)")
    if metric not in (*COMPARE_METRICS, *GENERATION_METRICS):
        raise ReportError(
            f"--metric {metric}: not a metric loralab compares "
            f"(fix: one of {', '.join((*COMPARE_METRICS, *GENERATION_METRICS))})"
        )
    names = [r.name for r in runs]
    ref_name = reference if reference is not None else names[0]
    if ref_name not in names:
        raise ReportError(f"--reference {ref_name}: no such run (fix: one of {', '.join(names)})")
    ref = runs[names.index(ref_name)]
    table = RunsTable(
        metric=metric,
        reference=ref_name,
        runs=[_column(r, n_resamples, seed) for r in runs],
        differing=differing_keys([r.config for r in runs]),
    )
    _compare_to(table, ref, runs, n_resamples, seed)
    table.warnings = _warnings(table.runs)
    missing = [r.name for r in runs if not r.config]
    if missing:
        table.notes.append(
            f"no readable config.yaml in {', '.join(missing)}: its config keys are not compared"
        )
    return table


def _compare_to(table: RunsTable, ref: Run, runs: list[Run], n_resamples: int, seed: int) -> None:
    """Paired-bootstrap differences for classification metrics; a generation metric (ROUGE, BLEU,
    chrF) is per-corpus and has no per-row rescoring here, so it is compared by value only."""
    metric = table.metric
    if metric in GENERATION_METRICS:
        table.notes.append(f"{metric} is compared by value, without a paired-bootstrap interval")
        return
    for run in runs:
        if run is ref:
            continue
        if not (is_classification(ref) and is_classification(run)):
            table.notes.append(f"{run.name}: not compared on {metric} (not a classification run)")
            continue
        diffs = paired_bootstrap(ref, run, (metric,), n_resamples, seed)
        if not diffs:
            table.notes.append(f"{run.name}: no {metric} to compare (no tail bucket in {ref.name})")
        table.differences += diffs


def _size(n: int | None) -> str:
    if n is None:
        return "n/a"
    return f"{n / 1024**2:.2f} MiB ({n:,} B)" if n >= 1024**2 else f"{n / 1024:.1f} KiB ({n:,} B)"


def _seconds(s: float | None) -> str:
    if s is None:
        return "n/a"
    return f"{s:.1f} s" if s < 600 else f"{s / 3600:.2f} h"


def _memory(c: RunColumn) -> str:
    if c.peak_memory_gb is None:
        return "n/a"
    where = {"cuda": "per GPU", "cpu": "host RAM"}.get(c.peak_memory_device or "", "device unknown")
    return f"{c.peak_memory_gb:.3g} GB ({where})"


def _value(v: Any) -> str:
    if v is None:
        return "(no config)"
    return "(not set)" if v == _ABSENT else fmt_plain(v)


def print_runs_table(table: RunsTable, out: Console) -> None:
    cols = table.runs
    t = Table(title=f"{len(cols)} runs side by side (reference: {table.reference})")
    t.add_column("")
    for c in cols:
        t.add_column(c.name + (" (ref)" if c.name == table.reference else ""))
    for key, values in table.differing.items():
        t.add_row(key, *(_value(v) for v in values))
    if table.differing:
        t.add_section()
    t.add_row("trainable params", *(fmt_plain(c.trainable_params) for c in cols))
    t.add_row("adapter size", *(_size(c.adapter_bytes) for c in cols))
    t.add_row("train time", *(_seconds(c.train_seconds) for c in cols))
    t.add_row("peak memory", *(_memory(c) for c in cols))
    t.add_row("effective batch", *(f"{c.batch['effective']}" for c in cols))
    t.add_section()
    for m in SHOWN_METRICS:
        if any(m in c.metrics for c in cols):
            cells = [fmt_ci(c.metrics.get(m, {}).get("value"), c.metrics.get(m, {}).get("ci")) for c in cols]
            t.add_row(METRIC_NAMES.get(m, m), *cells)
    names = list(dict.fromkeys(b["name"] for c in cols for b in c.buckets))
    if names:
        t.add_section()
    for name in names:
        cells = []
        for c in cols:
            b = next((b for b in c.buckets if b["name"] == name), None)
            cells.append(fmt_ci(b["mean_f1"], b["ci"]) if b else "n/a")
        t.add_row(f"F1 {name}", *cells)
    if table.differences:
        t.add_section()
        cells = []
        for c in cols:
            d = next((d for d in table.differences if d.run_b == c.name), None)
            if d is None:
                cells.append("reference" if c.name == table.reference else "n/a")
                continue
            mark = "significant" if d.significant else "not significant"
            cells.append(
                f"{d.diff * 100:+.2f} pts (95% CI {d.low * 100:+.2f} to {d.high * 100:+.2f}), {mark}"
            )
        t.add_row(f"{METRIC_NAMES.get(table.metric, table.metric)} vs ref", *cells)
    out.print(t)
    for d in table.differences:
        out.print(f"  {d.sentence()}", markup=False, highlight=False)
    for w in table.warnings:
        out.print("[yellow]warning:[/] " + escape(w), highlight=False)
    for n in table.notes:
        out.print(f"note: {n}", markup=False, highlight=False)
