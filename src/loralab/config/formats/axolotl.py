"""Axolotl YAML -> loralab's experiment mapping, with Axolotl's own defaults filled in.

Sources (axolotl-ai-cloud/axolotl, main as of 2026-07): defaults from src/axolotl/utils/schemas/
(peft.py: lora_dropout 0.0, load_in_4bit/8bit False; training.py: micro_batch_size 1,
gradient_accumulation_steps 1, num_epochs 1.0, lr_scheduler "cosine", weight_decay 0.0, optimizer
"adamw_torch_fused"; config.py: sequence_len 512, bf16 "auto", gradient_checkpointing False, output_dir
"./model-out"); how they reach PEFT and the Trainer from src/axolotl/loaders/adapter.py
(_build_peft_lora_config: lora_target_linear adds every linear layer except the output embedding, bias
"none", task_type from the model class), src/axolotl/loaders/model.py (the QLoRA BitsAndBytesConfig),
src/axolotl/utils/config/__init__.py (resolve_dtype) and src/axolotl/core/builders/base.py
(_configure_warmup_and_logging, _configure_scheduler, _set_base_training_args).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loralab.config.formats.common import Builder, Converted

TOOL = "Axolotl"

# Axolotl key -> PEFT LoraConfig field (adapter.py passes each straight through).
_LORA = {
    "lora_r": "r",
    "lora_alpha": "lora_alpha",
    "lora_dropout": "lora_dropout",
    "lora_fan_in_fan_out": "fan_in_fan_out",
    "lora_modules_to_save": "modules_to_save",
    "lora_target_parameters": "target_parameters",
    "peft_layers_to_transform": "layers_to_transform",
    "peft_layers_pattern": "layers_pattern",
    "peft_use_dora": "use_dora",
    "peft_use_rslora": "use_rslora",
    "lora_rank_pattern": "rank_pattern",
    "lora_alpha_pattern": "alpha_pattern",
    "peft_init_lora_weights": "init_lora_weights",
    "lora_exclude_modules": "exclude_modules",
    "peft_layer_replication": "layer_replication",
    "peft_trainable_token_indices": "trainable_token_indices",
    "peft_ensure_weight_tying": "ensure_weight_tying",
}
# Axolotl key -> TrainingArguments field (base.py copies these when set).
_TRAINING = {
    "micro_batch_size": "per_device_train_batch_size",
    "eval_batch_size": "per_device_eval_batch_size",
    "num_epochs": "num_train_epochs",
    "optimizer": "optim",
    "lr_scheduler": "lr_scheduler_type",
    **{
        k: k
        for k in (
            "gradient_accumulation_steps",
            "learning_rate",
            "lr_scheduler_kwargs",
            "warmup_steps",
            "warmup_ratio",
            "weight_decay",
            "max_grad_norm",
            "adam_beta1",
            "adam_beta2",
            "adam_epsilon",
            "seed",
            "output_dir",
            "max_steps",
            "logging_steps",
            "save_steps",
            "eval_steps",
            "save_strategy",
            "eval_strategy",
            "save_total_limit",
            "gradient_checkpointing_kwargs",
            "dataloader_num_workers",
            "dataloader_pin_memory",
            "auto_find_batch_size",
            "fsdp_config",
            "torch_compile",
            "fp16",
        )
    },
}
_MODEL = {
    "base_model": "name_or_path",
    "trust_remote_code": "trust_remote_code",
    "revision_of_model": "revision",
}
_ATTN_FLAGS = {"flash_attention": "flash_attention_2", "sdp_attention": "sdpa", "eager_attention": "eager"}
# Keys whose meaning lives in Axolotl (its data pipeline, prompt formats, logging integrations).
_TOOL_ONLY = {
    "datasets": "dataset registry entries (paths and prompt types)",
    "test_datasets": "evaluation dataset entries",
    "chat_template": "chat template by name",
    "dataset_prepared_path": "Axolotl's tokenised-dataset cache",
    "val_set_size": "validation split taken from the training data",
    "sample_packing": "sequence packing",
    "eval_sample_packing": "sequence packing at evaluation",
    "pad_to_sequence_len": "padding to sequence_len",
    "train_on_inputs": "loss on the prompt tokens",
    "special_tokens": "tokens added to the tokenizer",
    "tokens": "tokens added to the tokenizer",
    "tokenizer_type": "tokenizer class",
    "tokenizer_config": "tokenizer path",
    "model_type": "model class",
    "base_model_config": "model config path",
    "strict": "config strictness",
    "wandb_project": "Weights & Biases logging",
    "wandb_entity": "Weights & Biases logging",
    "wandb_name": "Weights & Biases logging",
    "wandb_watch": "Weights & Biases logging",
    "wandb_log_model": "Weights & Biases logging",
    "evals_per_epoch": "evaluations per epoch",
    "saves_per_epoch": "checkpoints per epoch",
    "hub_model_id": "Hub upload",
    "lora_model_dir": "a LoRA adapter to resume from",
    "tf32": "TF32 matmuls",
    "bnb_config_kwargs": "extra BitsAndBytesConfig arguments",
}


def from_axolotl(raw: Mapping[str, Any], training_defaults: Mapping[str, Any]) -> Converted:
    """An Axolotl config as loralab's experiment mapping; `training_defaults` is not needed (kept for
    one signature across converters)."""
    b = Builder(TOOL)
    for key, value in raw.items():
        key = str(key)
        if key in _MODEL:
            b.set(f"model.{_MODEL[key]}", value, key)
        elif key in _LORA:
            b.set(f"lora.config.{_LORA[key]}", value, key)
        elif key == "learning_rate" and isinstance(value, str):
            # schemas/training.py convert_learning_rate: Axolotl reads "2e-4" (YAML text) as a float.
            b.set("training_args.learning_rate", _float(value), key)
        elif key in _TRAINING:
            b.set(f"training_args.{_TRAINING[key]}", value, key)
        elif key in _ATTN_FLAGS:
            if value:
                b.set("model.attn_implementation", _ATTN_FLAGS[key], key)
        elif key == "attn_implementation":
            b.set("model.attn_implementation", value, key)
        elif key == "sequence_len":
            b.set("data.max_length", value, key)
        elif key == "deepspeed":
            b.set("deepspeed", value, key)
        elif key == "fsdp":
            b.set("training_args.fsdp", " ".join(value) if isinstance(value, list) else value, key)
        elif key == "gradient_checkpointing":
            b.set("training_args.gradient_checkpointing", bool(value), key)
            if isinstance(value, str):
                b.note(f"gradient_checkpointing: {value!r} read as true (Axolotl offloads checkpoints)")
        elif key in _TOOL_ONLY:
            b.tool_only(key, value, _TOOL_ONLY[key])
        elif key not in _HANDLED:
            b.unknown(key)
    _targets(raw, b)
    _adapter(raw, b)
    _precision(raw, b)
    _schedule(raw, b)
    _fill_defaults(b)
    return b.result()


_HANDLED = frozenset(
    {
        "adapter",
        "load_in_4bit",
        "load_in_8bit",
        "lora_target_modules",
        "lora_target_linear",
        "bf16",
        "bfloat16",
    }
)


def _targets(raw: Mapping[str, Any], b: Builder) -> None:
    modules = raw.get("lora_target_modules")
    if raw.get("lora_target_linear"):
        # adapter.py find_all_linear_names: every Linear's last name component, minus the output embedding
        # (lm_head) - what PEFT's "all-linear" selects on a text model.
        b.set("lora.config.target_modules", "all-linear", "lora_target_linear")
        if modules:
            b.note(
                f"lora_target_modules {modules!r} and lora_target_linear: Axolotl adapts the union; "
                "all-linear already holds every linear layer, a non-linear one listed (an embedding) is "
                "not adapted here: list it in lora.config.target_modules instead of all-linear"
            )
    elif modules is not None:
        b.set("lora.config.target_modules", modules, "lora_target_modules")


def _adapter(raw: Mapping[str, Any], b: Builder) -> None:
    adapter = raw.get("adapter")
    if adapter not in ("lora", "qlora"):
        # Axolotl trains every parameter without an adapter (schemas/peft.py: "leave blank to train all").
        b.set("lora.enable", False, "adapter" if "adapter" in raw else None)
        b.note(f"adapter: {adapter!r} is not lora/qlora; Axolotl then fine-tunes the full model")
        return
    b.set("lora.enable", True, "adapter")
    b.default("lora.config.task_type", "CAUSAL_LM", "adapter.py takes it from the model class, causal LM")
    b.default("model.task", "causal-lm", "Axolotl's SFT trains AutoModelForCausalLM")
    b.default("lora.config.lora_dropout", 0.0, "schemas/peft.py lora_dropout = 0.0")
    b.default("lora.config.bias", "none", "adapter.py passes bias='none'")
    four = raw.get("load_in_4bit") or adapter == "qlora"
    if four:
        if adapter == "qlora" and not raw.get("load_in_4bit"):
            b.note("adapter: qlora without load_in_4bit: read as 4-bit, as QLoRA means")
        # loaders/model.py: the BitsAndBytesConfig built for adapter qlora + load_in_4bit.
        quant = {
            "load_in_4bit": True,
            "bnb_4bit_quant_type": "nf4",
            "bnb_4bit_use_double_quant": True,
            "bnb_4bit_compute_dtype": _dtype(raw),
            "bnb_4bit_quant_storage": "bfloat16",
        }
        extra = raw.get("bnb_config_kwargs")
        if isinstance(extra, dict):
            quant.update(extra)
        b.set("model.quantization", quant, "adapter" if adapter == "qlora" else "load_in_4bit")
    elif raw.get("load_in_8bit"):
        b.set("model.quantization", {"load_in_8bit": True}, "load_in_8bit")


def _float(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text  # the loader's type check reports it


def _dtype(raw: Mapping[str, Any]) -> str:
    """utils/config resolve_dtype: bf16 (on a bf16 GPU when "auto"), else fp16 or 8-bit, else fp32."""
    bf16 = raw.get("bf16", "auto")
    if bf16 is True or bf16 == "full" or raw.get("bfloat16") or (bf16 == "auto" and not raw.get("fp16")):
        return "bfloat16"
    if raw.get("fp16") or raw.get("load_in_8bit") or raw.get("float16"):
        return "float16"
    return "float32"


def _precision(raw: Mapping[str, Any], b: Builder) -> None:
    bf16 = raw.get("bf16", "auto")
    if bf16 == "auto" and not raw.get("fp16"):
        b.set("training_args.bf16", True, "bf16" if "bf16" in raw else None)
        b.note("bf16: 'auto' (Axolotl's default) read as true: Axolotl turns it on on a GPU with bf16")
    elif bf16 == "full":
        b.set("training_args.bf16_full_eval", True, "bf16")
    elif isinstance(bf16, bool):
        b.set("training_args.bf16", bf16, "bf16")
    if raw.get("bfloat16"):
        b.set("training_args.bf16", True, "bfloat16")
    b.default("model.torch_dtype", _dtype(raw), "resolve_dtype loads the model in its training precision")


def _schedule(raw: Mapping[str, Any], b: Builder) -> None:
    scheduler = raw.get("lr_scheduler")
    if scheduler in ("one_cycle", "rex"):
        # base.py _configure_scheduler: these run as Axolotl's own scheduler over a cosine base.
        b.set("training_args.lr_scheduler_type", "cosine", "lr_scheduler")
        b.note(f"lr_scheduler: {scheduler!r} is Axolotl's own scheduler; planned as cosine")
    if raw.get("warmup_steps") is None and raw.get("warmup_ratio") is None:
        # base.py _configure_warmup_and_logging: min(int(0.03 * total steps), 100) when neither is set.
        b.default("training_args.warmup_steps", 0.03, "3% of the total steps, at most 100 steps")


def _fill_defaults(b: Builder) -> None:
    b.default("training_args.per_device_train_batch_size", 1, "micro_batch_size = 1")
    b.default("training_args.gradient_accumulation_steps", 1, "gradient_accumulation_steps = 1")
    b.default("training_args.num_train_epochs", 1.0, "num_epochs = 1.0")
    b.default("training_args.lr_scheduler_type", "cosine", "lr_scheduler = 'cosine'")
    b.default("training_args.weight_decay", 0.0, "weight_decay = 0.0")
    b.default("training_args.optim", "adamw_torch_fused", "optimizer = 'adamw_torch_fused'")
    b.default("training_args.output_dir", "./model-out", "output_dir = './model-out'")
    b.default("data.max_length", 512, "sequence_len = 512")
