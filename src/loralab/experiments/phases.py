"""The phases of seed 000's staged target-module ablation (§4.4) for any architecture `plan` knows.

Three nested sets of a block's linear modules, named by kind as `plan` classifies them: `attention`
(q/k/v/o, GPT-2's c_attn + attn.c_proj, BERT's query/key/value/attention.output.dense),
`attention+mlp-in` (plus the MLP's widening projections: gate/up, c_fc, intermediate.dense) and
`all-linear` (plus the MLP's output projection: down_proj, mlp.c_proj, BERT's output.dense), each at
the base config's rank, alpha and layers.

Target names are PEFT suffixes (`key.endswith("." + name)`). A name is the shortest suffix of the
module that matches modules of its own kind only (GPT-2's `c_proj` is both the attention output and
the MLP output, so the phases say `attn.c_proj` and `mlp.c_proj`); when no suffix short of the layer
number is that specific (BERT's MLP output `layer.N.output.dense` ends like `attention.output.dense`),
the shortest suffix whose matches all lie inside the phase is used. A name chosen for a smaller phase
stays in the larger ones, so each phase adds names to the one before.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace

from loralab.arch.cache import get_arch_record
from loralab.arch.records import ArchRecord, ModuleRecord, name_pattern
from loralab.config.models import ExperimentConfig
from loralab.data import infer_num_labels
from loralab.errors import ConfigError, PlanError, Problem, UsageError
from loralab.plan.experiment import plan_experiment
from loralab.plan.planner import Plan

PHASES = ("attention", "attention+mlp-in", "all-linear")
# The module classes each phase trains, cumulative in PHASES' order.
PHASE_CLASSES = {
    "attention": ("attention",),
    "attention+mlp-in": ("attention", "mlp-in"),
    "all-linear": ("attention", "mlp-in", "mlp-out"),
}
TARGET_KEY = "lora.config.target_modules"


@dataclass
class PhasePlan:
    """One phase: its targets, what they add over the phase before, and the plan's counts."""

    name: str
    target_modules: list[str]
    added: list[str]
    trainable_params: int
    lora_params: int
    modules: int  # modules LoRA wraps
    adapter_bytes: int
    plan: Plan
    warnings: list[str] = field(default_factory=list)


def module_class(m: ModuleRecord) -> str | None:
    """attention | mlp-in (widens the hidden state) | mlp-out, for a block's linear module."""
    if not (m.linear and m.layer is not None):
        return None
    if m.kind == "attention":
        return "attention"
    if m.kind == "mlp":
        return "mlp-in" if (m.out_features or 0) > (m.in_features or 0) else "mlp-out"
    return None


def _suffixes(name: str) -> list[str]:
    """Trailing name parts, shortest first, stopping before the layer number (a suffix holding it
    would name one layer, not a kind of module)."""
    parts = name.split(".")
    out = []
    for i in range(len(parts) - 1, -1, -1):
        if parts[i].isdigit():
            break
        out.append(".".join(parts[i:]))
    return out


def _matches(arch: ArchRecord, suffix: str) -> list[ModuleRecord]:
    return [m for m in arch.modules if m.name == suffix or m.name.endswith("." + suffix)]


def _choose_name(arch: ArchRecord, m: ModuleRecord, allowed: set[str]) -> str | None:
    cls = module_class(m)
    fallback = None
    for suffix in _suffixes(m.name):
        hits = _matches(arch, suffix)
        if all(module_class(h) == cls for h in hits):
            return suffix
        if fallback is None and all(h.name in allowed for h in hits):
            fallback = suffix
    return fallback


