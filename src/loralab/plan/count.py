"""Trainable-parameter arithmetic over module records: pure functions, no torch.

LoRA (Hu et al. 2021, arXiv:2106.09685) adds A (r x in) and B (out x r) to each adapted weight, so a
Linear/Conv1D costs r * (in + out); PEFT's Embedding adapter stores lora_embedding_A (r x num_embeddings)
and lora_embedding_B (embedding_dim x r). DoRA (Liu et al. 2024, arXiv:2402.09353) adds a magnitude
vector with one entry per output feature (embedding_dim for an Embedding; checked against PEFT).
`lora_bias` gives lora_B a bias of out_features.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from loralab.arch.records import ArchRecord, ModuleRecord
from loralab.plan.matching import MatchResult, TargetMatch
from loralab.plan.spec import LoraSpec

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}


@dataclass
class ModuleCount:
    name: str
    kind: str
    cls: str
    layer: int | None
    in_features: int
    out_features: int
    target: str  # which target_modules entry matched
    r: int
    lora_alpha: float
    lora_params: int  # A + B (+ lora_bias) (+ DoRA magnitude)
    bias_params: int  # base bias made trainable by `bias`


@dataclass
class Counts:
    modules: list[ModuleCount]
    lora_params: int
    bias_params: int
    modules_to_save_params: int
    modules_to_save: dict[str, int]  # wrapped module -> its (copied, trainable) parameters
    trainable_params: int
    total_params: int  # base model
    # Parameters written to adapter_model.safetensors beyond the trainable ones (PEFT saves the
    # embedding layers' base weights when an embedding/lm_head is targeted: save_embedding_layers="auto").
    saved_extra_params: int = 0
    saved_extra: list[str] = field(default_factory=list)

    @property
    def share_of_base(self) -> float:
        return self.trainable_params / self.total_params if self.total_params else 0.0

    def adapter_bytes(self, dtype: str = "float32") -> int:
        """Size of the adapter's tensors on disk (safetensors stores raw tensors plus a small header)."""
        return (self.trainable_params + self.saved_extra_params) * DTYPE_BYTES[dtype]


def lora_params_for(m: ModuleRecord, r: int, *, use_dora: bool, lora_bias: bool) -> int:
    """Adapter parameters LoRA adds to one module."""
    n_in, n_out = m.in_features or 0, m.out_features or 0
    n = r * (n_in + n_out)
    if m.is_embedding:
        # lora_bias is refused by PEFT for embeddings; DoRA's magnitude has embedding_dim entries.
        return n + (n_out if use_dora else 0)
    if lora_bias:
        n += n_out
    if use_dora:
        n += n_out
    return n


def _trainable_bias(
    arch: ArchRecord, spec: LoraSpec, targets: list[TargetMatch], saved: list[str]
) -> dict[str, int]:
    """Base-model biases that `bias` makes trainable (BaseTuner._mark_only_adapters_as_trainable).

    Inside a modules_to_save module the copy trains (counted with the copy) and PEFT freezes the
    original again when it wraps it, so those biases are not counted here."""
    if spec.bias == "none":
        return {}
    if spec.bias == "lora_only":
        return {t.module.name: t.module.bias_numel for t in targets if t.module.has_bias}
    out: dict[str, int] = {}
    for m in arch.modules:
        if any(m.name == s or m.name.startswith(s + ".") for s in saved):
            continue
        for p in m.params:
            if p.name == "bias" and p.tied_to is None:
                out[m.name] = out.get(m.name, 0) + p.numel
    return out


def _subtree_params(arch: ArchRecord, prefix: str) -> int:
    seen: set[str] = set()
    total = 0
    for m in arch.subtree(prefix):
        for p in m.params:
            full = f"{m.name}.{p.name}"
            key = p.tied_to or full
            if key not in seen:
                seen.add(key)
                total += p.numel
    return total


def count(arch: ArchRecord, spec: LoraSpec, match: MatchResult) -> Counts:
    biases = _trainable_bias(arch, spec, match.targets, match.modules_to_save)
    modules = [
        ModuleCount(
            name=t.module.name,
            kind=t.module.kind,
            cls=t.module.cls,
            layer=t.module.layer,
            in_features=t.module.in_features or 0,
            out_features=t.module.out_features or 0,
            target=t.target,
            r=t.r,
            lora_alpha=t.lora_alpha,
            lora_params=lora_params_for(t.module, t.r, use_dora=spec.use_dora, lora_bias=spec.lora_bias),
            bias_params=biases.get(t.module.name, 0),
        )
        for t in match.targets
    ]
    mts = {name: _subtree_params(arch, name) for name in match.modules_to_save}
    lora = sum(m.lora_params for m in modules)
    bias = sum(biases.values())
    trainable = lora + bias + sum(mts.values())
    extra, extra_names = _saved_embedding_layers(arch, match)
    return Counts(
        modules=modules,
        lora_params=lora,
        bias_params=bias,
        modules_to_save_params=sum(mts.values()),
        modules_to_save=mts,
        trainable_params=trainable,
        total_params=arch.total_params,
        saved_extra_params=extra,
        saved_extra=extra_names,
    )


def _saved_embedding_layers(arch: ArchRecord, match: MatchResult) -> tuple[int, list[str]]:
    """PEFT's save_embedding_layers="auto" (peft.utils.save_and_load.get_peft_model_state_dict):
    when target_modules names an embedding layer ("embed_tokens"/"lm_head"), the base weights of the
    targeted input/output embeddings are saved with the adapter. Seed 004's 160 MB adapter is this."""
    tm = match.target_modules
    named = isinstance(tm, list) and any(k in tm for k in ("embed_tokens", "lm_head"))
    if isinstance(tm, str):
        named = any(
            re.fullmatch(tm, m.name)
            for m in arch.modules
            if re.match(r"(.*\.)?(embed_tokens|lm_head)$", m.name)
        )
    if not named:
        return 0, []
    targeted = set(match.target_names)
    out, names = 0, []
    for emb in (arch.input_embedding, arch.output_embedding):
        if emb and emb in targeted and emb not in names:
            m = arch.module(emb)
            if m is not None:
                out += m.weight_numel + m.bias_numel
                names.append(emb)
    return out, names
