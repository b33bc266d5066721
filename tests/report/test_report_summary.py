"""The report summary's peak-memory label (GPU memory or host RAM) and best epoch (from the record, else
from the evaluations in train_log.jsonl); and the best-epoch rule itself on hand-written logs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from loralab.evaluate.training_log import best_epoch, memory_device
from loralab.report import build_report
from loralab.report.build import _summary_table
from loralab.report.load import load_runs
from loralab.train.record import _best_epoch

# Three epochs of a CPU run that evaluated every epoch. By hand: the lowest eval_loss (0.70) is epoch 2;
# the highest eval_weighted_f1 (0.80) is epoch 3; the lowest eval_weighted_f1 (0.60) is epoch 1.
EVALS = [(1.0, 0.90, 0.60), (2.0, 0.70, 0.72), (3.0, 0.75, 0.80)]  # (epoch, eval_loss, eval_weighted_f1)


def _log_rows(
    evals: list[tuple[float, float, float]] = EVALS, steps_per_epoch: int = 10
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for epoch, loss, f1 in evals:
        step = int(epoch * steps_per_epoch)
        rows.append({"step": step, "epoch": epoch, "loss": loss + 0.1, "memory_bytes": 2_152_000_000,
                     "memory_kind": "cpu_peak_rss", "kind": "train"})  # fmt: skip
        rows.append({"step": step, "epoch": epoch, "eval_loss": loss, "eval_weighted_f1": f1,
                     "eval_accuracy": f1 + 0.01, "eval_runtime": 0.5, "kind": "eval"})  # fmt: skip
    rows.append({"step": rows[-1]["step"], "epoch": 3.0, "train_runtime": 12.0, "kind": "summary"})
    return rows


def _cpu_run(
    make_run: Callable[..., Path],
    name: str,
    *,
    record: dict[str, Any] | None = None,
    training_args: dict[str, Any] | None = None,
    log: list[dict[str, Any]] | None = None,
) -> Path:
    """A fixture run rewritten as a CPU run whose record has no best epoch (as loralab wrote them)."""
    run = make_run(name)
    rec = json.loads((run / "record.json").read_text())
    rec.update(peak_memory_gb_per_gpu=2.005, peak_memory_kind="cpu_peak_rss", peak_memory_device="cpu")
    rec["best_epoch"] = None
    rec.update(record or {})
    rec = {k: v for k, v in rec.items() if v is not ...}  # `...` removes a key (an older record)
    (run / "record.json").write_text(json.dumps(rec), encoding="utf-8")
    rows = _log_rows() if log is None else log
    (run / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["training_args"] = {
        "num_train_epochs": 3,
        "eval_strategy": "epoch",
        "use_cpu": True,
        **(training_args or {}),
    }
    (run / "config.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return run


def _summary(runs: list[Path]) -> dict[str, list[str]]:
    table = _summary_table(load_runs(runs), [{} for _ in runs])
    return {row[0]: row[1:] for row in table.rows}


# ---- the report ----------------------------------------------------------------------------------


def test_cpu_run_report_labels_host_ram_and_finds_the_best_epoch_in_the_log(
    make_run: Callable[..., Path], tmp_path: Path
) -> None:
    run = _cpu_run(make_run, "cpu")
    paths = build_report([run], tmp_path / "out", n_resamples=50)
    md = paths.markdown.read_text(encoding="utf-8")
    html = paths.html.read_text(encoding="utf-8")
    assert "| peak memory (GB, host RAM) | 2.005 |" in md
    assert "| best epoch | 2 |" in md  # the lowest eval_loss, 0.70, at epoch 2
    assert "GB/GPU" not in md and "best epoch | n/a" not in md
    assert "peak memory (GB, host RAM)" in html and "GB/GPU" not in html


@pytest.mark.parametrize(
    ("training_args", "expected"),
    [
        ({}, "2"),  # no metric_for_best_model: lowest validation loss
        ({"metric_for_best_model": "weighted_f1"}, "3"),  # higher is better by default
        ({"metric_for_best_model": "eval_weighted_f1", "greater_is_better": False}, "1"),
        ({"metric_for_best_model": "loss", "load_best_model_at_end": True}, "2"),
    ],
)
def test_best_epoch_follows_the_configured_metric(
    make_run: Callable[..., Path], training_args: dict[str, Any], expected: str
) -> None:
    run = _cpu_run(make_run, "cpu", training_args=training_args)
    assert _summary([run])["best epoch"] == [expected]


def test_a_best_epoch_in_the_record_is_shown_as_recorded(make_run: Callable[..., Path]) -> None:
    run = _cpu_run(make_run, "cpu", record={"best_epoch": 1.0})
    assert _summary([run])["best epoch"] == ["1"]


def test_a_run_without_evaluation_says_so(make_run: Callable[..., Path]) -> None:
    train_only = [r for r in _log_rows() if r["kind"] != "eval"]
    run = _cpu_run(make_run, "cpu", log=train_only)
    assert _summary([run])["best epoch"] == ["n/a (no evaluation)"]


def test_gpu_run_is_per_gpu(make_run: Callable[..., Path]) -> None:
    gpu = {
        "peak_memory_gb_per_gpu": 17.2,
        "peak_memory_kind": "cuda_max_allocated",
        "peak_memory_device": "cuda",
    }
    run = _cpu_run(make_run, "gpu", record=gpu)
    assert _summary([run])["peak memory (GB/GPU)"] == ["17.2"]


@pytest.mark.parametrize(
    ("record", "log_kind", "environment", "label"),
    [
        ({"peak_memory_kind": "cpu_peak_rss"}, None, None, "peak memory (GB, host RAM)"),
        ({"peak_memory_kind": "cuda_max_allocated"}, None, None, "peak memory (GB/GPU)"),
        ({"peak_memory_kind": ..., "device": "cuda:0"}, None, None, "peak memory (GB/GPU)"),
        ({"peak_memory_kind": ..., "device": "cpu"}, None, None, "peak memory (GB, host RAM)"),
        ({"peak_memory_kind": ...}, "cpu_peak_rss", None, "peak memory (GB, host RAM)"),
        ({"peak_memory_kind": ...}, None, {"gpus": []}, "peak memory (GB, host RAM)"),
        ({"peak_memory_kind": ...}, None, {"gpus": ["NVIDIA H100"]}, "peak memory (GB)"),
        ({"peak_memory_kind": ...}, None, None, "peak memory (GB)"),
    ],
)
def test_older_records_are_labelled_from_what_the_run_directory_says(
    make_run: Callable[..., Path],
    record: dict[str, Any],
    log_kind: str | None,
    environment: dict[str, Any] | None,
    label: str,
) -> None:
    log = _log_rows()
    for row in log:
        row.pop("memory_kind", None)
        if log_kind and row["kind"] == "train":
            row["memory_kind"] = log_kind
    run = _cpu_run(make_run, "old", record={"peak_memory_device": ..., **record}, log=log)
    if environment is not None:
        (run / "environment.json").write_text(json.dumps(environment), encoding="utf-8")
    summary = _summary([run])
    assert summary[label] == ["2.005"]
    assert [k for k in summary if k.startswith("peak memory")] == [label]


def test_runs_on_different_devices_say_it_in_each_cell(make_run: Callable[..., Path]) -> None:
    cpu = _cpu_run(make_run, "cpu")
    gpu = _cpu_run(make_run, "gpu", record={"peak_memory_gb_per_gpu": 17.2, "peak_memory_device": "cuda"})
    assert _summary([cpu, gpu])["peak memory (GB)"] == ["2.005 (host RAM)", "17.2 (per GPU)"]


# ---- the rule -----------------------------------------------------------------------------------


def test_best_epoch_on_a_hand_written_log() -> None:
    log = _log_rows()
    assert best_epoch(log) == 2.0  # lowest eval_loss
    assert best_epoch(log, "loss") == 2.0
    assert best_epoch(log, "eval_loss", greater_is_better=False) == 2.0
    assert best_epoch(log, "eval_loss", greater_is_better=True) == 1.0  # 0.90 is the largest loss
    assert best_epoch(log, "weighted_f1") == 3.0  # greater is better unless the name ends in "loss"
    assert best_epoch(log, "eval_weighted_f1", greater_is_better=True) == 3.0
    assert best_epoch(log, "weighted_f1", greater_is_better=False) == 1.0
    assert best_epoch(log, "macro_f1") is None  # never logged
    assert best_epoch([r for r in log if r["kind"] != "eval"]) is None
    assert best_epoch([]) is None


def test_best_epoch_ties_keep_the_earlier_epoch_and_skip_non_numbers() -> None:
    log = _log_rows([(1.0, 0.8, 0.7), (2.0, 0.5, 0.7), (3.0, 0.5, 0.6)])
    assert best_epoch(log) == 2.0
    assert best_epoch(log, "weighted_f1") == 1.0
    log[1]["eval_loss"] = float("nan")
    log[3]["eval_loss"] = "nan"  # how a non-finite value can come back from a JSON log
    assert best_epoch(log) == 3.0


def test_best_epoch_reads_the_trainers_log_history_too() -> None:
    # state.log_history rows have no "kind"; evaluations are the rows with eval_* keys
    history = [{k: v for k, v in r.items() if k != "kind"} for r in _log_rows()]
    assert best_epoch(history) == 2.0
    assert best_epoch(history, "weighted_f1") == 3.0


def test_a_resumed_run_supersedes_the_interrupted_evaluations() -> None:
    # killed after evaluating epoch 2 (step 20); resumed from the checkpoint at step 10, which
    # evaluates epoch 2 again with a different result
    first = _log_rows([(1.0, 0.9, 0.6), (2.0, 0.4, 0.9)])[:-1]
    again = _log_rows([(2.0, 0.8, 0.65), (3.0, 0.7, 0.7)])
    again[0] = {**again[0], "step": 12, "epoch": 1.2}  # the first train row after the resume
    assert best_epoch(first + again) == 3.0
    assert best_epoch(first + again, "weighted_f1") == 3.0


def test_the_record_computes_the_best_epoch_without_metric_for_best_model() -> None:
    # the Trainer tracks no best step without metric_for_best_model: best_global_step stays None
    history = [{k: v for k, v in r.items() if k != "kind"} for r in _log_rows()]
    state = SimpleNamespace(log_history=history, best_global_step=None)
    args = SimpleNamespace(metric_for_best_model=None, greater_is_better=None)
    session: Any = SimpleNamespace(trainer=SimpleNamespace(state=state, args=args))
    assert _best_epoch(session) == 2.0
    args.metric_for_best_model, args.greater_is_better = "weighted_f1", True
    assert _best_epoch(session) == 3.0
    assert _best_epoch(SimpleNamespace(trainer=None)) is None  # type: ignore[arg-type]


def test_memory_device_names() -> None:
    assert memory_device("cuda_max_allocated") == "cuda"
    assert memory_device("cpu_peak_rss") == "cpu"
    assert memory_device(None) is None and memory_device("") is None
