"""`loralab recommend`: resolve the model, count the training rows, recommend, print, write the YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from rich.table import Table

from loralab.arch.cache import get_arch_record
from loralab.arch.hf import default_task
from loralab.arch.resolve import resolve_model
from loralab.config.models import TASK_TO_TASK_TYPE
from loralab.data import read_rows
from loralab.errors import ConfigError, Problem
from loralab.io import print_json
from loralab.plan.estimate.activation_models import SUPPORTED
from loralab.plan.estimate.render_memory import print_memory
from loralab.plan.estimate.setup import parse_size
from loralab.plan.recommend import Recommendation, Request, recommend
from loralab.plan.render import print_plan


def run_recommend(
    model: str,
    *,
    task: str | None,
    num_labels: int | None,
    rows: int | None,
    data: str | None,
    gpu_mem: str,
    gpus: int,
    seq_len: int,
    bf16: bool,
    out_path: str | None,
    as_json: bool,
    console: Any,
) -> Recommendation:
    """`loralab recommend`: resolve the model, recommend, print, write the YAML."""
    resolved = resolve_model(model)
    task = task or default_task(resolved.config)
    if task not in TASK_TO_TASK_TYPE:
        choices = ", ".join(TASK_TO_TASK_TYPE)
        raise ConfigError([Problem("--task", "", f"unknown task {task!r}", f"use one of {choices}")])
    if task == "seq-cls" and not num_labels:
        raise ConfigError(
            [
                Problem(
                    "--num-labels",
                    "",
                    "seq-cls needs the number of labels",
                    "pass --num-labels N",
                )
            ]
        )
    rows = _training_rows(rows, data)
    arch = get_arch_record(model, task=task, num_labels=num_labels)
    if arch.model_type not in SUPPORTED:
        raise ConfigError(
            [
                Problem(
                    model,
                    "",
                    f"recommend needs an activation model and model_type '{arch.model_type}' has none",
                    "use a supported family (" + ", ".join(sorted(SUPPORTED)) + ") or plan a config by hand",
                )
            ]
        )
    req = Request(
        model=model,
        task=task,
        num_labels=num_labels,
        rows=rows,
        gpu_mem=parse_size(gpu_mem),
        gpus=gpus,
        seq_len=seq_len,
        bf16=bf16,
    )
    rec = recommend(req, arch, resolved.config)
    if data is not None:
        rec.config["data"]["train_file"] = str(Path(data).resolve())
    if out_path:
        Path(out_path).write_text(
            "# Written by `loralab recommend`; every value's reason is in its output.\n"
            + yaml.safe_dump(rec.config, sort_keys=False, allow_unicode=True),
            encoding="utf-8",
        )
    if as_json:
        obj = {
            "choices": [{"key": c.key, "value": c.value, "reason": c.reason} for c in rec.choices],
            "memory": rec.memory.to_json(),
            "trainable_params": rec.plan.counts.trainable_params,
            "config": rec.config,
        }
        print_json(obj)
    else:
        _print_recommendation(rec, req, console, out_path)
    return rec


def _training_rows(rows: int | None, data: str | None) -> int:
    """--rows, else the usable rows of --data."""
    if rows is not None:
        return rows
    if data is None:
        raise ConfigError(
            [Problem("--rows", "", "the training-set size is unknown", "pass --rows N or --data FILE")]
        )
    return len(read_rows(Path(data)).rows)


def _print_recommendation(rec: Recommendation, req: Request, console: Any, out_path: str | None) -> None:
    t = Table(
        title=f"Recommendation for {req.model} ({req.task}, {req.rows:,} rows, "
        f"{req.gpus} x {req.gpu_mem / 2**30:.0f} GiB)",
        title_justify="left",
    )
    t.add_column("setting")
    t.add_column("value")
    t.add_column("why")
    for c in rec.choices:
        t.add_row(c.key, str(c.value), c.reason)
    console.print(t)
    console.print("[bold]plan of the recommended config:[/]")
    print_plan(rec.plan, console)
    print_memory(rec.memory, console)
    if out_path:
        console.print(
            f"wrote {out_path} (add data.train_file and the text/label fields, then `loralab train`)"
        )
