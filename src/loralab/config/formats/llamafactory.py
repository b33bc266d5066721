"""LLaMA-Factory YAML -> loralab's experiment mapping, with LLaMA-Factory's own defaults filled in.

Sources (hiyouga/LLaMA-Factory, main as of 2026-08): src/llamafactory/hparams/finetuning_args.py
(LoraArguments: lora_rank 8, lora_alpha None -> lora_rank * 2 in __post_init__, lora_dropout 0.0,
lora_target "all", additional_target None; stage "sft"; finetuning_type "lora"), hparams/model_args.py
(quantization_bit None, quantization_type "nf4", double_quantization True), hparams/data_args.py
(cutoff_len 2048), model/adapter.py (lora_target "all" -> find_all_linear_modules: every Linear but
lm_head, i.e. PEFT's all-linear on a text model; additional_target -> modules_to_save; TaskType.CAUSAL_LM),
model/model_utils/quantization.py (the 4-bit BitsAndBytesConfig) and hparams/parser.py (compute dtype
from bf16 / fp16). Every other key is a Seq2SeqTrainingArguments field passed to the Trainer as is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loralab.config.formats.common import Builder, Converted, split_names, training_key

TOOL = "LLaMA-Factory"
_MODEL = {
    "model_name_or_path": "name_or_path",
    "trust_remote_code": "trust_remote_code",
    "model_revision": "revision",
}
_LORA = {
    "lora_rank": "r",
    "lora_alpha": "lora_alpha",
    "lora_dropout": "lora_dropout",
    "use_rslora": "use_rslora",
    "use_dora": "use_dora",
}
_FLASH = {"fa2": "flash_attention_2", "sdpa": "sdpa", "disabled": "eager"}
_TOOL_ONLY = {
    "stage": "training stage",
    "template": "chat template by name",
    "dataset": "dataset registry names",
    "eval_dataset": "dataset registry names",
    "dataset_dir": "dataset registry folder",
    "val_size": "validation split taken from the training data",
    "max_samples": "examples taken per dataset",
    "overwrite_cache": "dataset cache",
    "preprocessing_num_workers": "dataset preprocessing",
    "packing": "sequence packing",
    "neat_packing": "sequence packing",
    "train_on_prompt": "loss on the prompt tokens",
    "mask_history": "loss on earlier turns",
    "plot_loss": "loss plot",
    "loraplus_lr_ratio": "LoRA+ learning-rate ratio",
    "loraplus_lr_embedding": "LoRA+ embedding learning rate",
    "pure_bf16": "pure bf16 training",
    "flash_attn": "attention implementation",
    "quantization_method": "quantization backend",
    "do_sample": "generation",
    "predict_with_generate": "generation during evaluation",
    "adapter_name_or_path": "adapters to resume from",
    "create_new_adapter": "a new adapter next to loaded ones",
    "resize_vocab": "vocabulary resizing",
    "freeze_vision_tower": "vision tower training",
    "report_to": "logging integrations",
}
_HANDLED = frozenset(
    {
        "finetuning_type",
        "lora_target",
        "additional_target",
        "cutoff_len",
        "quantization_bit",
        "quantization_type",
        "double_quantization",
        "deepspeed",
        "pissa_init",
        "pissa_iter",
        "pissa_convert",
    }
)


def from_llamafactory(raw: Mapping[str, Any], training_defaults: Mapping[str, Any]) -> Converted:
    """A LLaMA-Factory config as loralab's experiment mapping. `training_defaults` (the installed
    TrainingArguments' fields) tells which keys LLaMA-Factory passes to the Trainer."""
    b = Builder(TOOL)
    for key, value in raw.items():
        key = str(key)
        if key in _MODEL:
            b.set(f"model.{_MODEL[key]}", value, key)
        elif key in _LORA:
            b.set(f"lora.config.{_LORA[key]}", value, key)
        elif key == "cutoff_len":
            b.set("data.max_length", value, key)
        elif key == "deepspeed":
            b.set("deepspeed", value, key)
        elif key in _TOOL_ONLY:
            b.tool_only(key, value, _TOOL_ONLY[key])
        elif key in _HANDLED:
            pass
        elif training_key(key, training_defaults):
            b.set(f"training_args.{key}", value, key)
        else:
            b.unknown(key)
    if raw.get("flash_attn") in _FLASH:
        b.set("model.attn_implementation", _FLASH[str(raw["flash_attn"])], "flash_attn")
    _stage(raw, b)
    if b.out.get("lora", {}).get("enable", True):
        _lora(raw, b)
    _quantization(raw, b)
    compute = _compute_dtype(raw)
    if compute is not None:
        b.default("model.torch_dtype", compute, "parser.py: compute dtype from bf16 / fp16")
    b.default("data.max_length", 2048, "data_args.py cutoff_len = 2048")
    return b.result()


