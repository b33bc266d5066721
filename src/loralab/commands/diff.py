"""`loralab diff A B`: two experiment configs resolved (DeepSpeed "auto" filled, layers counted back,
the schedule that really runs, the plan's counts and memory) and compared by meaning, each difference
rated with the reason; as rich tables, JSON, or a Markdown report. The rules live in `diff_rules`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from loralab.arch.resolve import resolve_model
from loralab.commands.diff_rules import (
    GROUPS,
    HU,
    RSLORA,
    Difference,
    Facts,
    Planned,
    Resolved,
    compare,
    resolve,
    scale_name,
    show,
    times,
)
from loralab.config import ExperimentConfig, load_experiment, load_schemas
from loralab.config.models import carves_validation, lm_validation_rows
from loralab.data import infer_num_labels, read_rows
from loralab.errors import LoralabError
from loralab.io import print_json
from loralab.plan.estimate.memory import estimate_memory
from loralab.plan.estimate.setup import Overrides, setup_from_config
from loralab.plan.experiment import plan_experiment

# The memory terms that the settings diff most often moves: offload empties the optimizer term,
# checkpointing and the sequence length move the activations.
MEMORY_TERMS = (
    ("optimizer", "optimizer states on the GPU (0 when offloaded to the CPU)"),
    ("activations", "kept for backward: grows with micro-batch x max_length, shrinks with checkpointing"),
)
IMPACT_STYLE = {"high": "bold red", "medium": "yellow", "low": "cyan", "none": "dim"}


def run_diff(
    a: Path, b: Path, *, gpus: int | None, as_json: bool, markdown: Path | None, console: Console
) -> None:
    """Compare experiment files `a` and `b`; `gpus`: data-parallel processes of both runs."""
    notes: list[str] = []
    ra, rb = resolved(a, gpus, "A", notes), resolved(b, gpus, "B", notes)
    diffs = compare(ra, rb)
    rows = derived(ra, rb)
    notes += [f"A: {n}" for n in ra.notes] + [f"B: {n}" for n in rb.notes]
    report = {
        "a": str(a),
        "b": str(b),
        "differences": [d.to_json() for d in diffs],
        "derived": [r.to_json() for r in rows],
        "notes": list(dict.fromkeys(notes)),
    }
    if markdown is not None:
        markdown.write_text(to_markdown(report, diffs, rows), encoding="utf-8")
    if as_json:
        print_json(report)
        return
    print_report(report, diffs, rows, console)
    if markdown is not None:
        console.print(f"[dim]Markdown report written to {escape(str(markdown))}[/]")


@dataclass
class Derived:
    quantity: str
    a: Any
    b: Any
    note: str = ""
    unit: str = ""  # "bytes": rendered as MiB/GiB

    def to_json(self) -> dict[str, Any]:
        out = {"quantity": self.quantity, "a": self.a, "b": self.b, "note": self.note}
        return {**out, "unit": self.unit} if self.unit else out


# ---- loading and planning ------------------------------------------------------------------------


def resolved(path: Path, gpus: int | None, side: str, notes: list[str]) -> Resolved:
    """One config loaded, planned on its model (when it names one) and resolved."""
    cfg = load_experiment(path, require_model=False)  # a DeepSpeed file alone is compared too
    notes.extend(f"{side}: {n}" for n in cfg.notes)
    m = cfg.model
    if m.name_or_path and m.task == "seq-cls" and m.num_labels is None:
        m.num_labels, note = infer_num_labels(cfg)
        notes.append(f"{side}: {note}")
    rows, rows_note = train_rows(cfg)
    facts = Facts(
        training_args=dict(cfg.training_args),
        deepspeed=cfg.deepspeed,
        lora=cfg.lora_config_dict(),
        model={k: v for k, v in asdict(m).items() if k not in ("trust_remote_code", "device_map")},
        data={k: v for k, v in asdict(cfg.data).items() if k not in ("max_length", "extract_ratio", "seed")},
        max_length=cfg.max_length if m.name_or_path else cfg.data.max_length,
        ta_defaults={name: spec.default for name, spec in load_schemas().training.items()},
        gpus=gpus,
        train_rows=rows,
        rows_note=rows_note,
    )
    if not m.name_or_path:  # a DeepSpeed file alone: nothing to plan
        notes.append(f"{side}: no model: trainable parameters, adapter size and memory are not planned")
        return resolve(facts)
    facts.planned = planned(cfg, resolve(facts).processes, side, notes)
    return resolve(facts)


def train_rows(cfg: ExperimentConfig) -> tuple[int | None, str]:
    """Rows the Trainer iterates per epoch: data.train_file after extract_ratio, less the validation
    share `train` carves when there is no validation file (as plan's cache_splits counts it)."""
    d = cfg.data
    if not d.train_file:
        return None, "unknown: no data.train_file"
    path = cfg.resolve_path(d.train_file)
    if not path.is_file():
        return None, f"unknown: {path} not found"
    n = len(
        read_rows(
            path, text_field=d.text_field, text_template=d.text_template, label_field=d.label_field
        ).rows
    )
    n = round(n * float(d.extract_ratio or 1.0))
    if carves_validation(cfg):
        n -= lm_validation_rows(n)
        return n, f"{n:,} rows of {path.name} (after the ~10% validation split)"
    return n, f"{n:,} rows of {path.name}"


def planned(cfg: ExperimentConfig, processes: int, side: str, notes: list[str]) -> Planned | None:
    """The plan's resolved modules and counts, and its memory estimate on `processes` devices."""
    try:
        plan = plan_experiment(cfg, with_options=False)
    except LoralabError as exc:  # an unplannable LoRA config: compare it as written
        notes.append(f"{side}: not planned ({str(exc).splitlines()[0]})")
        return None
    spec, counts = plan.spec, plan.counts
    written = cfg.lora_config_dict().get("layers_to_transform")
    written = [written] if isinstance(written, int) else written
    if written and written != spec.layers_to_transform:
        notes.append(
            f"{side}: layers_to_transform {show(written)} resolves to {show(spec.layers_to_transform)} on "
            f"{plan.arch.model_id}'s {plan.arch.num_layers} layers (PEFT itself would match no layer with "
            "negative indices; loralab counts them back)"
        )
    out = Planned(
        num_layers=plan.arch.num_layers,
        layers=list(spec.layers_to_transform) if spec.layers_to_transform else None,
        written_layers=written,
        target_modules=plan.match.target_modules,
        adapted_modules=len(plan.match.targets),
        lora_params=counts.lora_params,
        trainable_params=counts.trainable_params,
        adapter_bytes=plan.adapter_bytes,
        modules_to_save=list(plan.match.modules_to_save),
    )
    try:
        setup, _ = setup_from_config(cfg, plan.arch, Overrides(gpus=processes))
        m = cfg.model
        hf_cfg = resolve_model(
            m.name_or_path, revision=m.revision, trust_remote_code=m.trust_remote_code
        ).config
        mem = estimate_memory(plan, hf_cfg, setup, budget=None, search=False)
        out.memory_per_device, out.host_memory = mem.per_device["total"], mem.host.get("total", 0)
        out.memory_terms = dict(mem.per_device)
        if not mem.modelled:
            notes.append(f"{side}: {m.name_or_path} has no activation model: its memory is a lower bound")
    except LoralabError as exc:
        notes.append(f"{side}: memory not estimated ({str(exc).splitlines()[0]})")
    return out


# ---- derived quantities --------------------------------------------------------------------------


def derived(a: Resolved, b: Resolved) -> list[Derived]:
    """The quantities both configs imply, side by side (None: unknown, the note says why)."""
    rows = [
        Derived(
            "processes (data parallel)",
            a.processes,
            b.processes,
            f"A: {a.processes_source}; B: {b.processes_source}",
        ),
        Derived(
            "effective batch (processes x micro-batch x accumulation)",
            a.effective_batch,
            b.effective_batch,
            f"A: {a.processes} x {a.micro} x {a.accum}; B: {b.processes} x {b.micro} x {b.accum}",
        ),
        Derived("optimizer steps per epoch", a.steps_per_epoch, b.steps_per_epoch, _rows_note(a, b)),
        Derived("optimizer steps in total", a.total_steps, b.total_steps, _rows_note(a, b)),
        Derived(
            "warmup steps",
            _or(a.warmup_steps, a.warmup_text),
            _or(b.warmup_steps, b.warmup_text),
            f"A: {a.warmup_text}; B: {b.warmup_text}",
        ),
        Derived("learning-rate schedule", a.schedule.text, b.schedule.text),
        Derived("schedule set by", a.schedule.set_by, b.schedule.set_by),
        Derived("gradient clipping", a.clipping, b.clipping),
        Derived(
            "LoRA scale",
            a.scale,
            b.scale,
            f"A: {scale_name(a)} = {_ab(a)}; B: {scale_name(b)} = {_ab(b)} "
            f"({HU}; {RSLORA} for alpha/sqrt(r))",
        ),
        Derived(
            "tokens per optimizer step (upper bound: effective batch x max_length)",
            _mul(a.effective_batch, a.facts.max_length),
            _mul(b.effective_batch, b.facts.max_length),
            f"A: {a.effective_batch} x {show(a.facts.max_length)}; B: {b.effective_batch} x "
            f"{show(b.facts.max_length)}",
        ),
    ]
    pa, pb = a.facts.planned, b.facts.planned
    if pa is None or pb is None:
        return [
            *rows,
            Derived("plan (modules, parameters, memory)", None, None, "a model is unknown: not planned"),
        ]
    return rows + plan_rows(a, b, pa, pb)


def plan_rows(a: Resolved, b: Resolved, pa: Planned, pb: Planned) -> list[Derived]:
    """The plan's side of the derived quantities: modules, parameters, adapter size, memory."""

    def layers(p: Planned) -> Any:
        return p.layers if p.layers is not None else "all"

    written = [
        f"{side} wrote {show(p.written_layers)}"
        for side, p in (("A", pa), ("B", pb))
        if p.written_layers and p.written_layers != p.layers
    ]
    return [
        Derived("target modules (resolved)", _tm(pa.target_modules), _tm(pb.target_modules)),
        Derived(
            "layers adapted (resolved)",
            layers(pa),
            layers(pb),
            f"of {pa.num_layers} / {pb.num_layers} layers" + ("; " + "; ".join(written) if written else ""),
        ),
        Derived(
            "adapted modules",
            pa.adapted_modules,
            pb.adapted_modules,
            times(pa.adapted_modules, pb.adapted_modules),
        ),
        Derived("LoRA parameters", pa.lora_params, pb.lora_params, times(pa.lora_params, pb.lora_params)),
        Derived(
            "trainable parameters (LoRA + modules_to_save)",
            pa.trainable_params,
            pb.trainable_params,
            times(pa.trainable_params, pb.trainable_params),
        ),
        Derived(
            "adapter size",
            pa.adapter_bytes,
            pb.adapter_bytes,
            "LoRA tensors in fp32 (PEFT's autocast), saved modules in the load dtype",
            "bytes",
        ),
        Derived(
            "memory per device (plan's estimate)",
            pa.memory_per_device,
            pb.memory_per_device,
            f"on {a.processes} / {b.processes} process(es)",
            "bytes",
        ),
        *[
            Derived(f"  of which {term}", pa.memory_terms.get(term), pb.memory_terms.get(term), why, "bytes")
            for term, why in MEMORY_TERMS
        ],
        Derived("host memory (offloaded states)", pa.host_memory, pb.host_memory, "", "bytes"),
    ]


def _or(v: Any, text: str) -> Any:
    return v if v is not None else text.split(" (")[0]


def _mul(x: int, y: int | None) -> int | None:
    return x * y if y is not None else None


def _tm(v: list[str] | str) -> list[str] | str:
    return sorted(v) if isinstance(v, list) else v


def _ab(r: Resolved) -> str:
    return f"{show(r.facts.lora.get('lora_alpha', 8))}/{show(r.facts.lora.get('r', 8))}"


def _rows_note(a: Resolved, b: Resolved) -> str:
    ra, rb = a.facts.rows_note, b.facts.rows_note
    return ra if ra == rb else f"A: {ra}; B: {rb}"


# ---- rendering -----------------------------------------------------------------------------------


def cell(value: Any, unit: str = "") -> str:
    """A derived value for a table: bytes as MiB/GiB, integers with separators, None as unknown."""
    if value is None:
        return "unknown"
    if unit == "bytes" and isinstance(value, int):
        if value == 0:
            return "0"
        return f"{value / 2**30:.2f} GiB" if value >= 2**30 else f"{value / 2**20:.1f} MiB"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return show(value)


def print_report(report: dict[str, Any], diffs: list[Difference], rows: list[Derived], out: Console) -> None:
    out.print(f"A: {escape(report['a'])}\nB: {escape(report['b'])}")
    if diffs:
        t = Table(title="Differences (by meaning, after resolving both configs)", show_lines=False)
        for col in ("group", "setting", "A", "B", "impact", "why"):
            t.add_column(col, overflow="fold", ratio=4 if col == "why" else None)
        last = None
        for d in diffs:
            if last is not None and d.group != last:
                t.add_section()
            style = IMPACT_STYLE.get(d.impact, "")
            t.add_row(
                d.group if d.group != last else "",
                escape(d.key),
                escape(show(d.a)),
                escape(show(d.b)),
                f"[{style}]{d.impact}[/]",
                escape(d.why),
            )
            last = d.group
        out.print(t)
    else:
        out.print("[green]No differences in meaning:[/] both configs resolve to the same run.")
    t = Table(title="Derived quantities")
    for col in ("quantity", "A", "B", "note"):
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(escape(r.quantity), escape(cell(r.a, r.unit)), escape(cell(r.b, r.unit)), escape(r.note))
    out.print(t)
    for n in report["notes"]:
        out.print(f"[dim]note: {escape(n)}[/]")


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(report: dict[str, Any], diffs: list[Difference], rows: list[Derived]) -> str:
    """The same report as Markdown: differences by group, derived quantities, notes."""
    lines = [
        "# loralab diff",
        "",
        f"- A: `{report['a']}`",
        f"- B: `{report['b']}`",
        "",
        "## Differences",
        "",
    ]
    if not diffs:
        lines.append("No differences in meaning: both configs resolve to the same run.")
    for group in GROUPS:
        mine = [d for d in diffs if d.group == group]
        if not mine:
            continue
        lines += [f"### {group}", "", "| setting | A | B | impact | why |", "|---|---|---|---|---|"]
        lines += [
            f"| {_md(d.key)} | {_md(show(d.a))} | {_md(show(d.b))} | {d.impact} | {_md(d.why)} |"
            for d in mine
        ]
        lines.append("")
    lines += ["", "## Derived quantities", "", "| quantity | A | B | note |", "|---|---|---|---|"]
    lines += [
        f"| {_md(r.quantity)} | {_md(cell(r.a, r.unit))} | {_md(cell(r.b, r.unit))} | {_md(r.note)} |"
        for r in rows
    ]
    if report["notes"]:
        lines += ["", "## Notes", ""] + [f"- {_md(n)}" for n in report["notes"]]
    return "\n".join(lines) + "\n"
