"""`loralab ablate BASE.yaml --out DIR`: the phases planned and printed (targets, trainable parameters,
with --dry-run the memory per device) before anything trains, then the study run with seed 000's rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from loralab.arch.resolve import resolve_model
from loralab.commands.plan import check_max_length
from loralab.config import load_experiment
from loralab.config.loader import read_yaml
from loralab.config.models import ExperimentConfig
from loralab.errors import Problem, UsageError
from loralab.experiments.ablate import STUDY_YAML, run_ablate
from loralab.experiments.phases import PHASES, PhasePlan, parse_phases, plan_phases, with_targets
from loralab.experiments.record import StudyRecord
from loralab.plan.estimate.memory import MemoryEstimate, estimate_memory
from loralab.plan.estimate.render_memory import gib
from loralab.plan.estimate.setup import Overrides, detected_gpu_memory, setup_from_config

EXECUTORS = ("local", "ray")


def parse_seeds(text: str | None) -> list[int] | None:
    """`--seeds 42,43` as integers; anything else is a usage error."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in parts if not p.isdigit()]
    if bad or not parts:
        what = f"{', '.join(map(repr, bad))} is not a seed" if bad else "no seed given"
        raise UsageError(Problem("--seeds", "", what, "give non-negative integers, e.g. --seeds 42,43"))
    seeds = [int(p) for p in parts]
    if len(set(seeds)) != len(seeds):
        raise UsageError(Problem("--seeds", "", "a seed is given twice", "name each seed once"))
    return seeds


def previous_options(study_yaml: Path) -> dict[str, Any]:
    """The phases, seeds and early-stopping patience an earlier `ablate` wrote into DIR/study.yaml."""
    study = read_yaml(study_yaml).get("study")
    study = study if isinstance(study, dict) else {}
    out: dict[str, Any] = {}
    runs = study.get("runs")
    if isinstance(runs, list):
        phases = [r.get("phase") for r in runs if isinstance(r, dict) and r.get("phase") in PHASES]
        out["phases"] = phases or None
    if isinstance(study.get("seeds"), list):
        out["seeds"] = [int(s) for s in study["seeds"] if isinstance(s, int)]
    es = study.get("early_stopping")
    if isinstance(es, dict) and isinstance(es.get("patience"), int):
        out["patience"] = es["patience"]
    return out


def phase_memory(cfg: ExperimentConfig, phase: PhasePlan, budget: int | None) -> MemoryEstimate:
    """The memory per device of one phase, as `loralab plan` estimates it for the base config's step."""
    pcfg = with_targets(cfg, phase.target_modules)
    setup, notes = setup_from_config(pcfg, phase.plan.arch, Overrides())
    m = cfg.model
    hf_cfg = resolve_model(m.name_or_path, revision=m.revision, trust_remote_code=m.trust_remote_code).config
    check_max_length(pcfg, hf_cfg, setup.seq_len, from_flag=False, warnings=phase.warnings)
    est = estimate_memory(phase.plan, hf_cfg, setup, budget=budget, search=False)
    est.notes[:0] = notes
    return est


def _size(n: int) -> str:
    return f"{n / 1e6:,.1f} MB" if n >= 1e6 else f"{n / 1e3:,.1f} kB"


def phases_table(
    cfg: ExperimentConfig, phases: list[PhasePlan], memory: list[MemoryEstimate] | None
) -> Table:
    first = phases[0].trainable_params if phases else 0
    rank = cfg.lora.config.get("r", 8)
    layers = cfg.lora.config.get("layers_to_transform")
    where = f"layers {layers}" if layers is not None else "all layers"
    t = Table(title=f"ablation of {cfg.model.name_or_path}: r={rank}, {where}")
    cols = ["phase", "target_modules", "adds", "modules", "trainable params", "x first", "adapter"]
    budget = memory is not None and any(est.budget is not None for est in memory)
    if memory is not None:
        cols += ["memory/device GiB"] + (["fits"] if budget else [])
    for c in cols:
        t.add_column(c, justify="left" if c in ("phase", "target_modules", "adds", "fits") else "right")
    for i, p in enumerate(phases):
        row = [
            p.name,
            ", ".join(p.target_modules),
            ", ".join(p.added) if i else "-",
            str(p.modules),
            f"{p.trainable_params:,}",
            f"{p.trainable_params / first:.2f}" if first else "-",
            _size(p.adapter_bytes),
        ]
        if memory is not None:
            est = memory[i]
            fits = "-" if est.fits is None else ("yes" if est.fits else "no")
            lower = "" if est.modelled else " (lower bound)"
            row += [gib(est.per_device["total"]) + lower] + ([fits] if budget else [])
        t.add_row(*(escape(c) for c in row))
    return t


def run_ablate_command(
    base: Path,
    out_dir: Path | None,
    *,
    phases: str | None,
    seeds: str | None,
    resume: bool,
    force: bool,
    executor: str,
    max_parallel: int,
    all_phases: bool,
    dry_run: bool,
    early_stopping_patience: int | None,
    quiet: bool,
    console: Console,
) -> StudyRecord | None:
    """Plan and print the phases; unless --dry-run, run the study. Returns the study's record."""
    problems = []
    if out_dir is None and not dry_run:
        problems.append(Problem("--out", "", "the study directory is required", "add --out DIR"))
    if executor not in EXECUTORS:
        problems.append(Problem("--executor", "", f"unknown executor {executor!r}", "use local or ray"))
    if max_parallel < 1:
        problems.append(Problem("--max-parallel", "", f"{max_parallel} is out of range", "give 1 or more"))
    if early_stopping_patience is not None and early_stopping_patience < 1:
        problems.append(
            Problem(
                "--early-stopping-patience",
                "",
                f"{early_stopping_patience} is out of range",
                "give 1 or more",
            )
        )
    if problems:
        raise UsageError(problems)
    chosen = parse_phases(phases)
    seed_list = parse_seeds(seeds)
    if resume and out_dir is not None and (out_dir / STUDY_YAML).is_file():
        # `--resume` alone continues the study as it was written, not the defaults
        before = previous_options(out_dir / STUDY_YAML)
        chosen = chosen if chosen is not None else before.get("phases")
        seed_list = seed_list if seed_list is not None else before.get("seeds")
        if early_stopping_patience is None:
            early_stopping_patience = before.get("patience")
    cfg = load_experiment(base)
    planned, notes = plan_phases(cfg, chosen)
    memory = None
    if dry_run:
        budget = detected_gpu_memory()
        memory = [phase_memory(cfg, p, budget) for p in planned]
    console.print(phases_table(cfg, planned, memory))
    for n in notes:
        console.print(f"[cyan]note:[/] {escape(n)}")
    for p in planned:
        for w in p.warnings:
            console.print(f"[yellow]warning ({escape(p.name)}):[/] {escape(w)}")
    if memory:
        for n in dict.fromkeys(n for est in memory for n in est.notes):
            console.print(f"[dim]note: {escape(n)}[/]")
    if dry_run:
        console.print("dry run: nothing trained, nothing written")
        return None
    assert out_dir is not None
    return run_ablate(
        base,
        out_dir,
        planned,
        seeds=seed_list,
        resume=resume,
        force=force,
        executor=executor,
        max_parallel=max_parallel,
        all_phases=all_phases,
        early_stopping_patience=early_stopping_patience,
        quiet=quiet,
    )
