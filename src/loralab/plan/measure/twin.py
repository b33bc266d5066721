"""`loralab plan --measure`: one real training step of a shrunken twin, measured term by term.

The twin has the model's family and module structure with 2 layers and hidden size 64 (the
preflight twin, `loralab.arch.twin.twin_config`), random weights, and the configured LoRA
mapped onto its layers. The step runs the way Trainer runs it: forward (under autocast when the
config trains in bf16/fp16), backward, one optimizer step of the configured optimizer. Measured:
- weights / trainable: bytes of the frozen and trainable parameters (each storage once);
- gradients: bytes of `.grad` after backward;
- optimizer: bytes of every tensor in `optimizer.state` after the step;
- activations: storages saved for backward (`loralab.plan.measure.saved`);
- peak: `torch.cuda.max_memory_allocated` when the step runs on a GPU.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field, replace
from typing import Any

from loralab.arch.hf import auto_class, hf_config_from_dict
from loralab.arch.introspect import introspect
from loralab.arch.resolve import resolve_model
from loralab.arch.twin import twin_config, twin_lora
from loralab.errors import ConfigError, Problem
from loralab.plan.estimate.memory import estimate_memory
from loralab.plan.estimate.state_memory import Sharding
from loralab.plan.measure.saved import SavedTensors, forward_saving
from loralab.plan.planner import build_plan


@dataclass
class MeasuredStep:
    weights: int
    trainable: int
    gradients: int
    optimizer: int
    activations: int
    peak: int | None = None
    saved: SavedTensors = field(default_factory=SavedTensors)

    def terms(self) -> dict[str, int]:
        return {
            "weights": self.weights,
            "trainable": self.trainable,
            "gradients": self.gradients,
            "optimizer": self.optimizer,
            "activations": self.activations,
        }


def _unique_bytes(tensors: list[Any]) -> int:
    seen: dict[tuple[str, int], int] = {}
    for t in tensors:
        s = t.untyped_storage()
        seen[(str(t.device), s.data_ptr())] = s.nbytes()
    return sum(seen.values())


def make_optimizer(model: Any, optim: str, optim_args: str | None = None) -> Any:
    """The optimizer Trainer would create for `training_args.optim` (its own factory)."""
    # torch/transformers/peft: only `plan --measure` runs a step; a plain plan stays torch-free
    from transformers import Trainer, TrainingArguments

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(output_dir=tmp, optim=optim, optim_args=optim_args, report_to=[])
        cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    return cls([p for p in model.parameters() if p.requires_grad], **kwargs)


def measure_step(
    model: Any,
    batch: dict[str, Any],
    *,
    optim: str = "adamw_torch",
    optim_args: str | None = None,
    autocast: str | None = None,
) -> MeasuredStep:
    """Run forward/backward/optimizer step on `model` with `batch` and measure each term."""
    # torch/transformers/peft: only `plan --measure` runs a step; a plain plan stays torch-free
    import torch

    device = next(model.parameters()).device
    frozen = [p for p in model.parameters() if not p.requires_grad]
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(model, optim, optim_args)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model.train()

    def run() -> Any:
        with torch.autocast(
            device.type, dtype=getattr(torch, autocast or "bfloat16"), enabled=autocast is not None
        ):
            return model(**batch).loss

    loss, saved = forward_saving(model, run)
    loss.backward()
    grads = [p.grad for p in trainable if p.grad is not None]
    gradients = _unique_bytes(grads)
    opt.step()
    state = [v for st in opt.state.values() for v in st.values() if isinstance(v, torch.Tensor)]
    peak = int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None
    return MeasuredStep(
        weights=_unique_bytes(frozen),
        trainable=_unique_bytes(trainable),
        gradients=gradients,
        optimizer=_unique_bytes(state),
        activations=saved.total,
        peak=peak,
        saved=saved,
    )


def twin_batch(model: Any, task: str, b: int, s: int, *, decoder_len: int | None = None) -> dict[str, Any]:
    """Random token ids with no padding (the estimate is then asked for an unpadded batch)."""
    # torch/transformers/peft: only `plan --measure` runs a step; a plain plan stays torch-free
    import torch

    g = torch.Generator().manual_seed(0)
    vocab = int(model.config.vocab_size)
    device = next(model.parameters()).device
    ids = torch.randint(4, vocab, (b, s), generator=g)
    batch: dict[str, Any] = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if task == "seq-cls":
        batch["labels"] = torch.arange(b) % int(model.config.num_labels)
    elif task == "causal-lm":
        batch["labels"] = ids.clone()
    else:
        batch["labels"] = torch.randint(4, vocab, (b, decoder_len or s), generator=g)
    return {k: v.to(device) for k, v in batch.items()}


@dataclass
class TwinComparison:
    """Estimated vs measured, term by term, for the twin of a config's model."""

    rows: list[tuple[str, int | None, int | None]]
    twin: str  # e.g. "2-layer qwen3 twin, hidden 64, micro-batch 4 x 128"
    notes: list[str] = field(default_factory=list)

    def ratios(self) -> dict[str, float]:
        return {t: e / m for t, e, m in self.rows if e is not None and m}


