"""Build a model on PyTorch's meta device and record its modules as PEFT will see them.

The meta device allocates no memory and reads no weights, so even a 14B model is built in a couple of
seconds from its config.json alone. torch and transformers are imported inside the functions: a
plan served from the record cache must never pay for importing them.
"""

from __future__ import annotations

import importlib.metadata
from typing import TYPE_CHECKING, Any

from loralab.arch.exaone import llama_equivalent, rename_record
from loralab.arch.hf import AUTO_CLASSES, auto_class, hf_config_from_dict, known_model_type
from loralab.arch.kinds import HEAD_NAMES, PEFT_SEQ_CLS_HEAD_NAMES, in_subtree, is_norm_class, module_kind
from loralab.arch.records import ArchRecord, ModuleRecord, ParamRecord, peft_layer_index
from loralab.arch.resolve import hub_load_kwargs
from loralab.errors import LoralabError

if TYPE_CHECKING:
    from torch import nn

TASKS = ("seq-cls", "causal-lm", "seq2seq")

# A seq-cls record is built with a prime number of labels that no real dimension uses, so the
# label dimension can be found again and substituted (`ArchRecord.with_num_labels`): one cached
# record then serves every num_labels. The next prime is tried if a model happens to use one.
LABEL_SENTINELS = (7919, 7927, 7933, 7937, 7949, 7951)


class ArchitectureError(LoralabError):
    """The config cannot be turned into a model (malformed, or an unknown architecture)."""


class UnsupportedTaskError(ArchitectureError):
    """The architecture has no model class for the requested task (e.g. seq2seq for a decoder-only model)."""


class RemoteCodeError(ArchitectureError):
    """The architecture needs the model repository's own code, and trust_remote_code is off."""


def introspect(
    config: dict[str, Any],
    *,
    task: str,
    num_labels: int | None,
    model_id: str,
    trust_remote_code: bool = False,
) -> ArchRecord:
    """The ArchRecord of `config` built for `task`.

    For seq-cls, `num_labels=None` gives the label-generic record: built with a sentinel label count
    (`label_dim`) that `with_num_labels(n)` replaces. With an explicit num_labels, `label_dim` is that
    number unless the model uses it for another dimension too (then None: nothing to substitute).
    """
    if task not in TASKS:
        raise UnsupportedTaskError(f"unknown task '{task}' (expected one of: {', '.join(TASKS)})")
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise ArchitectureError(f"config of '{model_id}' has no model_type")
    if model_type == "exaone":
        # EXAONE 3.x is not in transformers: introspect the shape-identical Llama, rename its modules.
        if task == "seq2seq":
            raise UnsupportedTaskError(
                f"'{model_id}' (exaone) is decoder-only: it has no seq2seq model class"
            )
        llama = introspect(llama_equivalent(config), task=task, num_labels=num_labels, model_id=model_id)
        return rename_record(llama)

    if task != "seq-cls":
        model = build_meta_model(
            config, task=task, num_labels=None, model_id=model_id, trust=trust_remote_code
        )
        return record_from_model(model, config=config, model_id=model_id, task=task, num_labels=None)
    if num_labels is not None:
        model = build_meta_model(
            config, task=task, num_labels=num_labels, model_id=model_id, trust=trust_remote_code
        )
        rec = record_from_model(model, config=config, model_id=model_id, task=task, num_labels=num_labels)
        rec.label_dim = None if label_dim_collides(rec, num_labels) else num_labels
        return rec
    for sentinel in LABEL_SENTINELS:
        model = build_meta_model(
            config, task=task, num_labels=sentinel, model_id=model_id, trust=trust_remote_code
        )
        rec = record_from_model(model, config=config, model_id=model_id, task=task, num_labels=sentinel)
        if not label_dim_collides(rec, sentinel):
            rec.label_dim = sentinel
            return rec
    raise ArchitectureError(f"'{model_id}' uses every label sentinel {LABEL_SENTINELS} as a dimension")


