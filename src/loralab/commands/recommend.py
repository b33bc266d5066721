"""`loralab recommend`: resolve the model, read the training file, pick the target (GPUs or this host's
CPU), recommend, optionally validate by a short study, print, write the YAML."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rich.table import Table

from loralab.arch.cache import get_arch_record
from loralab.arch.hf import default_task
from loralab.arch.resolve import resolve_model
from loralab.commands.launch import LaunchFiles, launch_json, print_launch, write_launch
from loralab.config import load_experiment
from loralab.config.models import TASK_TO_TASK_TYPE
from loralab.data.fields import DataFields, data_fields
from loralab.errors import ConfigError, Problem
from loralab.io import print_json
from loralab.plan.estimate.activation_models import SUPPORTED
from loralab.plan.estimate.render_memory import print_memory
from loralab.plan.estimate.setup import parse_size
from loralab.plan.recommend import Choice, Recommendation, Request, recommend
from loralab.plan.render import print_plan

# The share of the host's RAM a CPU run may plan for: the OS, the data loader and the Python process
# itself (tokenizers, datasets) need the rest.
HOST_RAM_SHARE = 0.8
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h)?\s*$", re.IGNORECASE)


@dataclass
class Target:
    device: str  # "cuda" or "cpu"
    memory: int  # bytes per device
    how: str  # where the figure came from, for the output


@dataclass
class DataOptions:
    """`--data FILE` and the flags that settle its columns."""

    path: str | None = None
    text_field: str | None = None
    label_field: str | None = None
    prompt_field: str | None = None
    response_field: str | None = None


def parse_duration(text: str, flag: str = "--budget") -> float:
    """'15m', '90s', '1h', '600' (seconds) -> seconds."""
    m = _DURATION.match(str(text))
    if not m or float(m.group(1)) <= 0:
        raise ConfigError(
            [Problem(flag, "", f"cannot read {text!r} as a duration", "write e.g. 15m, 90s or 1h")]
        )
    unit = (m.group(2) or "s").lower()
    return float(m.group(1)) * {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}[unit]


def host_memory() -> int:
    """Physical RAM of this host in bytes."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


