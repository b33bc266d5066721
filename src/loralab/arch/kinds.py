"""Which part of a transformer a module belongs to, from its key and class alone (torch-free).

The rules are name heuristics over the key PEFT matches, checked against the architectures loralab
bundles: Llama/Qwen/Mistral/Gemma2 (`self_attn`, `mlp`), GPT-2 (`attn`, `mlp`), GPT-NeoX
(`attention`, `mlp`), BERT (`attention.*` vs `intermediate`/`output`), BART (`self_attn`/
`encoder_attn` vs `fc1`/`fc2`), EXAONE (`attn.attention`, `mlp`).
"""

from __future__ import annotations

from collections.abc import Iterable

# PEFT's SEQ_CLS_HEAD_NAMES (peft.utils.constants): heads PEFT itself knows for sequence classification.
PEFT_SEQ_CLS_HEAD_NAMES = ("score", "classifier")
# Task heads created on top of the base model; BART's `classification_head` is not in PEFT's list.
HEAD_NAMES = (*PEFT_SEQ_CLS_HEAD_NAMES, "classification_head", "qa_outputs")

_ATTN_WORDS = ("attn", "attention")
_MLP_SEGMENTS = frozenset(
    {
        "mlp",
        "feed_forward",
        "ffn",
        "ff",
        "intermediate",
        "fc1",
        "fc2",
        "fc_in",
        "fc_out",
        "dense_h_to_4h",
        "dense_4h_to_h",
        "densereludense",
        "block_sparse_moe",
    }
)


def _block_suffix(name: str) -> list[str] | None:
    """Segments after the first numbered one (the block index), or None outside numbered blocks."""
    segs = name.split(".")
    for i, s in enumerate(segs):
        if s.isdigit():
            return segs[i + 1 :]
    return None


def block_part(name: str) -> str | None:
    """ "attention" or "mlp" for modules inside a block's attention or feed-forward, else None."""
    rest = _block_suffix(name)
    if not rest:
        return None
    lowered = [s.lower() for s in rest]
    if any(w in s for s in lowered for w in _ATTN_WORDS):
        return "attention"
    # BERT's feed-forward output is `layer.N.output.dense`; `attention.output.dense` was caught above.
    if lowered[0] == "output" or any(s in _MLP_SEGMENTS or "mlp" in s for s in lowered):
        return "mlp"
    return None


def in_subtree(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def module_kind(name: str, *, is_embedding: bool, is_norm: bool, head_prefixes: Iterable[str]) -> str:
    """One of records.KINDS for the module `name`."""
    if in_subtree(name, head_prefixes):
        return "head"
    if is_embedding:
        return "embedding"
    if is_norm:
        return "norm"
    return block_part(name) or "other"


def is_norm_class(cls_name: str) -> bool:
    return "norm" in cls_name.lower()