def label_dim_collides(rec: ArchRecord, dim: int) -> bool:
    """Whether `dim` appears anywhere outside the classification head (so it cannot be substituted)."""
    heads = [h for h in HEAD_NAMES if rec.module(h) is not None]
    for m in rec.modules:
        if in_subtree(m.name, heads):
            continue
        if dim in (m.in_features, m.out_features) or any(dim in p.shape for p in m.params):
            return True
    return False


def versions() -> dict[str, str]:
    """Installed transformers/torch versions, read without importing either."""
    out = {}
    for dist in ("transformers", "torch"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "absent"
    return out


# ---- building --------------------------------------------------------------------------------


def build_meta_model(
    config: dict[str, Any], *, task: str, num_labels: int | None, model_id: str, trust: bool = False
) -> nn.Module:
    """The transformers model for `task` on the meta device (no memory, no weights)."""
    # torch/transformers: seconds to import; only a record cache miss builds a model
    import torch
    import transformers

    model_type = str(config.get("model_type"))
    auto = auto_class(task)
    if known_model_type(config):
        try:
            cfg = hf_config_from_dict(config)
        except (TypeError, ValueError, KeyError) as e:
            raise ArchitectureError(f"config of '{model_id}' is not a valid {model_type} config: {e}") from e
        if type(cfg) not in auto._model_mapping:
            raise UnsupportedTaskError(
                f"'{model_id}' ({model_type}) has no {task} model class in transformers "
                f"{transformers.__version__} ({AUTO_CLASSES[task]} does not support it)"
            )
    elif not trust:
        raise RemoteCodeError(
            f"model type '{model_type}' of '{model_id}' is not built into transformers "
            f"{transformers.__version__}; its code lives in the model repository and trust_remote_code is "
            "off (set model.trust_remote_code: true to run that code, only for repositories you trust)"
        )
    else:
        cfg = _remote_config(model_id, model_type)
        if AUTO_CLASSES[task] not in (getattr(cfg, "auto_map", None) or {}):
            raise UnsupportedTaskError(
                f"'{model_id}' ({model_type}, remote code) has no {task} model class "
                f"({AUTO_CLASSES[task]} is not in its auto_map)"
            )
    if num_labels is not None:
        cfg.num_labels = num_labels
    try:
        with torch.device("meta"):
            model: nn.Module = auto.from_config(cfg, trust_remote_code=trust)
    except ValueError as e:
        if "Unrecognized configuration class" in str(e):
            raise UnsupportedTaskError(f"'{model_id}' ({model_type}) has no {task} model class") from e
        raise
    return model


def _remote_config(model_id: str, model_type: str) -> Any:
    # torch/transformers: seconds to import; only a record cache miss builds a model
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(
            model_id, trust_remote_code=True, **hub_load_kwargs(model_id, what="remote code")
        )
    except Exception as e:  # any failure to fetch or run the repository's code
        raise ArchitectureError(
            f"cannot load the remote code of '{model_id}' (model type '{model_type}'): {e}"
        ) from e


# ---- recording -------------------------------------------------------------------------------


def record_from_model(
    model: nn.Module, *, config: dict[str, Any], model_id: str, task: str, num_labels: int | None
) -> ArchRecord:
    """Every module of `model` (the keys of `named_modules()`), with direct parameters and ties."""
    modules_by_id: dict[int, str] = {}
    for name, mod in model.named_modules():
        modules_by_id.setdefault(id(mod), name)
    input_embedding = _embedding_name(model, "get_input_embeddings", modules_by_id)
    output_embedding = _embedding_name(model, "get_output_embeddings", modules_by_id)
    if output_embedding == input_embedding:
        output_embedding = None  # a model returning its input table as output is not a separate head
    top = {name for name, _ in model.named_children()}
    heads = [h for h in HEAD_NAMES if h in top]
    head_prefixes = heads + ([output_embedding] if output_embedding else [])
    modules, total = _walk(model, head_prefixes)
    seq_cls_head = None
    if task == "seq-cls":
        seq_cls_head = next((h for h in (*PEFT_SEQ_CLS_HEAD_NAMES, "classification_head") if h in top), None)
    stacks = _layer_stacks(model)
    notes = []
    if seq_cls_head is not None and seq_cls_head not in PEFT_SEQ_CLS_HEAD_NAMES:
        notes.append(
            f"the classification head '{seq_cls_head}' is not in PEFT's SEQ_CLS_HEAD_NAMES "
            f"{list(PEFT_SEQ_CLS_HEAD_NAMES)}: PEFT does not add it to modules_to_save by itself"
        )
    dtype = config.get("dtype") or config.get("torch_dtype")
    return ArchRecord(
        model_id=model_id,
        model_type=str(config.get("model_type")),
        architecture=type(model).__name__,
        task=task,
        num_labels=num_labels if task == "seq-cls" else None,
        num_layers=max(stacks.values(), default=0),
        layers_per_stack=stacks,
        total_params=total,
        modules=modules,
        output_embedding=output_embedding,
        input_embedding=input_embedding,
        seq_cls_head=seq_cls_head,
        config_dtype=str(dtype) if dtype is not None else None,
        is_encoder_decoder=bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False)),
        versions=versions(),
        notes=notes,
    )