def gpu_memory() -> int | None:
    """The first NVIDIA GPU's memory in bytes (nvidia-smi: no torch import in the CLI process), or None."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout.split()
        return int(float(out[0])) * 2**20 if out else None
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def pick_target(gpu_mem: str | None, cpu: bool) -> Target:
    """--gpu-mem; else this host's GPU; else (or with --cpu) this host's CPU and RAM."""
    if gpu_mem is not None and not cpu:
        return Target("cuda", parse_size(gpu_mem), "--gpu-mem")
    found = None if cpu else gpu_memory()
    if found:
        return Target("cuda", found, "this host's GPU (nvidia-smi)")
    ram = host_memory()
    if ram <= 0:
        raise ConfigError([Problem("--gpu-mem", "", "cannot read this host's memory", "pass --gpu-mem SIZE")])
    return Target(
        "cpu", int(ram * HOST_RAM_SHARE), f"{HOST_RAM_SHARE:.0%} of this host's {ram / 2**30:.1f} GiB RAM"
    )


def run_recommend(
    model: str,
    *,
    task: str | None,
    num_labels: int | None,
    rows: int | None,
    data: str | DataOptions | None,
    gpu_mem: str | None,
    gpus: int,
    seq_len: int,
    bf16: bool,
    out_path: str | None,
    as_json: bool,
    console: Any,
    cpu: bool = False,
    epochs: int | None = None,
    validate: Callable[[Recommendation], None] | None = None,
    launch: LaunchRequest | None = None,
) -> Recommendation:
    """`loralab recommend`: resolve the model, recommend, validate (when asked), print, write the YAML."""
    if validate is not None and not (data.path if isinstance(data, DataOptions) else data):
        raise ConfigError([Problem("--validate", "", "needs the training data", "pass --data FILE")])
    resolved = resolve_model(model)
    task = task or default_task(resolved.config)
    if task not in TASK_TO_TASK_TYPE:
        choices = ", ".join(TASK_TO_TASK_TYPE)
        raise ConfigError([Problem("--task", "", f"unknown task {task!r}", f"use one of {choices}")])
    opts = DataOptions(path=data) if isinstance(data, str) else data or DataOptions()
    found = _read_data(opts, task) if opts.path else None
    num_labels = _num_labels(task, num_labels, found)
    rows = _training_rows(rows, found)
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
    target = pick_target(gpu_mem, cpu)
    req = Request(
        model=model,
        task=task,
        num_labels=num_labels,
        rows=rows,
        gpu_mem=target.memory,
        gpus=gpus if target.device == "cuda" else 1,
        seq_len=seq_len,
        bf16=bf16,
        device=target.device,
        epochs=epochs,
    )
    rec = recommend(req, arch, resolved.config)
    rec.notes.append(f"target: {target.device}, {target.memory / 2**30:.1f} GiB from {target.how}")
    left = _fill_data(rec, found, task)
    if validate is not None:
        validate(rec)
    if out_path:
        _write_config(rec, Path(out_path))
    files = _write_launch(rec, out_path, launch, gpus=req.gpus) if launch is not None else None
    if as_json:
        print_json(
            {
                "choices": [{"key": c.key, "value": c.value, "reason": c.reason} for c in rec.choices],
                "memory": rec.memory.to_json(),
                "trainable_params": rec.plan.counts.trainable_params,
                "steps": rec.steps.__dict__,
                "learning_rate_range": [rec.learning_rate.low, rec.learning_rate.high],
                "warnings": rec.warnings,
                "notes": rec.notes,
                "left_to_fill": left,
                "validation": rec.validation_table or None,
                "config": rec.config,
            }
            | ({"launch": launch_json(files)} if files is not None else {})
        )
    else:
        _print_recommendation(rec, req, console, out_path, left, target)
        if files is not None:
            print_launch(files, console)
    return rec


@dataclass
class LaunchRequest:
    """`recommend --write-launch DIR [--nodes N] [--layout L]`: the launch files of the recommendation."""

    folder: Path
    nodes: int = 1
    layout: str | None = None


def _write_config(rec: Recommendation, path: Path) -> None:
    path.write_text(
        "# Written by `loralab recommend`; every value's reason is in its output.\n"
        + "".join(f"# {line}\n" for line in rec.validation_table)
        + yaml.safe_dump(rec.config, sort_keys=False, allow_unicode=True),
        encoding="utf-8",
    )


def _write_launch(
    rec: Recommendation, out_path: str | None, launch: LaunchRequest, *, gpus: int
) -> LaunchFiles:
    """The recommended config, read back as `loralab train` will read it, then plan's launch files for
    it (with the memory recomputed for the layout)."""
    source = Path(out_path) if out_path else launch.folder / "recommended.yaml"
    if not out_path:
        launch.folder.mkdir(parents=True, exist_ok=True)
        _write_config(rec, source)
    cfg = load_experiment(source)
    return write_launch(
        cfg, rec.plan, rec.memory, launch.folder, gpus=gpus, nodes=launch.nodes, layout=launch.layout
    )


def _read_data(opts: DataOptions, task: str) -> DataFields:
    assert opts.path is not None
    return data_fields(
        opts.path,
        task,
        text_field=opts.text_field,
        label_field=opts.label_field,
        prompt_field=opts.prompt_field,
        response_field=opts.response_field,
    )


def _num_labels(task: str, given: int | None, found: DataFields | None) -> int | None:
    if task != "seq-cls":
        return given
    counted = found.num_labels if found is not None else None
    if given and counted and given != counted:
        raise ConfigError(
            [
                Problem(
                    "--num-labels",
                    "",
                    f"is {given} but {found.file if found else ''} has {counted} labels",
                    f"pass --num-labels {counted} or leave it out",
                )
            ]
        )
    if not (given or counted):
        raise ConfigError(
            [
                Problem(
                    "--num-labels",
                    "",
                    "seq-cls needs the number of labels",
                    "pass --num-labels N or --data FILE",
                )
            ]
        )
    return given or counted


def _training_rows(rows: int | None, found: DataFields | None) -> int:
    """--rows, else the usable rows of --data."""
    if rows is not None:
        return rows
    if found is None:
        raise ConfigError(
            [Problem("--rows", "", "the training-set size is unknown", "pass --rows N or --data FILE")]
        )
    return found.rows


def _fill_data(rec: Recommendation, found: DataFields | None, task: str) -> list[str]:
    """Write what --data told into the YAML; return the keys still to fill (empty: ready to train)."""
    data = rec.config["data"]
    if found is None:
        fields = ("text_field", "label_field") if task == "seq-cls" else ("prompt_field", "response_field")
        return ["data.train_file", *(f"data.{f}" for f in fields), "data.test_file"]
    data["train_file"] = str(found.file)
    if found.test_file is not None:
        data["test_file"] = str(found.test_file.resolve())
    for key, column in found.fields.items():
        data[key.split(".", 1)[1]] = column
    how = ", ".join(f"{k.split('.', 1)[1]}={v} ({found.how[k]})" for k, v in found.fields.items())
    labels = f", {found.num_labels} labels" if found.num_labels else ""
    test = f", test_file {found.test_file.name} (beside it)" if found.test_file else ""
    rec.notes.append(f"from --data: {found.rows:,} rows, {how}{labels}{test}")
    return [] if found.test_file is not None else ["data.test_file"]


def _print_recommendation(
    rec: Recommendation, req: Request, console: Any, out_path: str | None, left: list[str], target: Target
) -> None:
    where = (
        f"{req.gpus} x {req.gpu_mem / 2**30:.0f} GiB GPU"
        if req.device == "cuda"
        else f"CPU, {req.gpu_mem / 2**30:.0f} GiB RAM"
    )
    t = Table(
        title=f"Recommendation for {req.model} ({req.task}, {req.rows:,} rows, {where})",
        title_justify="left",
    )
    t.add_column("setting")
    t.add_column("value")
    t.add_column("why")
    for c in rec.choices:
        t.add_row(c.key, str(c.value), c.reason)
    console.print(t)
    for n in rec.notes:
        console.print(f"note: {n}")
    for w in rec.warnings:
        console.print(f"[bold yellow]warning:[/] {w}")
    for line in rec.validation_table:
        console.print(line, markup=False, highlight=False)
    console.print("[bold]plan of the recommended config:[/]")
    print_plan(rec.plan, console)
    print_memory(rec.memory, console)
    if out_path:
        todo = (
            f"fill {', '.join(left)}, then `loralab train {out_path}`"
            if left
            else f"ready: `loralab train {out_path}`"
        )
        console.print(f"wrote {out_path} ({todo})")


__all__ = ["Choice", "DataOptions", "parse_duration", "pick_target", "run_recommend"]