def twin_setup(setup: Any, device: str) -> Any:
    """The setup the twin runs with: one device, no DeepSpeed (one process cannot shard), batch
    and length capped so the step takes seconds on a CPU, an unpadded batch."""
    return replace(
        setup,
        micro_batch=min(setup.micro_batch, 4),
        seq_len=min(setup.seq_len, 128),
        sharding=Sharding(gpus=1),
        quantization=None,
        device=device,
        padded=False,
    )


def measure_twin(cfg: Any, plan: Any, setup: Any) -> TwinComparison:
    """Build the twin of `cfg`'s model, estimate and measure one training step, compare."""
    # torch/transformers/peft: only `plan --measure` runs a step; a plain plan stays torch-free
    import torch
    from peft import LoraConfig, get_peft_model

    m = cfg.model
    task = m.task
    resolved = resolve_model(m.name_or_path, revision=m.revision, trust_remote_code=m.trust_remote_code)
    hf = hf_config_from_dict(resolved.config)  # as preflight and introspection build it
    tcfg = twin_config(hf, task, m.num_labels)
    tcfg._attn_implementation = setup.attn_implementation
    device = "cuda" if torch.cuda.is_available() else "cpu"
    notes: list[str] = []
    tsetup = twin_setup(setup, device)
    if setup.quantization is not None:
        notes.append(
            "the twin runs unquantized in the compute dtype: bitsandbytes needs a GPU and its layout is "
            "checked by arithmetic, not measured"
        )
    if getattr(setup.sharding, "zero_stage", None) is not None or setup.gpus > 1:
        notes.append(
            "the twin runs on one device without DeepSpeed; the sharding arithmetic is shown in the plan"
        )
    lora = dict(cfg.lora_config_dict())
    lora.setdefault("task_type", plan.spec.task_type)
    tlora = twin_lora(lora, plan.arch.num_layers)
    record = introspect(
        tcfg.to_dict(), task=task, num_labels=m.num_labels, model_id=f"{m.name_or_path} (twin)"
    )
    tplan = build_plan(record, dict(tlora), load_dtype=tsetup.load_dtype, with_options=False)
    est = estimate_memory(tplan, tcfg.to_dict(), tsetup)

    torch.manual_seed(0)
    act = tsetup.activation_setup()
    try:
        model = auto_class(task).from_config(tcfg, attn_implementation=setup.attn_implementation)
    except ValueError as e:
        if "attention implementation" not in str(e):
            raise
        problem = Problem(
            str(cfg.source),
            "model.attn_implementation",
            f"{record.architecture} does not support '{setup.attn_implementation}'",
            "set model.attn_implementation: eager (or pass --attn-implementation eager)",
        )
        raise ConfigError([problem]) from e
    model = model.to(dtype=getattr(torch, act.dtype), device=device)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = 0
    model = get_peft_model(model, LoraConfig(**tlora))
    if tsetup.gradient_checkpointing:
        model.activation_checkpointing_enable()
    batch = twin_batch(model, task, tsetup.micro_batch, tsetup.seq_len)
    meas = measure_step(model, batch, optim=tsetup.optim, optim_args=tsetup.optim_args, autocast=act.autocast)
    rows: list[tuple[str, int | None, int | None]] = [
        (k, est.per_device[k] if est.modelled or k != "activations" else None, v)
        for k, v in meas.terms().items()
    ]
    if meas.peak is not None and est.modelled:
        rows.append(
            ("peak (total - overhead)", est.per_device["total"] - est.per_device["overhead"], meas.peak)
        )
    else:
        notes.append("no GPU here: the peak (torch.cuda.max_memory_allocated) is not measured")
    twin = (
        f"{record.num_layers}-layer {record.model_type} twin, "
        f"hidden {tcfg.to_dict().get('hidden_size', '?')}, "
        f"micro-batch {tsetup.micro_batch} x {tsetup.seq_len} tokens, {act.dtype}"
        + (f" + {act.autocast} autocast" if act.autocast else "")
        + f", {device}"
    )
    return TwinComparison(rows=rows, twin=twin, notes=notes)
