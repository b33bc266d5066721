"""transformers' view of an architecture: the config object of a config.json, the Auto class of a task,
which family is an encoder or a decoder, the task a model is usually fine-tuned for, and the longest
input its position encoding takes.

The one place that turns a config dict into a transformers config (introspection, preflight and the
twin measurement all need one), so all of them copy it the same way.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from loralab.errors import Problem

# loralab task -> the transformers Auto class that builds its model.
AUTO_CLASSES = {
    "seq-cls": "AutoModelForSequenceClassification",
    "causal-lm": "AutoModelForCausalLM",
    "seq2seq": "AutoModelForSeq2SeqLM",
}

# Encoder-only families: their natural LoRA task is classification. Some have a causal-LM class too
# (BertLMHeadModel), but they are encoders by default.
ENCODER_ONLY = frozenset(
    {
        "bert",
        "roberta",
        "xlm-roberta",
        "electra",
        "deberta",
        "deberta-v2",
        "distilbert",
        "albert",
        "camembert",
    }
)


def known_model_type(config: dict[str, Any]) -> bool:
    """Whether the installed transformers has the code for this config's model_type."""
    # transformers is heavy: imported only when a config object is actually needed.
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    return str(config.get("model_type")) in CONFIG_MAPPING


def hf_config_from_dict(config: dict[str, Any]) -> Any:
    """The transformers config of a config.json dict (KeyError for a model_type it does not know).

    A deep copy: transformers edits nested dicts in place (rope_scaling gains rope_theta), which would
    change the caller's dict, resolve_model's per-process cache and the record cache key with it.
    """
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING  # heavy, see above

    return CONFIG_MAPPING[str(config["model_type"])].from_dict(copy.deepcopy(config))


def auto_class(task: str) -> Any:
    """The transformers Auto class of a loralab task (AutoModelForSequenceClassification, ...)."""
    import transformers  # heavy, see above

    return getattr(transformers, AUTO_CLASSES[task])


def is_decoder_only(config: Any) -> bool:
    """True for causal decoders (GPT-2, Llama, Qwen3...), False for encoders and encoder-decoders."""
    if getattr(config, "is_encoder_decoder", False):
        return False
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES  # heavy

    model_type = getattr(config, "model_type", None)
    return model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in ENCODER_ONLY


def default_task(config: dict[str, Any]) -> str:
    """The task a model is usually fine-tuned for, from its config alone."""
    if config.get("is_encoder_decoder"):
        return "seq2seq"
    archs = " ".join(config.get("architectures") or [])
    if config.get("model_type") in ENCODER_ONLY or "ForSequenceClassification" in archs:
        return "seq-cls"
    return "causal-lm"


# ---- position limits -----------------------------------------------------------------------------
# Families whose position encoding is a table of `max_position_embeddings` rows (learned, or fixed
# sinusoids for Marian/Pegasus): position ids past it index outside the table, an IndexError on a CPU and
# a device-side assert on CUDA, at the first batch long enough. BART-likes and OPT allocate 2 extra
# rows for their offset (`BartLearnedPositionalEmbedding`, `OPTLearnedPositionalEmbedding`), so they take
# exactly max_position_embeddings tokens.
_ABSOLUTE = frozenset(
    {
        "bert",
        "electra",
        "albert",
        "distilbert",
        "megatron-bert",
        "ernie",
        "gpt_neo",
        "opt",
        "biogpt",
        "bart",
        "mbart",
        "marian",
        "pegasus",
        "blenderbot",
        "blenderbot-small",
    }
)
# RoBERTa-style embeddings number positions from pad_token_id + 1 (`create_position_ids_from_input_ids`
# in modeling_roberta), so a table of 514 rows with pad 1 holds 512 tokens.
_PADDING_OFFSET = frozenset(
    {
        "roberta",
        "xlm-roberta",
        "xlm-roberta-xl",
        "camembert",
        "roberta-prelayernorm",
        "data2vec-text",
        "longformer",
        "mpnet",
    }
)
# GPT-2-likes name their learned table's size n_positions (`wpe`).
_N_POSITIONS = frozenset({"gpt2", "gpt_bigcode", "openai-gpt"})
# DeBERTa has an absolute table only with position_biased_input (v1/v2 default True; v3 sets False and
# uses relative positions alone).
_DEBERTA = frozenset({"deberta", "deberta-v2"})