def _embedding_name(model: nn.Module, getter: str, modules_by_id: dict[int, str]) -> str | None:
    fn = getattr(model, getter, None)
    if fn is None:
        return None
    try:
        mod = fn()
    except (NotImplementedError, AttributeError):
        return None
    return modules_by_id.get(id(mod)) if mod is not None else None


def _walk(model: nn.Module, head_prefixes: list[str]) -> tuple[list[ModuleRecord], int]:
    # torch/transformers: seconds to import; only a record cache miss builds a model
    from torch import nn
    from transformers.pytorch_utils import Conv1D

    seen: dict[int, str] = {}  # id(parameter) -> first full name
    total = 0
    records = []
    for name, mod in model.named_modules():
        params = []
        for pname, p in mod.named_parameters(recurse=False):
            full = f"{name}.{pname}" if name else pname
            tied = seen.get(id(p))
            if tied is None:
                seen[id(p)] = full
                total += p.numel()
            params.append(ParamRecord(pname, tuple(int(d) for d in p.shape), tied))
        in_f = out_f = None
        if isinstance(mod, Conv1D):  # weight stored transposed: (in, out)
            in_f, out_f = int(mod.weight.shape[0]), int(mod.weight.shape[1])
        elif isinstance(mod, nn.Linear):
            in_f, out_f = int(mod.weight.shape[1]), int(mod.weight.shape[0])
        elif isinstance(mod, nn.Embedding):
            in_f, out_f = int(mod.num_embeddings), int(mod.embedding_dim)
        cls = type(mod).__name__
        is_norm = isinstance(mod, (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)) or is_norm_class(cls)
        kind = module_kind(
            name, is_embedding=isinstance(mod, nn.Embedding), is_norm=is_norm, head_prefixes=head_prefixes
        )
        records.append(
            ModuleRecord(
                name=name,
                cls=cls,
                kind=kind,
                layer=peft_layer_index(name),
                in_features=in_f,
                out_features=out_f,
                params=tuple(params),
                linear=isinstance(mod, (nn.Linear, Conv1D)),
            )
        )
    return records, total


def _layer_stacks(model: nn.Module) -> dict[str, int]:
    """ModuleLists of transformer blocks (not lists nested inside a block, such as MoE experts)."""
    # torch/transformers: seconds to import; only a record cache miss builds a model
    from torch import nn
    from transformers.pytorch_utils import Conv1D

    stacks = {}
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.ModuleList) or len(mod) == 0:
            continue
        if any(s.isdigit() for s in name.split(".")):
            continue
        first = mod[0]
        if any(isinstance(m, (nn.Linear, Conv1D)) for m in first.modules()):
            stacks[name] = len(mod)
    return stacks
