"""Load the tokenizer and base model for a config, and apply its LoRA config exactly as `plan` counts it.

Every from_pretrained call passes `trust_remote_code` explicitly (False unless the config says so),
and every device_map gets an offload folder inside the run directory: seed 003's KULLM-v2 died with
device_map="auto" spilling layers to disk and no `offload_folder`.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from loralab.arch.cache import get_arch_record
from loralab.arch.hf import auto_class, is_decoder_only
from loralab.arch.resolve import hub_load_kwargs
from loralab.config.models import TASK_TO_TASK_TYPE, ExperimentConfig
from loralab.errors import LoralabError
from loralab.models import resolve_local_alias
from loralab.plan.planner import build_plan
from loralab.train.precision import PrecisionPolicy

QLORA_ON_CPU = "QLoRA needs a CUDA GPU and bitsandbytes; remove model.quantization to train in fp32 on CPU"


class PlanMismatchError(RuntimeError):
    """PEFT trains a different number of parameters than `plan` predicted: a bug in loralab's planner."""


def load_tokenizer(cfg: ExperimentConfig) -> Any:
    """The tokenizer of cfg.model, with a pad token and the padding side loralab trains with.

    Decoder-only models often ship without a pad token (GPT-2, Llama): eos stands in, and
    `load_model(..., tokenizer=)` sets the model's pad_token_id to match. Decoder-only causal-lm
    pads on the left because evaluation generates in batches, and right padding puts pad tokens
    between the prompt and the continuation (seed 003's summaries). Seq-cls keeps the tokenizer's
    side: transformers' *ForSequenceClassification finds the last non-pad token either way.
    """
    m = cfg.model
    name = model_path(m.name_or_path)
    # Offline, transformers retries a hub id for ~45 s before failing: fail at once, or read the cache.
    hub = hub_load_kwargs(name, what="tokenizer", revision=m.revision)
    # torch/transformers/peft: `plan` imports this module for load_tokenizer and stays torch-free
    from transformers import AutoConfig, AutoTokenizer

    try:
        kw = {"trust_remote_code": m.trust_remote_code, "revision": m.revision, **hub}
        tok = AutoTokenizer.from_pretrained(name, **kw)
        config = AutoConfig.from_pretrained(name, **kw)
    except OSError as e:
        raise _not_downloadable(m.name_or_path, "tokenizer", e) from e
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    if is_decoder_only(config) and m.task == "causal-lm":
        tok.padding_side = "left"
    return tok


def model_path(name: str) -> str:
    """`name`, or the local folder of a packaged-model alias (loralab.models)."""
    alias = resolve_local_alias(name)
    return str(alias) if alias is not None else name


def _not_downloadable(name: str, what: str, e: BaseException) -> LoralabError:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return LoralabError(
        f"cannot load the {what} of '{name}': {first}. loralab bundles model configs, not weights: "
        "the weights need the Hugging Face hub (online, or already in its cache) or a local folder"
    )


def quantization_kwargs(cfg: ExperimentConfig, policy: PrecisionPolicy) -> dict[str, Any]:
    """from_pretrained kwargs for QLoRA (quantization_config, device_map), {} without quantization."""
    q = dict(cfg.model.quantization or {})
    if not (q.get("load_in_4bit") or q.get("load_in_8bit")):
        return {}
    if policy.device != "cuda":
        raise LoralabError(QLORA_ON_CPU)
    try:
        # torch/transformers/peft: `plan` imports this module for load_tokenizer and stays torch-free
        import bitsandbytes  # noqa: F401
        import torch
        from transformers import BitsAndBytesConfig
    except ImportError as e:
        raise LoralabError(QLORA_ON_CPU + f" ({e})") from e
    device_map = q.pop("device_map", None)
    if q.get("load_in_4bit") and "bnb_4bit_compute_dtype" not in q:
        q["bnb_4bit_compute_dtype"] = policy.qlora_compute_dtype or "float16"
    # One GPU per process: the whole quantized model on this process's device.
    return {
        "quantization_config": BitsAndBytesConfig(**q),
        "device_map": device_map if device_map is not None else {"": torch.cuda.current_device()},
    }


def configured_device_map(cfg: ExperimentConfig) -> Any:
    """A device_map from the config: `model.device_map` (when the schema has it) or model.quantization's."""
    value = getattr(cfg.model, "device_map", None)
    if value is None and cfg.model.quantization:
        value = cfg.model.quantization.get("device_map")
    return value