@dataclass(frozen=True)
class PositionLimit:
    """The longest input a model's position encoding takes.

    `hard`: an absolute position table; a longer input crashes. Otherwise (rotary, ALiBi, relative
    buckets) a longer input runs, but past the context the model was trained on (its
    max_position_embeddings), so quality falls unless the config scales RoPE: a soft limit, a warning.
    """

    tokens: int
    key: str  # the config key it comes from: "n_positions", "max_position_embeddings - 2", ...
    hard: bool


def _int(config: dict[str, Any], key: str) -> int | None:
    v = config.get(key)
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def position_limit(config: dict[str, Any]) -> PositionLimit | None:
    """The position limit of a config.json dict, hard or soft (see PositionLimit); None if it has none."""
    model_type = str(config.get("model_type", ""))
    n_pos, max_pos = _int(config, "n_positions"), _int(config, "max_position_embeddings")
    if model_type in _N_POSITIONS and (n_pos or max_pos):
        return PositionLimit(
            n_pos or max_pos or 0, "n_positions" if n_pos else "max_position_embeddings", True
        )
    if max_pos is None:
        return PositionLimit(n_pos, "n_positions", False) if n_pos else None
    if model_type in _PADDING_OFFSET:
        pad = config.get("pad_token_id")
        offset = (pad if isinstance(pad, int) and pad >= 0 else 1) + 1
        return PositionLimit(max_pos - offset, f"max_position_embeddings - {offset}", True)
    hard = model_type in _ABSOLUTE or (
        model_type in _DEBERTA and bool(config.get("position_biased_input", True))
    )
    return PositionLimit(max_pos, "max_position_embeddings", hard)


def hidden_size(config: dict[str, Any]) -> int:
    """The model's width under the names families use (hidden_size, GPT-2's n_embd, BART's d_model);
    0 when the config names none."""
    return int(config.get("hidden_size") or config.get("n_embd") or config.get("d_model") or 0)


def max_positions(config: dict[str, Any]) -> int | None:
    """The most tokens one sequence may have before the model crashes (a hard limit), else None.

    Rotary/ALiBi/relative families have no such limit: `position_limit` gives their soft one.
    """
    limit = position_limit(config)
    return limit.tokens if limit is not None and limit.hard else None


def max_length_problem(
    config: dict[str, Any], max_length: int, *, file: str, key: str = "data.max_length"
) -> Problem | None:
    """A Problem when `max_length` tokens exceed the model's hard position limit, else None.

    `key` says where max_length came from: "data.max_length" (`file` the experiment file), or a flag
    such as "--seq-len" (the Problem then names the flag as its file, as command-line problems do).
    `plan`, `train --check` and `evaluate RUN_DIR` share this check, so all refuse the same lengths.
    """
    limit = position_limit(config)
    if limit is None or not limit.hard or max_length <= limit.tokens:
        return None
    flag = key.startswith("-")
    return Problem(
        key if flag else file,
        "" if flag else key,
        f"{max_length} tokens is more than the model takes: its position table holds {limit.tokens} "
        f"({config.get('model_type')} config {limit.key}), so the first batch longer than that fails "
        "with an index error, hours into a run",
        f"give {key} {limit.tokens} or less" if flag else f"set {key}: {limit.tokens} or less",
    )


def max_length_warning(
    config: dict[str, Any], max_length: int, *, key: str = "data.max_length"
) -> str | None:
    """A warning when `max_length` exceeds a soft limit (rotary/ALiBi context), else None."""
    limit = position_limit(config)
    if limit is None or limit.hard or max_length <= limit.tokens:
        return None
    return (
        f"{key} {max_length} is longer than the context {config.get('model_type')} was trained on "
        f"({limit.key} {limit.tokens}): it runs, but quality falls past it unless the config scales RoPE"
    )
