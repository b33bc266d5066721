"""Which modules a LoRA config adapts, decided the way PEFT decides it, without torch.

A port of the selection steps of `peft.tuners.tuners_utils.BaseTuner.inject_adapter` (peft 0.21):
default targets per model type, the "all-linear" shorthand, the suffix minimisation PEFT applies to
long target lists, `check_target_module_exists` (exclude_modules, the modules_to_save guard, regex
vs list targets, layers_to_transform/layers_pattern), and `_set_trainable`'s modules_to_save match.
Each step cites the PEFT function it mirrors; tests compare the result with PEFT on real models.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

from loralab.arch.records import ArchRecord, ModuleRecord
from loralab.errors import PlanError, Problem
from loralab.plan.spec import LoraSpec

# peft.utils.constants.MIN_TARGET_MODULES_FOR_OPTIMIZATION
MIN_TARGET_MODULES_FOR_OPTIMIZATION = 20


@cache
def _default_targets() -> dict[str, list[str]]:
    """PEFT's TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING, snapshotted (tests check it is current)."""
    text = resources.files("loralab.plan").joinpath("peft_defaults.json").read_text()
    data: dict[str, list[str]] = json.loads(text)["lora_target_modules"]
    return data


@dataclass
class TargetMatch:
    """One adapted module: which target entry selected it and its rank/alpha."""

    module: ModuleRecord
    target: str  # the target_modules entry (or regex) that matched
    r: int
    lora_alpha: float


@dataclass
class MatchResult:
    targets: list[TargetMatch]
    modules_to_save: list[str]  # names of the modules wrapped by ModulesToSaveWrapper
    excluded: list[str]  # modules a target matched but exclude_modules / modules_to_save removed
    target_modules: list[str] | str  # as PEFT ends up with them (defaults and all-linear expanded)
    warnings: list[str] = field(default_factory=list)

    @property
    def target_names(self) -> list[str]:
        return [t.module.name for t in self.targets]


def layer_index(name: str, layers_pattern: list[str] | None) -> int | None:
    """The layer index PEFT reads from a key (check_target_module_exists)."""
    if not layers_pattern:
        # Lazy: the first numbered segment is the layer (not an MoE expert index further in).
        m = re.match(r".*?\.[^.]*\.(?P<idx>\d+)\.", name)
    else:
        m = None
        for pattern in layers_pattern:
            m = re.match(rf"(?:^|.*?\.){pattern}\.(?P<idx>\d+)\.", name)
            if m is not None:
                break
    return int(m.group("idx")) if m else None


def _expand_all_linear(arch: ArchRecord, spec: LoraSpec) -> list[str]:
    """peft.tuners.tuners_utils._maybe_include_all_linear_layers: every Linear/Conv1D but the output head."""
    names = {m.name for m in arch.modules if m.linear}
    if arch.output_embedding is not None:
        names.discard(arch.output_embedding)
    elif (spec.task_type or "") == "SEQ_CLS" and arch.seq_cls_head is not None:
        # issue huggingface/peft#2027: the classifier head of a classification model is not a target.
        names.discard(arch.seq_cls_head)
    return sorted(names)


def _minimal_suffixes(targets: list[str], others: list[str]) -> list[str]:
    """peft.tuners.tuners_utils._find_minimal_target_modules: shortest suffixes that still separate."""

    def suffixes(s: str) -> list[str]:
        parts = s.split(".")
        return [".".join(parts[i:]) for i in range(len(parts))][::-1]

    other_suffixes = {suf for item in others for suf in suffixes(item)}
    required: set[str] = set()
    for item, sufs in sorted(((t, suffixes(t)) for t in set(targets)), key=lambda tup: tup[1]):
        for suf in sufs:
            if suf in required or suf in other_suffixes:
                continue
            if not any(item.endswith("." + req) for req in required):
                required.add(suf)
                break
    return sorted(required) if required else sorted(set(targets))


