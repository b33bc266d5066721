"""`plan`: exact trainable parameters of a LoRA config on an architecture, with what matched and why.

Pure functions over an `ArchRecord` (no torch). The steps a person would do by hand in seed 000 §2
and seed 002 §3.4: resolve the layers, find the modules each target name matches, count, compare
with the alternatives (attention-only, +MLP input projections, all linear layers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loralab.arch.records import ArchRecord, ModuleRecord, name_pattern
from loralab.errors import PlanError, Problem
from loralab.plan.count import DTYPE_BYTES, Counts, count
from loralab.plan.matching import MatchResult, TargetMatch, match_modules
from loralab.plan.options import option_sets
from loralab.plan.spec import LoraSpec

# PEFT casts adapter weights to float32 even on a bf16/fp16 base (get_peft_model's
# autocast_adapter_dtype=True), so the adapter file stores LoRA tensors in fp32.
ADAPTER_DTYPE = "float32"


@dataclass
class OptionRow:
    name: str
    target_modules: list[str]
    trainable_params: int
    lora_params: int
    adapter_bytes: int
    share_of_base: float
    current: bool = False


@dataclass
class Plan:
    arch: ArchRecord
    spec: LoraSpec
    match: MatchResult
    counts: Counts
    load_dtype: str
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    options: list[OptionRow] = field(default_factory=list)
    # target entry -> module names it matched (what seed 002 §3.4 prints by hand)
    matched_by_target: dict[str, list[str]] = field(default_factory=dict)

    @property
    def adapter_bytes(self) -> int:
        return adapter_bytes(self.counts, self.load_dtype)


def adapter_bytes(c: Counts, load_dtype: str) -> int:
    """adapter_model.safetensors payload: LoRA tensors in fp32, copied/base tensors in the load dtype."""
    base = DTYPE_BYTES.get(load_dtype, 4)
    return (
        c.lora_params * DTYPE_BYTES[ADAPTER_DTYPE]
        + (c.bias_params + c.modules_to_save_params + c.saved_extra_params) * base
    )


def _stack_length(arch: ArchRecord, layers_pattern: list[str] | None, source: str) -> tuple[int, str]:
    """Number of layers negative indices count back from, and which stack that is."""
    stacks = arch.layers_per_stack
    if layers_pattern:
        for prefix, n in stacks.items():
            if prefix.split(".")[-1] in layers_pattern:
                return n, prefix
    lengths = set(stacks.values())
    if len(lengths) > 1:
        raise PlanError(
            [
                Problem(
                    source,
                    "lora.config.layers_to_transform",
                    "negative layer indices are ambiguous: the stacks have different lengths "
                    + ", ".join(f"{k}={v}" for k, v in stacks.items()),
                    "write non-negative indices, or set layers_pattern to pick one stack",
                )
            ]
        )
    if not stacks:
        return arch.num_layers, "layers"
    prefix, n = next(iter(stacks.items()))
    return n, prefix


def resolve_layers(arch: ArchRecord, spec: LoraSpec, source: str) -> None:
    """Resolve negative `layers_to_transform` (seed 001 writes [-6..-1]) against the layer count.

    PEFT itself compares the raw integers with the layer index in the key, so a negative index
    silently matches nothing; loralab resolves it Python-style and records how.
    """
    if not spec.layers_to_transform:
        return
    n, prefix = _stack_length(arch, spec.layers_pattern, source)
    resolved: list[int] = []
    bad: list[int] = []
    for i in spec.layers_to_transform:
        j = i + n if i < 0 else i
        if not 0 <= j < n:
            bad.append(i)
            continue
        resolved.append(j)
        spec.layer_resolution.append((i, j))
    if bad:
        raise PlanError(
            [
                Problem(
                    source,
                    "lora.config.layers_to_transform",
                    f"layer indices {bad} are out of range: {arch.model_id} has {n} layers in {prefix}",
                    f"use 0..{n - 1}, or -{n}..-1 counted from the last layer",
                )
            ]
        )
    spec.layers_to_transform = sorted(set(resolved))


def _suffix_names(arch: ArchRecord, modules: list[ModuleRecord]) -> list[str]:
    return sorted({m.name.rsplit(".", 1)[-1] for m in modules})


def _check_targets(arch: ArchRecord, spec: LoraSpec, match: MatchResult, source: str) -> None:
    """Every target name the user wrote must adapt something; else say what exists."""
    problems: list[Problem] = []
    linear = _suffix_names(arch, [m for m in arch.modules if m.linear or m.is_embedding])
    if isinstance(spec.target_modules, list):
        hit = {t.target for t in match.targets}
        for name in spec.target_modules:
            if name in hit or name in match.excluded:
                continue
            anywhere = [m for m in arch.modules if m.name == name or m.name.endswith("." + name)]
            if anywhere and spec.layers_to_transform:
                msg = f"{name!r} exists but not in layers {spec.layers_to_transform}"
                fix = f"check layers_to_transform; {name} is in layers " + _layers_of(anywhere)
            elif anywhere:
                msg = f"{name!r} only matches modules excluded by exclude_modules/modules_to_save"
                fix = "remove it from target_modules or from the exclusion"
            else:
                msg = f"target {name!r} matches no module of {arch.model_id}"
                fix = "use one of: " + ", ".join(linear)
            problems.append(Problem(source, "lora.config.target_modules", msg, fix))
    elif not match.targets:
        problems.append(
            Problem(
                source,
                "lora.config.target_modules",
                f"{spec.target_modules!r} matches no module of {arch.model_id}",
                "use one of: " + ", ".join(linear),
            )
        )
    if problems:
        raise PlanError(problems)


def _layers_of(mods: list[ModuleRecord]) -> str:
    layers = sorted({m.layer for m in mods if m.layer is not None})
    if not layers:
        return "no numbered layer"
    return f"{layers[0]}..{layers[-1]}" if len(layers) > 2 else str(layers)


def kind_warnings(match: MatchResult) -> list[str]:
    """A target name that adapts modules of different kinds (GPT-2's c_proj: attention AND MLP)."""
    by_target: dict[str, dict[str, int]] = {}
    for t in match.targets:
        by_target.setdefault(t.target, {}).setdefault(t.module.kind, 0)
        by_target[t.target][t.module.kind] += 1
    out = []
    for target, kinds in by_target.items():
        if len(kinds) > 1:
            parts = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
            examples = sorted({name_pattern(t.module.name) for t in match.targets if t.target == target})
            out.append(
                f"target {target!r} matches modules of different kinds ({parts}); e.g. "
                + ", ".join(examples[:3])
                + f". To adapt one kind only, name it by a longer suffix (e.g. 'attn.{target}')."
            )
    return out


def build_plan(
    arch: ArchRecord,
    lora: dict[str, Any],
    *,
    source: str = "<config>",
    load_dtype: str | None = None,
    with_options: bool = True,
) -> Plan:
    spec = LoraSpec.from_dict(lora, source=source)
    resolve_layers(arch, spec, source)
    match = match_modules(arch, spec, source)
    _check_targets(arch, spec, match, source)
    counts = count(arch, spec, match)
    dtype = load_dtype if load_dtype in DTYPE_BYTES else (arch.config_dtype or "float32")
    plan = Plan(arch=arch, spec=spec, match=match, counts=counts, load_dtype=dtype)
    plan.warnings.extend(kind_warnings(match))
    plan.warnings.extend(_rank_warnings(match))
    plan.warnings.extend(_other_warnings(arch, spec, match, lora))
    if counts.saved_extra:
        extra_mb = counts.saved_extra_params * DTYPE_BYTES.get(dtype, 4) / 1e6
        plan.warnings.append(
            f"targeting {', '.join(counts.saved_extra)} makes PEFT save the layer's full base weight "
            f"with the adapter ({counts.saved_extra_params:,} parameters, {extra_mb:,.1f} MB in {dtype}; "
            "save_embedding_layers='auto'), so the adapter file is far larger than its LoRA weights"
        )
    for i, j in spec.layer_resolution:
        if i < 0:
            plan.notes.append(f"layers_to_transform {i} -> layer {j}")
    for t in match.targets:
        plan.matched_by_target.setdefault(t.target, []).append(t.module.name)
    if with_options:
        plan.options = option_rows(arch, lora, spec, plan)
    return plan


def option_rows(arch: ArchRecord, lora: dict[str, Any], spec: LoraSpec, plan: Plan) -> list[OptionRow]:
    current = set(plan.match.target_names)
    rows: list[OptionRow] = []
    for title, targets in option_sets(arch):
        alt = dict(lora)
        alt["target_modules"] = targets
        try:
            p = build_plan(arch, alt, load_dtype=plan.load_dtype, with_options=False)
        except PlanError:
            continue  # e.g. the chosen layers hold none of these modules
        rows.append(
            OptionRow(
                name=title,
                target_modules=targets,
                trainable_params=p.counts.trainable_params,
                lora_params=p.counts.lora_params,
                adapter_bytes=adapter_bytes(p.counts, plan.load_dtype),
                share_of_base=p.counts.share_of_base,
                current=set(p.match.target_names) == current,
            )
        )
    return rows


def _rank_warnings(match: MatchResult) -> list[str]:
    """r above a module's narrower side: B @ A is (out x r) @ (r x in), whose rank is at most
    min(in, out), so the rank beyond it adds parameters, memory and time but no capacity."""
    by_width: dict[int, list[TargetMatch]] = {}
    for t in match.targets:
        width = min(t.module.in_features or 0, t.module.out_features or 0)
        if width and t.r > width:
            by_width.setdefault(width, []).append(t)
    if not by_width:
        return []
    wasted = sum(
        (t.r - width) * ((t.module.in_features or 0) + (t.module.out_features or 0))
        for width, ts in by_width.items()
        for t in ts
    )
    ranks = sorted({t.r for ts in by_width.values() for t in ts})
    groups = "; ".join(
        f"min(in, out) {width} for "
        + _short(sorted({t.module.name.rsplit(".", 1)[-1] for t in ts}), 4)
        + f" ({len(ts)} modules)"
        for width, ts in sorted(by_width.items())
    )
    return [
        f"r {'/'.join(map(str, ranks))} exceeds the width of adapted layers: the update B·A of an "
        f"(out x in) layer has rank at most min(in, out), so {wasted:,} LoRA parameters add no "
        f"capacity ({groups}). Use r <= {min(by_width)} (usually far less)"
    ]


def _other_warnings(arch: ArchRecord, spec: LoraSpec, match: MatchResult, lora: dict[str, Any]) -> list[str]:
    out: list[str] = []
    mts_given = spec.modules_to_save or []
    for name in mts_given:
        if not any(m.name.endswith(name) for m in arch.modules):
            out.append(f"modules_to_save entry {name!r} matches no module; PEFT ignores it silently")
    if match.excluded:
        out.append(
            f"{len(match.excluded)} module(s) matched a target but were excluded: " + _short(match.excluded)
        )
    if spec.bias == "all":
        out.append("bias: all trains every bias in the model, not only those of adapted modules")
    if (spec.task_type or "") == "SEQ_CLS" and not match.modules_to_save:
        out.append("no classification head found for modules_to_save: the new head would stay random")
    return out


def _short(names: list[str], k: int = 3) -> str:
    s = ", ".join(names[:k])
    return s + (f" and {len(names) - k} more" if len(names) > k else "")