def _stage(raw: Mapping[str, Any], b: Builder) -> None:
    stage = raw.get("stage", "sft")
    b.default("model.task", "causal-lm", f"stage {stage!r} trains AutoModelForCausalLM")
    if stage not in ("sft", "pt"):
        b.note(f"stage: {stage!r} is not supervised fine-tuning; loralab plans it as causal-LM SFT")
    kind = raw.get("finetuning_type", "lora")
    if kind != "lora":
        b.set("lora.enable", False, "finetuning_type")
        b.note(f"finetuning_type: {kind!r} is not LoRA; loralab plans it without an adapter")
    else:
        b.set("lora.enable", True, "finetuning_type" if "finetuning_type" in raw else None)


def _lora(raw: Mapping[str, Any], b: Builder) -> None:
    b.default("lora.config.task_type", "CAUSAL_LM", "adapter.py LoraConfig(task_type=TaskType.CAUSAL_LM)")
    b.default("lora.config.r", 8, "finetuning_args.py lora_rank = 8")
    rank = b.out["lora"]["config"]["r"]
    if "lora_alpha" not in raw or raw.get("lora_alpha") is None:
        b.out["lora"]["config"].pop("lora_alpha", None)
        b.default("lora.config.lora_alpha", 2 * rank if isinstance(rank, int) else 16, "lora_rank * 2")
    b.default("lora.config.lora_dropout", 0.0, "finetuning_args.py lora_dropout = 0.0")
    targets = split_names(raw.get("lora_target", "all"))
    if targets == ["all"]:
        b.set("lora.config.target_modules", "all-linear", "lora_target" if "lora_target" in raw else None)
        if "lora_target" not in raw:
            b.defaults["lora.config.target_modules"] = "LLaMA-Factory default"
            b.note("lora.config.target_modules: 'all-linear' (LLaMA-Factory's default: lora_target = 'all')")
    else:
        b.set("lora.config.target_modules", targets, "lora_target")
    if raw.get("additional_target"):
        b.set("lora.config.modules_to_save", split_names(raw["additional_target"]), "additional_target")
    if raw.get("pissa_init"):
        # adapter.py: pissa_iter == -1 -> "pissa", else "pissa_niter_{pissa_iter}" (pissa_iter default 16).
        it = raw.get("pissa_iter", 16)
        b.set("lora.config.init_lora_weights", "pissa" if it == -1 else f"pissa_niter_{it}", "pissa_init")


def _quantization(raw: Mapping[str, Any], b: Builder) -> None:
    bits = raw.get("quantization_bit")
    if bits is None:
        return
    method = raw.get("quantization_method", "bnb")
    if method != "bnb":
        b.note(f"quantization_method: {method!r}; loralab plans bitsandbytes quantization")
    compute = _compute_dtype(raw)
    if bits == 4:
        quant: dict[str, Any] = {
            "load_in_4bit": True,
            "bnb_4bit_quant_type": raw.get("quantization_type", "nf4"),
            "bnb_4bit_use_double_quant": raw.get("double_quantization", True),
        }
        if compute is not None:
            quant["bnb_4bit_compute_dtype"] = compute
            quant["bnb_4bit_quant_storage"] = compute
        b.set("model.quantization", quant, "quantization_bit")
    elif bits == 8:
        b.set("model.quantization", {"load_in_8bit": True}, "quantization_bit")
    else:
        b.note(f"quantization_bit: {bits!r}: bitsandbytes takes 4 or 8; not used")


def _compute_dtype(raw: Mapping[str, Any]) -> str | None:
    """parser.py: the compute (and load) dtype is bf16 with bf16 / pure_bf16, fp16 with fp16; else
    LLaMA-Factory infers it from the device, which a file does not say."""
    if raw.get("bf16") or raw.get("pure_bf16"):
        return "bfloat16"
    return "float16" if raw.get("fp16") else None
