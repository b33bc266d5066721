"""Plain records of a model's modules and parameters: what introspection produces, what planning reads.

These records are the boundary between the torch world and the arithmetic: `loralab.arch.introspect`
builds a model on PyTorch's meta device and writes an `ArchRecord`; everything in `loralab.plan`
works on the record alone, so a plan of a known architecture never imports torch (the same split as
litgpt's torch-free `config.py`). Records are JSON-serialisable and cached (`loralab.arch.cache`).

Names follow PyTorch and PEFT: `name` is the module's key in `model.named_modules()` (what PEFT
calls `key` when it matches `target_modules`), `in_features`/`out_features` as nn.Linear has them
(for GPT-2's Conv1D, whose weight is stored transposed, they are still input and output widths).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

# Bump when the record layout changes: it is part of every cache key.
RECORD_SCHEMA_VERSION = 1

KINDS = ("attention", "mlp", "head", "embedding", "norm", "other")

# PEFT's default layer-index rule (peft.tuners.tuners_utils.check_target_module_exists): the first
# numbered segment of the key is the layer index, e.g. "model.layers.25.self_attn.q_proj" -> 25.
_DEFAULT_LAYER_RE = re.compile(r".*?\.[^.]*\.(?P<idx>\d+)\.")


def peft_layer_index(name: str) -> int | None:
    """The layer index PEFT assigns to a module key when `layers_pattern` is not given."""
    m = _DEFAULT_LAYER_RE.match(name)
    return int(m.group("idx")) if m else None


def name_pattern(name: str) -> str:
    """A module name with its numeric segments blanked, so one row stands for every layer:
    "model.layers.25.self_attn.q_proj" -> "model.layers.N.self_attn.q_proj"."""
    return ".".join("N" if p.isdigit() else p for p in name.split("."))


@dataclass(frozen=True)
class ParamRecord:
    """One parameter registered directly on a module (`module.named_parameters(recurse=False)`)."""

    name: str  # local name: "weight", "bias", "lora_magnitude"...
    shape: tuple[int, ...]
    # Full name of the parameter this one is the same tensor as (tied weights), else None.
    # A tied parameter is counted once, at the first name `named_parameters()` yields.
    tied_to: str | None = None

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class ModuleRecord:
    """One module of the model, with its direct parameters."""

    name: str
    cls: str  # class name: "Linear", "Conv1D", "Embedding", "Qwen3RMSNorm", "ModuleList", ...
    kind: str  # one of KINDS
    layer: int | None  # PEFT's default layer index of this key (None outside numbered blocks)
    in_features: int | None = None  # Linear/Conv1D: input width; Embedding: num_embeddings
    out_features: int | None = None  # Linear/Conv1D: output width; Embedding: embedding_dim
    params: tuple[ParamRecord, ...] = ()
    # True for nn.Linear and transformers' Conv1D: the classes PEFT's "all-linear" collects.
    linear: bool = False

    @property
    def has_bias(self) -> bool:
        return any(p.name == "bias" for p in self.params)

    @property
    def bias_numel(self) -> int:
        return sum(p.numel for p in self.params if p.name == "bias")

    @property
    def weight_numel(self) -> int:
        return sum(p.numel for p in self.params if p.name == "weight")

    @property
    def own_numel(self) -> int:
        """Direct parameters, tied ones included (a tied lm_head still has a weight)."""
        return sum(p.numel for p in self.params)

    @property
    def is_embedding(self) -> bool:
        # By kind, not class name: subclasses such as BART's BartScaledWordEmbedding are embeddings too.
        return self.kind == "embedding"


@dataclass
class ArchRecord:
    """The modules of one architecture built for one task, as PEFT will see them."""

    model_id: str  # what the user named (hub id, folder or bundled name)
    model_type: str  # config.model_type ("qwen3", "gpt2", ...)
    architecture: str  # class built for the task ("Qwen3ForSequenceClassification")
    task: str  # seq-cls | causal-lm | seq2seq
    num_labels: int | None
    num_layers: int  # blocks in the longest stack (what layers_to_transform indexes)
    layers_per_stack: dict[str, int]  # e.g. {"model.layers": 36} or {"model.encoder.layers": 6, ...}
    total_params: int  # unique parameters of the base model (tied weights once)
    modules: list[ModuleRecord]
    output_embedding: str | None = None  # name of model.get_output_embeddings(), if any
    input_embedding: str | None = None  # name of model.get_input_embeddings()
    # The classification head the task creates (PEFT's SEQ_CLS_HEAD_NAMES found on the model).
    seq_cls_head: str | None = None
    config_dtype: str | None = None  # dtype the checkpoint is stored in (config.dtype/torch_dtype)
    is_encoder_decoder: bool = False
    versions: dict[str, str] = field(default_factory=dict)
    # Shapes equal to this value are the label dimension: substituted when num_labels differs
    # (so one cached record serves every num_labels; see `with_num_labels`).
    label_dim: int | None = None
    notes: list[str] = field(default_factory=list)

    # ---- lookups -------------------------------------------------------------------------
    def module(self, name: str) -> ModuleRecord | None:
        for m in self.modules:
            if m.name == name:
                return m
        return None

    @property
    def module_names(self) -> list[str]:
        return [m.name for m in self.modules]

    def linear_modules(self) -> list[ModuleRecord]:
        return [m for m in self.modules if m.linear]

    def unique_params(self) -> dict[str, int]:
        """Full parameter name -> numel, each tensor once (tied duplicates skipped)."""
        out: dict[str, int] = {}
        for m in self.modules:
            for p in m.params:
                if p.tied_to is None:
                    out[f"{m.name}.{p.name}" if m.name else p.name] = p.numel
        return out

    def subtree(self, prefix: str) -> list[ModuleRecord]:
        """The module called `prefix` and everything under it."""
        return [m for m in self.modules if m.name == prefix or m.name.startswith(prefix + ".")]

    # ---- label substitution --------------------------------------------------------------
    def with_num_labels(self, num_labels: int | None) -> ArchRecord:
        """The same record for another number of labels (only the head's label dimension changes)."""
        if self.label_dim is None or num_labels is None or num_labels == self.label_dim:
            return self
        old = self.label_dim

        def sub(shape: tuple[int, ...]) -> tuple[int, ...]:
            return tuple(num_labels if d == old else d for d in shape)

        mods = []
        for m in self.modules:
            params = tuple(ParamRecord(p.name, sub(p.shape), p.tied_to) for p in m.params)
            out_f = num_labels if m.out_features == old else m.out_features
            mods.append(ModuleRecord(m.name, m.cls, m.kind, m.layer, m.in_features, out_f, params, m.linear))
        rec = ArchRecord(**{**self.__dict__, "modules": mods, "num_labels": num_labels})
        rec.label_dim = num_labels
        rec.total_params = sum(rec.unique_params().values())
        return rec

    # ---- (de)serialisation ---------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        # Compact module encoding: params as [name, [shape], tied_to] triples.
        d["modules"] = [
            [
                m.name,
                m.cls,
                m.kind,
                m.layer,
                m.in_features,
                m.out_features,
                [[p.name, list(p.shape), p.tied_to] for p in m.params],
                m.linear,
            ]
            for m in self.modules
        ]
        d["schema"] = RECORD_SCHEMA_VERSION
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ArchRecord:
        d = dict(d)
        if d.pop("schema", None) != RECORD_SCHEMA_VERSION:
            raise ValueError("arch record written by another loralab version")
        mods = [
            ModuleRecord(
                name=n,
                cls=c,
                kind=k,
                layer=layer,
                in_features=i,
                out_features=o,
                params=tuple(ParamRecord(pn, tuple(ps), pt) for pn, ps, pt in params),
                linear=lin,
            )
            for n, c, k, layer, i, o, params, lin in d.pop("modules")
        ]
        return cls(modules=mods, **d)
