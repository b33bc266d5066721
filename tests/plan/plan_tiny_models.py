"""Tiny architectures of each family our users train (shared by the plan tests)."""

from __future__ import annotations

from typing import Any

TINY: dict[str, dict[str, Any]] = {
    "llama": dict(
        model_type="llama",
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=256,
        tie_word_embeddings=False,
    ),
    "qwen3": dict(
        model_type="qwen3",
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        vocab_size=256,
        tie_word_embeddings=True,
    ),
    "gemma2": dict(
        model_type="gemma2",
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        query_pre_attn_scalar=16,
        sliding_window=16,
        attn_logit_softcapping=50.0,
        final_logit_softcapping=30.0,
        vocab_size=256,
    ),
    "gpt2": dict(model_type="gpt2", n_embd=64, n_layer=3, n_head=4, vocab_size=256, n_positions=64),
    "bert": dict(
        model_type="bert",
        hidden_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=128,
        vocab_size=256,
        max_position_embeddings=64,
    ),
    "bart": dict(
        model_type="bart",
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        vocab_size=256,
        max_position_embeddings=64,
    ),
    "gpt_neox": dict(
        model_type="gpt_neox",
        hidden_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=128,
        vocab_size=256,
        max_position_embeddings=64,
    ),
}


def build_reference_model(config: dict[str, Any], task: str, num_labels: int | None = None) -> Any:
    """The model as a user's training script would build it, independently of loralab's introspection."""
    import torch
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForSeq2SeqLM,
        AutoModelForSequenceClassification,
    )

    cfg = dict(config)
    model_type = cfg.pop("model_type")
    for k in ("architectures", "transformers_version", "torch_dtype", "dtype", "_name_or_path"):
        cfg.pop(k, None)
    c = AutoConfig.for_model(model_type, **cfg)
    if num_labels is not None:
        c.num_labels = num_labels
    cls = {
        "causal-lm": AutoModelForCausalLM,
        "seq-cls": AutoModelForSequenceClassification,
        "seq2seq": AutoModelForSeq2SeqLM,
    }[task]
    with torch.device("meta"):
        return cls.from_config(c)


TASK_TYPE = {"causal-lm": "CAUSAL_LM", "seq-cls": "SEQ_CLS", "seq2seq": "SEQ_2_SEQ_LM"}
AUTO_CLASS = {
    "causal-lm": "AutoModelForCausalLM",
    "seq-cls": "AutoModelForSequenceClassification",
    "seq2seq": "AutoModelForSeq2SeqLM",
}


def tiny_peft(
    family: str,
    task: str,
    *,
    dtype: str = "float32",
    impl: str = "sdpa",
    gc: bool = False,
    **lora: Any,
) -> tuple[Any, Any]:
    """A tiny random model of `family` with PEFT's LoRA (r=8 on all linear layers unless `lora`
    says otherwise), in training mode, and loralab's plan of the same config from its arch record."""
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model

    from loralab.arch.introspect import introspect
    from loralab.plan.planner import build_plan

    cfg = dict(TINY[family])
    c = transformers.AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    torch.manual_seed(0)
    model = getattr(transformers, AUTO_CLASS[task]).from_config(c, attn_implementation=impl)
    model = model.to(getattr(torch, dtype))
    if model.config.pad_token_id is None:
        model.config.pad_token_id = 0
    kw = {"task_type": TASK_TYPE[task], "r": 8, "target_modules": "all-linear", **lora}
    record = introspect(
        model.config.to_dict(), task=task, num_labels=2 if task == "seq-cls" else None, model_id="tiny"
    )
    plan = build_plan(record, dict(kw), load_dtype=dtype)
    model = get_peft_model(model, LoraConfig(**kw))
    if gc:
        model.activation_checkpointing_enable()
    model.train()
    return model, plan
