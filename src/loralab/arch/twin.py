"""The shrunken twin of an architecture: the same model_type and module names with 2 layers, hidden 64
and a 512-token vocabulary, so one real training step runs in seconds on a CPU.

Preflight runs a step on it to surface what only the framework knows about (seed 003's dtype and
token_type_ids failures); `plan --measure` measures a step on it term by term. Both build it here.
"""

from __future__ import annotations

from typing import Any

TWIN_HIDDEN, TWIN_LAYERS, TWIN_HEADS, TWIN_VOCAB = 64, 2, 4, 512


def _std_key(hf_config: Any, name: str) -> str:
    return str(getattr(type(hf_config), "attribute_map", {}).get(name, name))


def twin_config(hf_config: Any, task: str, num_labels: int | None) -> Any:
    """Same model_type and module names, 2 layers, hidden 64, vocab 512 (head counts kept consistent)."""
    d = hf_config.to_dict()
    hidden_key, layers_key = _std_key(hf_config, "hidden_size"), _std_key(hf_config, "num_hidden_layers")
    heads_key = _std_key(hf_config, "num_attention_heads")
    old_hidden, old_layers = int(d.get(hidden_key) or 64), int(d.get(layers_key) or 2)
    old_heads = d.get(heads_key)
    for k in ("_name_or_path", "quantization_config", "torch_dtype", "dtype", "id2label", "label2id"):
        d.pop(k, None)
    d[hidden_key] = TWIN_HIDDEN
    for k in {layers_key, "encoder_layers", "decoder_layers", "num_decoder_layers"} & d.keys():
        d[k] = TWIN_LAYERS
    for k in {heads_key, "encoder_attention_heads", "decoder_attention_heads"} & d.keys():
        d[k] = TWIN_HEADS
    kv = d.get("num_key_value_heads")
    if isinstance(kv, int):  # keep GQA (fewer kv heads) or MQA (one) as the original has it
        d["num_key_value_heads"] = 1 if kv == 1 else TWIN_HEADS if kv == old_heads else 2
    for k in ("head_dim", "d_kv"):
        if isinstance(d.get(k), int):
            d[k] = TWIN_HIDDEN // TWIN_HEADS
    for k in ("intermediate_size", "encoder_ffn_dim", "decoder_ffn_dim", "d_ff", "n_inner", "ffn_dim"):
        if isinstance(d.get(k), int):  # keep the MLP's widening ratio, in multiples of 16
            d[k] = 16 * max(1, round(4 * d[k] / old_hidden))
    for k in ("max_position_embeddings", "n_positions"):
        if isinstance(d.get(k), int):
            d[k] = min(d[k], 512)
    if isinstance(d.get("max_window_layers"), int):
        d["max_window_layers"] = min(d["max_window_layers"], TWIN_LAYERS)
    for k, v in list(d.items()):  # per-layer lists (Qwen3's layer_types) follow the layer count
        if isinstance(v, list) and len(v) == old_layers and old_layers != TWIN_LAYERS:
            d[k] = v[:TWIN_LAYERS]
    d["vocab_size"] = TWIN_VOCAB
    for k in ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id", "sep_token_id"):
        v = d.get(k)
        if isinstance(v, int):
            d[k] = v % TWIN_VOCAB
        elif isinstance(v, list):
            d[k] = [x % TWIN_VOCAB for x in v]
    out = type(hf_config).from_dict(d)
    if task == "seq-cls":
        out.num_labels = num_labels or 2
    return out


def twin_lora(lora: dict[str, Any], num_layers: int) -> dict[str, Any]:
    """The LoRA kwargs on the twin: resolved layers mapped to the twin's 2 by relative position."""
    out = dict(lora)
    layers = out.get("layers_to_transform")
    if layers:
        out["layers_to_transform"] = sorted(
            {min(TWIN_LAYERS - 1, j * TWIN_LAYERS // num_layers) for j in layers}
        )
    return out
