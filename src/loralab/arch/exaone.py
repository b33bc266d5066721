"""EXAONE 3.x records, derived from the equivalent Llama model and renamed to EXAONE's module keys.

Why: model_type "exaone" is not part of transformers 5.x (only exaone4/exaone4_5/exaone_moe are), and
the real classes live in LG AI Research's repository code, which loralab never runs unasked. The
architecture is Llama's module for module (RMSNorm, SwiGLU MLP, GQA attention, no biases), so a
Llama built from the same numbers has exactly the same shapes and parameter count; only the keys
differ, and the keys are what PEFT matches. The renaming below reproduces the checkpoint's layout:
transformer.wte, transformer.h.N.{ln_1, attn.attention.{q,k,v,out}_proj, ln_2, mlp.{c_fc_0, c_fc_1,
c_proj}}, transformer.ln_f, lm_head / score. Parameter-free helpers (activation, rotary embedding)
keep best-effort names; nothing is counted or targeted through them.
"""

from __future__ import annotations

import re
from typing import Any

from loralab.arch.records import ArchRecord, ModuleRecord, ParamRecord, peft_layer_index

# EXAONE config keys that Llama's config spells differently.
_CONFIG_RENAMES = {
    "num_layers": "num_hidden_layers",
    "layer_norm_epsilon": "rms_norm_eps",
    "activation_function": "hidden_act",
}
_DROP_KEYS = ("model_type", "architectures", "auto_map")

_TOP_RENAMES = {
    "model": "transformer",
    "model.embed_tokens": "transformer.wte",
    "model.layers": "transformer.h",
    "model.norm": "transformer.ln_f",
    "model.rotary_emb": "transformer.rotary",
}
# Suffixes inside block N, in EXAONE's definition order (ExaoneBlock: ln_1, attn, ln_2, mlp).
_BLOCK_RENAMES = {
    "": "",
    "input_layernorm": "ln_1",
    "self_attn": "attn.attention",
    "self_attn.q_proj": "attn.attention.q_proj",
    "self_attn.k_proj": "attn.attention.k_proj",
    "self_attn.v_proj": "attn.attention.v_proj",
    "self_attn.o_proj": "attn.attention.out_proj",
    "post_attention_layernorm": "ln_2",
    "mlp": "mlp",
    "mlp.gate_proj": "mlp.c_fc_0",
    "mlp.up_proj": "mlp.c_fc_1",
    "mlp.down_proj": "mlp.c_proj",
    "mlp.act_fn": "mlp.act",
}
_BLOCK_ORDER = ["", "ln_1", "attn", *[v for v in _BLOCK_RENAMES.values() if v not in ("", "ln_1")]]
_CLASS_RENAMES = {
    "LlamaForCausalLM": "ExaoneForCausalLM",
    "LlamaForSequenceClassification": "ExaoneForSequenceClassification",
    "LlamaModel": "ExaoneModel",
    "LlamaDecoderLayer": "ExaoneBlock",
    "LlamaAttention": "ExaoneSelfAttention",
    "LlamaMLP": "ExaoneGatedMLP",
    "LlamaRMSNorm": "ExaoneRMSNorm",
    "LlamaRotaryEmbedding": "ExaoneRotaryEmbedding",
}
_BLOCK_RE = re.compile(r"^model\.layers\.(\d+)(?:\.(.*))?$")


def llama_equivalent(config: dict[str, Any]) -> dict[str, Any]:
    out = {_CONFIG_RENAMES.get(k, k): v for k, v in config.items() if k not in _DROP_KEYS}
    out.update(model_type="llama", attention_bias=False, mlp_bias=False)
    return out


def exaone_name(llama_name: str) -> str:
    m = _BLOCK_RE.match(llama_name)
    if m:
        suffix = _BLOCK_RENAMES.get(m.group(2) or "")
        if suffix is None:
            raise KeyError(f"no EXAONE name for '{llama_name}'")
        return f"transformer.h.{m.group(1)}" + (f".{suffix}" if suffix else "")
    return _TOP_RENAMES.get(llama_name, llama_name)


def _rename_module(m: ModuleRecord) -> ModuleRecord:
    name = exaone_name(m.name)
    params = tuple(
        ParamRecord(p.name, p.shape, _rename_param(p.tied_to) if p.tied_to else None) for p in m.params
    )
    cls = _CLASS_RENAMES.get(m.cls, m.cls)
    return ModuleRecord(
        name, cls, m.kind, peft_layer_index(name), m.in_features, m.out_features, params, m.linear
    )


def _rename_param(full: str) -> str:
    module, _, pname = full.rpartition(".")
    return f"{exaone_name(module)}.{pname}"


def rename_record(rec: ArchRecord) -> ArchRecord:
    """The Llama record `rec` with EXAONE's module keys, classes and block layout."""
    out: list[ModuleRecord] = []
    block: list[ModuleRecord] = []

    def flush() -> None:
        if not block:
            return
        prefix = block[0].name
        wrapper_name = f"{prefix}.attn"
        wrapper = ModuleRecord(
            wrapper_name, "ExaoneAttentionBlock", "attention", peft_layer_index(wrapper_name)
        )
        items = [*block, wrapper]
        items.sort(key=lambda m: _BLOCK_ORDER.index(m.name[len(prefix) :].lstrip(".")))
        out.extend(items)
        block.clear()

    for m in rec.modules:
        renamed = _rename_module(m)
        match = _BLOCK_RE.match(m.name)
        if match is None or match.group(2) is None:
            flush()  # outside a block, or "model.layers.N" itself: a new block starts
        (block if match else out).append(renamed)
    flush()
    return ArchRecord(
        **{
            **rec.__dict__,
            "model_type": "exaone",
            "architecture": _CLASS_RENAMES.get(rec.architecture, rec.architecture),
            "modules": out,
            "layers_per_stack": {exaone_name(k): v for k, v in rec.layers_per_stack.items()},
            "output_embedding": exaone_name(rec.output_embedding) if rec.output_embedding else None,
            "input_embedding": exaone_name(rec.input_embedding) if rec.input_embedding else None,
            "notes": [
                *rec.notes,
                "EXAONE 3.x is not in transformers: record derived from the shape-identical Llama model "
                "and renamed to EXAONE's module keys",
            ],
        }
    )
