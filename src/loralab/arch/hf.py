"""transformers' view of an architecture: the config object of a config.json, the Auto class of a task,
which family is an encoder or a decoder, and the task a model is usually fine-tuned for.

The one place that turns a config dict into a transformers config (introspection, preflight and the
twin measurement all need one), so all of them copy it the same way.
"""

from __future__ import annotations

import copy
from typing import Any

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