def from_pretrained_kwargs(cfg: ExperimentConfig, policy: PrecisionPolicy, run_dir: Path) -> dict[str, Any]:
    # torch/transformers/peft: `plan` imports this module for load_tokenizer and stays torch-free
    import torch

    m = cfg.model
    kwargs: dict[str, Any] = {
        "trust_remote_code": m.trust_remote_code,  # always explicit: off unless the user opts in
        "dtype": getattr(torch, policy.load_dtype),
    }
    if m.revision:
        kwargs["revision"] = m.revision
    if m.attn_implementation:
        kwargs["attn_implementation"] = m.attn_implementation
    if m.task == "seq-cls" and m.num_labels:
        kwargs["num_labels"] = m.num_labels
        # A checkpoint that already has a head for another label set gets a new head (trained
        # through modules_to_save) instead of a load error.
        kwargs["ignore_mismatched_sizes"] = True
    kwargs.update(quantization_kwargs(cfg, policy))
    device_map = kwargs.get("device_map", configured_device_map(cfg))
    if device_map is not None:
        # accelerate spills layers that fit nowhere to disk and needs a folder for them (seed 003).
        kwargs["device_map"] = device_map
        kwargs["offload_folder"] = str(Path(run_dir) / "offload")
    return kwargs


def load_model(
    cfg: ExperimentConfig, policy: PrecisionPolicy, *, run_dir: Path, tokenizer: Any | None = None
) -> Any:
    """The base transformers model for cfg.model.task, loaded the way `policy` says."""
    kwargs = from_pretrained_kwargs(cfg, policy, run_dir)
    if "offload_folder" in kwargs:
        Path(kwargs["offload_folder"]).mkdir(parents=True, exist_ok=True)
    name = model_path(cfg.model.name_or_path)
    kwargs.update(hub_load_kwargs(name, what="weights", revision=cfg.model.revision))
    try:
        model = auto_class(cfg.model.task).from_pretrained(name, **kwargs)
    except OSError as e:
        raise _not_downloadable(cfg.model.name_or_path, "weights", e) from e
    set_pad_token_id(model, tokenizer)
    return model


def set_pad_token_id(model: Any, tokenizer: Any | None) -> None:
    """Give model.config a pad_token_id: decoder-only seq-cls cannot batch without one."""
    if getattr(model.config, "pad_token_id", None) is not None:
        return
    pad = getattr(tokenizer, "pad_token_id", None) if tokenizer is not None else None
    if pad is None:
        eos = getattr(model.config, "eos_token_id", None)
        pad = eos[0] if isinstance(eos, list) and eos else eos
    if pad is not None:
        model.config.pad_token_id = pad


def forward_accepts(model: Any, name: str) -> bool:
    """Whether model.forward names `name` as a parameter.

    A catch-all **kwargs does not count: Llama-style forwards take **kwargs and pass them to the
    attention functions, so an extra token_type_ids is at best ignored and at worst an error
    (seed 003's inference step).
    """
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return True
    return name in params


def model_input_names(model: Any, tokenizer: Any) -> list[str]:
    """The tokenizer's outputs that the model's forward accepts (token_type_ids dropped if it does not)."""
    names = list(getattr(tokenizer, "model_input_names", ["input_ids", "attention_mask"]))
    return [n for n in names if n != "token_type_ids" or forward_accepts(model, n)]


def lora_kwargs(cfg: ExperimentConfig) -> tuple[dict[str, Any], Any]:
    """(LoraConfig kwargs with layers_to_transform resolved as `plan` resolves them, the plan)."""
    m = cfg.model
    arch = get_arch_record(
        m.name_or_path,
        task=m.task,
        num_labels=m.num_labels,
        revision=m.revision,
        trust_remote_code=m.trust_remote_code,
    )
    lora = cfg.lora_config_dict()
    lora.setdefault("task_type", TASK_TO_TASK_TYPE[m.task])
    dtype = m.torch_dtype if m.torch_dtype not in (None, "auto") else None
    plan = build_plan(arch, dict(lora), source=str(cfg.source), load_dtype=dtype, with_options=False)
    if lora.get("layers_to_transform") is not None:
        # PEFT compares raw integers, so a negative index would silently match nothing.
        lora["layers_to_transform"] = list(plan.spec.layers_to_transform or [])
    return lora, plan


def trainable_count(model: Any) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def apply_lora(model: Any, cfg: ExperimentConfig) -> Any:
    """get_peft_model with cfg's LoRA config; the trainable count must equal plan's."""
    # torch/transformers/peft: `plan` imports this module for load_tokenizer and stays torch-free
    from peft import LoraConfig, get_peft_model

    lora, plan = lora_kwargs(cfg)
    peft_model = get_peft_model(model, LoraConfig(**lora))
    got = trainable_count(peft_model)
    if got != plan.counts.trainable_params:
        raise PlanMismatchError(
            f"PEFT trains {got:,} parameters but plan counted {plan.counts.trainable_params:,} "
            f"for {cfg.model.name_or_path}; this is a loralab planner bug, please report it"
        )
    return peft_model