def resolve_target_modules(arch: ArchRecord, spec: LoraSpec, source: str = "<config>") -> list[str] | str:
    """target_modules as PEFT has them right before matching keys."""
    tm = spec.target_modules
    if tm is None:
        defaults = _default_targets().get(arch.model_type)
        if defaults is None:
            raise PlanError(
                [
                    Problem(
                        source,
                        "lora.config.target_modules",
                        f"PEFT has no default target modules for model type {arch.model_type!r}",
                        "set lora.config.target_modules (e.g. all-linear, or names from `loralab modules`)",
                    )
                ]
            )
        tm = list(defaults)
    elif spec.uses_all_linear:
        tm = _expand_all_linear(arch, spec)
    if isinstance(tm, list) and len(set(tm)) >= MIN_TARGET_MODULES_FOR_OPTIMIZATION:
        # PEFT condenses long lists to suffixes; this matters because exact keys skip the layer filter.
        tm_set = set(tm)
        suffix_tuple = tuple("." + s for s in tm_set)
        others = [n for n in arch.module_names if n not in tm_set and not n.endswith(suffix_tuple)]
        minimal = _minimal_suffixes(list(tm_set), others)
        if len(minimal) < len(tm_set):
            tm = minimal
    return tm


def _matched_entry(spec: LoraSpec, tm: list[str] | str, key: str) -> str | None:
    """peft check_target_module_exists, returning which entry matched (None when nothing did)."""
    if isinstance(tm, str):
        return tm if re.fullmatch(tm, key) else None
    if key in tm:
        return key  # an exact key bypasses the layer filter in PEFT too
    entry = next((t for t in tm if key.endswith(f".{t}")), None)
    if entry is None:
        return None
    layers = spec.layers_to_transform
    if layers is not None and len(layers) != 0:
        idx = layer_index(key, spec.layers_pattern)
        if idx is None or idx not in layers:
            return None
    return entry


def _is_excluded(spec: LoraSpec, mts: list[str], key: str) -> bool:
    ex = spec.exclude_modules
    if ex:
        if isinstance(ex, str):
            if re.fullmatch(ex, key):
                return True
        elif key in ex or any(key.endswith(f".{e}") for e in ex):
            return True
    # Adapters never go inside modules_to_save modules (PEFT's guard against wrapper conflicts).
    return any(re.match(rf"(^|.*\.){m}($|\..*)", key) for m in mts)


def _pattern_value(patterns: dict[str, float], key: str) -> str | None:
    """peft.utils.other.get_pattern_key: the first pattern that matches the end of the key."""
    for pat in patterns:
        if re.match(rf"(.*\.)?({pat})$", key):
            return pat
    return None


def match_modules(arch: ArchRecord, spec: LoraSpec, source: str = "<config>") -> MatchResult:
    """Select adapted modules and modules_to_save exactly as `get_peft_model` would."""
    mts = spec.effective_modules_to_save()
    tm = resolve_target_modules(arch, spec, source)
    targets: list[TargetMatch] = []
    excluded: list[str] = []
    unsupported: list[ModuleRecord] = []
    for m in arch.modules:
        if not m.name:
            continue
        if _is_excluded(spec, mts, m.name):
            if _matched_entry(spec, tm, m.name) is not None:
                excluded.append(m.name)
            continue
        entry = _matched_entry(spec, tm, m.name)
        if entry is None:
            continue
        if not (m.linear or m.is_embedding):
            unsupported.append(m)
            continue
        rk = _pattern_value({k: float(v) for k, v in spec.rank_pattern.items()}, m.name)
        ak = _pattern_value(spec.alpha_pattern, m.name)
        r = spec.rank_pattern[rk] if rk is not None else spec.r
        alpha = spec.alpha_pattern[ak] if ak is not None else spec.lora_alpha
        targets.append(TargetMatch(m, entry, r, alpha))
    if unsupported:
        raise PlanError(
            [
                Problem(
                    source,
                    "lora.config.target_modules",
                    f"{m.name} is a {m.cls}; LoRA adapts Linear, Conv1D and Embedding layers only",
                    "target its Linear children instead (see `loralab modules`)",
                )
                for m in unsupported[:5]
            ]
        )
    saved = _match_modules_to_save(arch, mts)
    return MatchResult(targets=targets, modules_to_save=saved, excluded=excluded, target_modules=tm)


def _match_modules_to_save(arch: ArchRecord, names: list[str]) -> list[str]:
    """peft.utils.other._set_trainable: plain `key.endswith(name)`, outermost match wins."""
    out: list[str] = []
    for m in arch.modules:
        if not m.name or not any(m.name.endswith(n) for n in names):
            continue
        if any(m.name.startswith(o + ".") for o in out):
            continue  # already inside a wrapped module
        out.append(m.name)
    return out
