"""`loralab plan --measure`: one real training step of a shrunken twin, measured term by term.

The twin has the model's family and module structure with 2 layers and hidden size 64 (the
preflight twin, `loralab.train.preflight.twin_config`), random weights, and the configured LoRA
mapped onto its layers. The step runs the way Trainer runs it: forward (under autocast when the
config trains in bf16/fp16), backward, one optimizer step of the configured optimizer. Measured:
- weights / trainable: bytes of the frozen and trainable parameters (each storage once);
- gradients: bytes of `.grad` after backward;
- optimizer: bytes of every tensor in `optimizer.state` after the step;
- activations: storages saved for backward (`loralab.plan.saved`);
- peak: `torch.cuda.max_memory_allocated` when the step runs on a GPU.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from typing import Any

from loralab.plan.saved import SavedTensors, forward_saving


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
