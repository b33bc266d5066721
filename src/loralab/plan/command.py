"""`loralab plan` and `loralab modules`: glue between config, architecture records and rendering."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from loralab.arch.records import ArchRecord, ModuleRecord, name_pattern
from loralab.config.models import TASK_TO_TASK_TYPE
from loralab.errors import ConfigError, Problem
from loralab.plan.planner import Plan, build_plan
from loralab.plan.render import plan_to_json, print_plan


def plan_from_config(config: Path, *, with_options: bool = True) -> tuple[Plan, list[str]]:
    """Load an experiment file and plan its LoRA config on its model's architecture."""
    _cfg, plan, notes = load_and_plan(config, with_options=with_options)
    return plan, notes


def load_and_plan(config: Path, *, with_options: bool = True) -> tuple[Any, Plan, list[str]]:
    """The loaded experiment, its plan, and the config's notes."""
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
    lora.setdefault("task_type", TASK_TO_TASK_TYPE[m.task])
    dtype = m.torch_dtype if m.torch_dtype not in (None, "auto") else None
    plan = build_plan(arch, lora, source=str(config), load_dtype=dtype, with_options=with_options)
    return cfg, plan, list(cfg.notes)


def run_plan(
    config: Path,
    *,
    as_json: bool,
    with_options: bool,
    out: Console,
    extra: PlanExtras | None = None,
) -> None:
    from loralab.plan.render_memory import measure_table, print_memory

    cfg, plan, notes = load_and_plan(config, with_options=with_options)
    extra = extra or PlanExtras()
    memory, time_est, measured = plan_extras(cfg, plan, extra, config)
    if as_json:
        obj = plan_to_json(plan)
        obj["notes"] = notes + obj["notes"] + (memory.notes if memory else [])
        if memory is not None:
            obj["memory"] = memory.to_json()
        if time_est is not None:
            obj["time"] = time_est.to_json()
        if measured is not None:
            obj["measure"] = {
                "twin": measured.twin,
                "terms": {t: {"estimated": e, "measured": m} for t, e, m in measured.rows},
                "ratios": measured.ratios(),
                "notes": measured.notes,
            }
        sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
        return
    print_plan(plan, out, notes)
    if memory is not None:
        print_memory(memory, out)
    if time_est is not None:
        from loralab.plan.render_memory import time_table

        out.print(time_table(time_est))
        for n in time_est.notes:
            out.print(f"[dim]note: {n}[/]")
    if measured is not None:
        out.print(measure_table(measured.rows))
        out.print(f"[dim]{measured.twin}[/]")
        for n in measured.notes:
            out.print(f"[dim]note: {n}[/]")


@dataclass
class PlanExtras:
    """The memory/time/measure options of `loralab plan`."""

    overrides: Any = None  # loralab.plan.setup.Overrides
    gpu_mem: str | None = None
    measure: bool = False
    tokens: int | None = None
    tflops: float | None = None
    gpu: str | None = None
    mfu: float | None = None


def plan_extras(cfg: Any, plan: Plan, extra: PlanExtras, config: Path) -> tuple[Any, Any, Any]:
    """Memory estimate (with a verdict when a budget is known), time estimate, twin measurement."""
    from loralab.arch.resolve import resolve_model
    from loralab.plan.memory import estimate_memory
    from loralab.plan.setup import Overrides, detected_gpu_memory, parse_size, setup_from_config

    ov = extra.overrides or Overrides()
    setup, setup_notes = setup_from_config(cfg, plan.arch, ov)
    m = cfg.model
    hf_cfg = resolve_model(m.name_or_path, revision=m.revision, trust_remote_code=m.trust_remote_code).config
    budget = parse_size(extra.gpu_mem) if extra.gpu_mem else None
    if budget is None:
        budget = gpu_table_memory(extra.gpu) or detected_gpu_memory()
    memory = estimate_memory(plan, hf_cfg, setup, budget=budget)
    memory.notes[:0] = setup_notes
    time_est = plan_time(cfg, memory, extra) if memory.modelled else None
    measured = None
    if extra.measure:
        from loralab.plan.measure import measure_twin

        measured = measure_twin(cfg, plan, setup)
    return memory, time_est, measured


def gpu_table_memory(name: str | None) -> int | None:
    if not name:
        return None
    from loralab.plan.timing import GPUS

    spec = GPUS.get(name)
    return int(spec[1] * 2**30) if spec else None


def plan_time(cfg: Any, memory: Any, extra: PlanExtras) -> Any:
    """Hours for the configured epochs; tokens from --tokens, else from data.train_file. The FLOPs
    come from the replay the memory estimate already ran."""
    from loralab.plan.timing import estimate_time

    epochs = float(cfg.training_args.get("num_train_epochs") or 3.0)  # TrainingArguments' default
    if extra.tokens:
        tokens, source = int(extra.tokens), "--tokens (per epoch)"
    else:
        tokens, source = data_tokens(cfg, memory.setup.seq_len)
    return estimate_time(
        memory.activations,
        memory.setup,
        tokens_per_epoch=tokens,
        tokens_source=source,
        epochs=epochs,
        tflops=extra.tflops,
        gpu=extra.gpu,
        mfu=extra.mfu,
    )


def data_tokens(cfg: Any, max_len: int) -> tuple[int, str]:
    """Tokens one epoch processes: the training rows (after extract_ratio) tokenized and truncated
    at `max_len` when the tokenizer loads; else rows x max_len, an upper bound. (0, why) without data."""
    from loralab.data import read_rows

    d = cfg.data
    if not d.train_file:
        return 0, "unknown: no data.train_file (pass --tokens)"
    path = cfg.resolve_path(d.train_file)
    if not path.is_file():
        return 0, f"unknown: {path} not found (pass --tokens)"
    rows = read_rows(path, text_field=d.text_field, text_template=d.text_template, label_field=d.label_field)
    ratio = float(d.extract_ratio or 1.0)
    n = round(len(rows.rows) * ratio)
    try:
        from loralab.train.loading import load_tokenizer

        tok = load_tokenizer(cfg)
    except Exception:  # offline hub id, no tokenizer files: fall back to the bound
        return n * max_len, f"{n:,} rows x {max_len} (upper bound: the tokenizer is not available)"
    # causal-lm / seq2seq rows have prompt and response fields rather than one rendered text
    texts = rows.texts or [
        "\n".join(str(v) for v in r.fields.values() if isinstance(v, str)) for r in rows.rows
    ]
    if not texts:
        return 0, f"unknown: no usable rows in {path.name} (pass --tokens)"
    lengths = [min(len(ids), max_len) for ids in tok(texts, truncation=False)["input_ids"]]
    tokens = round(sum(lengths) * ratio)
    return tokens, f"{n:,} rows of {path.name} tokenized (dynamic padding)"


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
    if task not in TASK_TO_TASK_TYPE:
        raise ConfigError(
            [Problem("--task", "", f"unknown task {task!r}", "use one of " + ", ".join(TASK_TO_TASK_TYPE))]
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
