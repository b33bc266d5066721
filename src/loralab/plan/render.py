"""Presenting a plan: rich tables for people, one JSON object for programs.

The JSON keys are a contract (later issues add keys, never rename): model, trainable_params,
lora_params, bias_params, modules_to_save_params, modules, warnings, options.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table

from loralab.arch.records import ArchRecord, name_pattern
from loralab.plan.count import ModuleCount
from loralab.plan.planner import ADAPTER_DTYPE, Plan


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:,.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def _layers_text(layers: list[int]) -> str:
    if not layers:
        return "-"
    if layers == list(range(layers[0], layers[-1] + 1)) and len(layers) > 2:
        return f"{layers[0]}-{layers[-1]}"
    return ",".join(str(x) for x in layers)


def group_modules(mods: list[ModuleCount]) -> list[dict[str, Any]]:
    """Adapted modules grouped by their name with the layer number blanked (one row per kind of module)."""
    groups: OrderedDict[tuple[str, int, int, int], dict[str, Any]] = OrderedDict()
    for m in mods:
        key = (name_pattern(m.name), m.in_features, m.out_features, m.r)
        g = groups.setdefault(
            key,
            {
                "pattern": key[0],
                "target": m.target,
                "kind": m.kind,
                "cls": m.cls,
                "in_features": m.in_features,
                "out_features": m.out_features,
                "r": m.r,
                "per_module": m.lora_params,
                "layers": [],
                "count": 0,
                "lora_params": 0,
                "bias_params": 0,
            },
        )
        g["count"] += 1
        g["lora_params"] += m.lora_params
        g["bias_params"] += m.bias_params
        if m.layer is not None:
            g["layers"].append(m.layer)
    return list(groups.values())


def plan_to_json(plan: Plan) -> dict[str, Any]:
    a: ArchRecord = plan.arch
    c = plan.counts
    return {
        "model": {
            "name": a.model_id,
            "architecture": a.architecture,
            "model_type": a.model_type,
            "task": a.task,
            "num_labels": a.num_labels,
            "num_layers": a.num_layers,
            "layers_per_stack": a.layers_per_stack,
            "total_params": a.total_params,
            "load_dtype": plan.load_dtype,
        },
        "lora": {
            "r": plan.spec.r,
            "lora_alpha": plan.spec.lora_alpha,
            "target_modules": plan.match.target_modules,
            "layers_to_transform": plan.spec.layers_to_transform,
            "layers_written": [i for i, _ in plan.spec.layer_resolution] or None,
            "bias": plan.spec.bias,
            "use_dora": plan.spec.use_dora,
            "modules_to_save": plan.spec.effective_modules_to_save(),
        },
        "trainable_params": c.trainable_params,
        "lora_params": c.lora_params,
        "bias_params": c.bias_params,
        "modules_to_save_params": c.modules_to_save_params,
        "modules_to_save": c.modules_to_save,
        "share_of_base": c.share_of_base,
        "adapter_bytes": plan.adapter_bytes,
        "adapter_dtype": ADAPTER_DTYPE,
        "saved_embedding_layers": c.saved_extra,
        "matched": plan.matched_by_target,
        "modules": [
            {
                "name": m.name,
                "kind": m.kind,
                "layer": m.layer,
                "in_features": m.in_features,
                "out_features": m.out_features,
                "r": m.r,
                "target": m.target,
                "lora_params": m.lora_params,
                "bias_params": m.bias_params,
            }
            for m in c.modules
        ],
        "warnings": plan.warnings,
        "notes": plan.notes,
        "options": [
            {
                "name": o.name,
                "target_modules": o.target_modules,
                "trainable_params": o.trainable_params,
                "lora_params": o.lora_params,
                "adapter_bytes": o.adapter_bytes,
                "share_of_base": o.share_of_base,
                "current": o.current,
            }
            for o in plan.options
        ],
    }


def _header(plan: Plan) -> Panel:
    a = plan.arch
    s = plan.spec
    lines = [
        f"[bold]{a.model_id}[/]  {a.architecture}  ({a.model_type}, task {a.task}"
        + (f", {a.num_labels} labels" if a.num_labels else "")
        + ")",
        f"layers: {a.num_layers}   base parameters: {a.total_params:,}   load dtype: {plan.load_dtype}",
        f"LoRA r={s.r} alpha={s.lora_alpha:g} (scale {s.lora_alpha / s.r:g}"
        + (", rsLoRA" if s.use_rslora else "")
        + f")  bias={s.bias}"
        + ("  DoRA" if s.use_dora else "")
        + f"  layers: {_layers_text(s.layers_to_transform or [])}"
        + (
            "  (written " + ",".join(str(i) for i, _ in s.layer_resolution) + ")"
            if any(i < 0 for i, _ in s.layer_resolution)
            else ""
        ),
    ]
    return Panel("\n".join(lines), title="loralab plan", expand=False)


def _module_table(plan: Plan) -> Table:
    t = Table(title="Adapted modules (what each target name matched)", show_lines=False)
    for col, just in [
        ("target", "left"),
        ("module", "left"),
        ("kind", "left"),
        ("in → out", "right"),
        ("r", "right"),
        ("LoRA / module", "right"),
        ("layers", "left"),
        ("count", "right"),
        ("LoRA params", "right"),
    ]:
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for g in group_modules(plan.counts.modules):
        t.add_row(
            g["target"],
            g["pattern"],
            g["kind"],
            f"{g['in_features']:,} → {g['out_features']:,}",
            str(g["r"]),
            f"{g['per_module']:,}",
            _layers_text(sorted(set(g["layers"]))),
            str(g["count"]),
            f"{g['lora_params']:,}",
        )
    return t


def _totals_table(plan: Plan) -> Table:
    c = plan.counts
    t = Table(title="Trainable parameters", show_header=False)
    t.add_column("what")
    t.add_column("params", justify="right")
    per_layer: dict[int, int] = {}
    for m in c.modules:
        if m.layer is not None:
            per_layer[m.layer] = per_layer.get(m.layer, 0) + m.lora_params
    distinct = sorted(set(per_layer.values()))
    if len(distinct) == 1 and per_layer:
        t.add_row(f"LoRA per layer × {len(per_layer)} layers", f"{distinct[0]:,} × {len(per_layer)}")
    t.add_row("LoRA (A, B" + (", magnitude" if plan.spec.use_dora else "") + ")", f"{c.lora_params:,}")
    if plan.spec.bias != "none":
        t.add_row(f"biases (bias={plan.spec.bias})", f"{c.bias_params:,}")
    for name, n in c.modules_to_save.items():
        t.add_row(f"modules_to_save: {name}", f"{n:,}")
    t.add_row("[bold]total trainable[/]", f"[bold]{c.trainable_params:,}[/]")
    t.add_row("share of base model", f"{100 * c.share_of_base:.3f} %")
    t.add_row(
        f"adapter file (LoRA in {ADAPTER_DTYPE}, copies in {plan.load_dtype})",
        human_bytes(plan.adapter_bytes),
    )
    return t


def _options_table(plan: Plan) -> Table:
    cur = plan.counts.trainable_params
    t = Table(title=f"Options at the same rank and layers (r={plan.spec.r})")
    for col, just in [
        ("option", "left"),
        ("target_modules", "left"),
        ("trainable", "right"),
        ("vs current", "right"),
        ("adapter file", "right"),
        ("% of base", "right"),
    ]:
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for o in plan.options:
        delta = (o.trainable_params - cur) / cur * 100 if cur else 0.0
        t.add_row(
            ("[bold]" if o.current else "") + o.name + (" (current)" if o.current else ""),
            ", ".join(o.target_modules),
            f"{o.trainable_params:,}",
            "—" if o.current else f"{delta:+.0f} %",
            human_bytes(o.adapter_bytes),
            f"{100 * o.share_of_base:.3f}",
        )
    return t


def print_plan(plan: Plan, console: Console, notes: list[str] | None = None) -> None:
    parts: list[Any] = [_header(plan), _module_table(plan), _totals_table(plan)]
    if plan.options:
        parts.append(_options_table(plan))
    console.print(Group(*parts))
    for n in [*(notes or []), *plan.notes]:
        console.print(f"[cyan]note:[/] {n}")
    for w in plan.warnings:
        console.print(f"[yellow]warning:[/] {w}")