def phase_targets(arch: ArchRecord) -> dict[str, list[str]]:
    """{phase: target_modules} for the phases this architecture has, in PHASES' order. A phase is
    missing when its added class has no module (an MLP without a separate widening projection)."""
    by_class: dict[str, list[ModuleRecord]] = {"attention": [], "mlp-in": [], "mlp-out": []}
    for m in arch.modules:
        cls = module_class(m)
        if cls is not None:
            by_class[cls].append(m)
    out: dict[str, list[str]] = {}
    names: list[str] = []
    seen_patterns: set[str] = set()
    for phase in PHASES:
        classes = PHASE_CLASSES[phase]
        new_class = classes[-1]
        if not by_class[new_class]:
            continue
        allowed = {m.name for c in classes for m in by_class[c]}
        for m in by_class[new_class]:
            pattern = name_pattern(m.name)
            if pattern in seen_patterns:
                continue
            seen_patterns.add(pattern)
            chosen = _choose_name(arch, m, allowed)
            if chosen is None:
                raise PlanError(
                    [
                        Problem(
                            arch.model_id,
                            TARGET_KEY,
                            f"no target name selects {m.name} without modules outside the {phase} phase",
                            "write the study by hand (`loralab study`) with full module names",
                        )
                    ]
                )
            if chosen not in names:
                names.append(chosen)
        out[phase] = list(names)
    return out


def parse_phases(text: str | None) -> list[str] | None:
    """`--phases attention,all-linear` as a list; an unknown name is a usage error listing the valid
    ones. None when not given (every phase the architecture has)."""
    if text is None:
        return None
    chosen = [p.strip() for p in text.split(",") if p.strip()]
    problems = [
        Problem("--phases", "", f"unknown phase {p!r}", "use one or more of " + ", ".join(PHASES))
        for p in chosen
        if p not in PHASES
    ]
    if not chosen:
        problems.append(Problem("--phases", "", "no phase given", "use one or more of " + ", ".join(PHASES)))
    dup = sorted({p for p in chosen if chosen.count(p) > 1})
    if dup:
        problems.append(Problem("--phases", "", f"{', '.join(dup)} given twice", "name each phase once"))
    if problems:
        raise UsageError(problems)
    return chosen


def with_targets(cfg: ExperimentConfig, targets: list[str]) -> ExperimentConfig:
    """A copy of the experiment with lora.config.target_modules replaced (everything else as is)."""
    lora_cfg = copy.deepcopy(cfg.lora.config)
    lora_cfg["target_modules"] = list(targets)
    return replace(cfg, lora=replace(cfg.lora, config=lora_cfg))


def _arch(cfg: ExperimentConfig) -> ArchRecord:
    m = cfg.model
    return get_arch_record(
        m.name_or_path,
        task=m.task,
        num_labels=m.num_labels,
        revision=m.revision,
        trust_remote_code=m.trust_remote_code,
    )


def plan_phases(cfg: ExperimentConfig, phases: list[str] | None = None) -> tuple[list[PhasePlan], list[str]]:
    """Each phase planned at the base config's rank, alpha and layers, in the order asked; plus
    notes (the label count inferred, a phase this architecture lacks)."""
    notes: list[str] = []
    if cfg.model.task == "seq-cls" and cfg.model.num_labels is None:
        num_labels, note = infer_num_labels(cfg)
        cfg = replace(cfg, model=replace(cfg.model, num_labels=num_labels))
        notes.append(note)
    targets = phase_targets(_arch(cfg))
    if phases is None:
        phases = [p for p in PHASES if p in targets]
        notes += [
            f"{cfg.model.name_or_path} has no `{p}` phase: its MLP has no separate widening projection"
            for p in PHASES
            if p not in targets
        ]
    missing = [p for p in phases if p not in targets]
    if missing:
        raise ConfigError(
            [
                Problem(
                    str(cfg.source),
                    TARGET_KEY,
                    f"{cfg.model.name_or_path} has no `{p}` phase (no module of the class it adds)",
                    "use --phases " + ",".join(targets),
                )
                for p in missing
            ]
        )
    out: list[PhasePlan] = []
    before: list[str] = []
    for phase in phases:
        names = targets[phase]
        plan = plan_experiment(with_targets(cfg, names), with_options=False)
        out.append(
            PhasePlan(
                name=phase,
                target_modules=names,
                added=[n for n in names if n not in before],
                trainable_params=plan.counts.trainable_params,
                lora_params=plan.counts.lora_params,
                modules=len(plan.match.targets),
                adapter_bytes=plan.adapter_bytes,
                plan=plan,
                warnings=list(plan.warnings),
            )
        )
        before = names
    return out, notes
