"""`loralab plan` and `loralab modules`: glue between config, architecture records and rendering."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from loralab.arch.records import ArchRecord, ModuleRecord, name_pattern
from loralab.errors import ConfigError, Problem
from loralab.plan.planner import Plan, build_plan
from loralab.plan.render import plan_to_json, print_plan

_TASK_TYPES = {"seq-cls": "SEQ_CLS", "causal-lm": "CAUSAL_LM", "seq2seq": "SEQ_2_SEQ_LM"}


def plan_from_config(config: Path, *, with_options: bool = True) -> tuple[Plan, list[str]]:
    """Load an experiment file and plan its LoRA config on its model's architecture."""
    from loralab.arch.cache import get_arch_record
    from loralab.config import load_experiment

    cfg = load_experiment(config)
    if not cfg.lora.enable:
        raise ConfigError(
            [
                Problem(
                    str(config),
                    "lora.enable",
                    "LoRA is disabled, there is nothing to plan",
                    "set enable: true",
                )
            ]
        )
    m = cfg.model
    arch = get_arch_record(
        m.name_or_path,
        task=m.task,
        num_labels=m.num_labels,
        revision=m.revision,
        trust_remote_code=m.trust_remote_code,
    )
    lora = dict(cfg.lora_config_dict())
    # The PeftModel class (and so the heads added to modules_to_save) follows the task.
    lora.setdefault("task_type", _TASK_TYPES[m.task])
    dtype = m.torch_dtype if m.torch_dtype not in (None, "auto") else None
    plan = build_plan(arch, lora, source=str(config), load_dtype=dtype, with_options=with_options)
    return plan, list(cfg.notes)


def run_plan(config: Path, *, as_json: bool, with_options: bool, out: Console) -> None:
    plan, notes = plan_from_config(config, with_options=with_options)
    if as_json:
        obj = plan_to_json(plan)
        obj["notes"] = notes + obj["notes"]
        sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
    else:
        print_plan(plan, out, notes)


def module_rows(arch: ArchRecord, show_all: bool) -> list[dict[str, Any]]:
    """Linear-like modules (Linear, Conv1D, Embedding), one row per module or per name pattern."""
    mods: list[ModuleRecord] = [m for m in arch.modules if m.linear or m.is_embedding]
    rows: dict[str, dict[str, Any]] = {}
    for m in mods:
        key = m.name if show_all else f"{name_pattern(m.name)}|{m.in_features}|{m.out_features}"
        row = rows.setdefault(
            key,
            {
                "name": m.name if show_all else name_pattern(m.name),
                "cls": m.cls,
                "kind": m.kind,
                "in_features": m.in_features,
                "out_features": m.out_features,
                "bias": m.has_bias,
                "params": m.own_numel,
                "layers": [],
                "count": 0,
            },
        )
        row["count"] += 1
        if m.layer is not None:
            row["layers"].append(m.layer)
    return list(rows.values())


# Encoder-only families: their natural LoRA task is classification, and most have no causal-LM class.
_ENCODER_ONLY = {"bert", "roberta", "xlm-roberta", "electra", "deberta", "deberta-v2", "distilbert", "albert"}


def default_task(config: dict[str, Any]) -> str:
    """The task a model is usually fine-tuned for, from its config alone."""
    if config.get("is_encoder_decoder"):
        return "seq2seq"
    archs = " ".join(config.get("architectures") or [])
    if config.get("model_type") in _ENCODER_ONLY or "ForSequenceClassification" in archs:
        return "seq-cls"
    return "causal-lm"


def run_modules(
    model: str,
    *,
    task: str | None,
    num_labels: int | None,
    show_all: bool,
    as_json: bool,
    trust_remote_code: bool,
    out: Console,
) -> None:
    from loralab.arch.cache import get_arch_record
    from loralab.arch.resolve import resolve_model

    if task is None:
        task = default_task(resolve_model(model, trust_remote_code=trust_remote_code).config)
    if task not in _TASK_TYPES:
        raise ConfigError(
            [Problem("--task", "", f"unknown task {task!r}", "use one of " + ", ".join(_TASK_TYPES))]
        )
    if task == "seq-cls" and num_labels is None:
        num_labels = 2
    arch = get_arch_record(model, task=task, num_labels=num_labels, trust_remote_code=trust_remote_code)
    rows = module_rows(arch, show_all)
    if as_json:
        obj = {
            "model": arch.model_id,
            "architecture": arch.architecture,
            "num_layers": arch.num_layers,
            "total_params": arch.total_params,
            "modules": rows,
        }
        sys.stdout.write(json.dumps(obj, indent=2) + "\n")
        return
    t = Table(
        title=f"{arch.model_id}: {arch.architecture}, {arch.num_layers} layers, {arch.total_params:,} params"
    )
    for col in ("module", "class", "kind", "in → out", "bias", "layers", "count"):
        t.add_column(col, justify="right" if col in ("in → out", "count") else "left")
    for r in rows:
        layers = sorted(set(r["layers"]))
        t.add_row(
            r["name"],
            r["cls"],
            r["kind"],
            f"{r['in_features']:,} → {r['out_features']:,}",
            "yes" if r["bias"] else "no",
            f"{layers[0]}-{layers[-1]}" if len(layers) > 1 else (str(layers[0]) if layers else "-"),
            str(r["count"]),
        )
    out.print(t)
    out.print(
        "Use the last part of a name (e.g. 'q_proj') or a longer suffix (e.g. 'attn.c_proj') "
        "in target_modules."
    )
