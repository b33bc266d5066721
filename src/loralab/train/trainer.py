"""The Hugging Face Trainer, with what loralab's runs need on top.

- class-weighted cross-entropy for classification (seed 000: inverse frequency ** alpha);
- length-bucketed batches (batching.LengthBucketBatchSampler) instead of padding to max_length;
- evaluation through loralab's own prediction loop, which keeps every prediction aligned with its
  input by index: in transformers 5, `train_sampling_strategy: group_by_length` also reorders
  `Trainer.predict`'s batches, and comparing those with labels in dataset order gave chance-level
  accuracy on Banking77 (issue 4);
- a loss that is NaN/inf stops the run at that step (NonFiniteLoss) instead of training on garbage;
- checkpoints count only once complete: a `.complete` marker is renamed into place last, so a run
  killed mid-save (kill -9) resumes from the previous complete checkpoint; one whose parts are missing
  or cut short (rundir.checkpoint_problems) does not count either;
- checkpoints hold no pickles: optimizer, scheduler and RNG states go through safe_state
  (safetensors + JSON) and the training arguments are written as JSON (DeepSpeed/FSDP keep their
  own checkpoint formats).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from transformers import Trainer

from loralab.errors import LoralabError
from loralab.train.batching import ExampleDataset, LengthBucketBatchSampler, PadCollator
from loralab.train.checkpoints import SafeCheckpointMixin
from loralab.train.rundir import COMPLETE_MARKER, complete_checkpoints


class NonFiniteLoss(LoralabError):
    def __init__(self, step: int, value: float, last_checkpoint: str | None, cause: str):
        self.step, self.value, self.last_checkpoint, self.cause = step, value, last_checkpoint, cause
        ckpt = last_checkpoint or "none yet"
        super().__init__(
            f"training loss became {value} at step {step}; the run was stopped. Last good checkpoint: "
            f"{ckpt}. Likely cause: {cause}"
        )


class LoralabTrainer(SafeCheckpointMixin, Trainer):
    def __init__(
        self,
        *args: Any,
        class_weights: list[float] | None = None,
        evaluate_fn: Any = None,
        collator: PadCollator | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.class_weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.evaluate_fn = evaluate_fn
        self.pad_collator = collator
        # Our loss is a per-batch mean, so let the Trainer divide by gradient_accumulation_steps.
        self.model_accepts_loss_kwargs = False
        self.samples_seen = 0
        self.tokens_seen = 0
        self.fit_seconds = 0.0
        self._t_step = time.perf_counter()

    # ---- data -----------------------------------------------------------------------------
    def get_train_dataloader(self) -> DataLoader[Any]:
        ds = self.train_dataset
        assert isinstance(ds, ExampleDataset)
        sampler = LengthBucketBatchSampler(
            ds.ex.lengths(), self.args.per_device_train_batch_size, seed=self.args.seed
        )
        dl = DataLoader(ds, batch_sampler=sampler, collate_fn=self.pad_collator, num_workers=0)
        return self.accelerator.prepare(dl)

    # ---- loss -----------------------------------------------------------------------------
    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        logits = outputs.logits
        if labels.dim() == 1:  # classification
            weight = self.class_weights.to(logits.device) if self.class_weights is not None else None
            loss = F.cross_entropy(logits.float(), labels, weight=weight)
        else:  # token-level LM loss; -100 marks prompt/padding tokens
            shift = 0 if getattr(model.config, "is_encoder_decoder", False) else 1
            lg = logits[:, : logits.size(1) - shift].float()
            lb = labels[:, shift:]
            loss = F.cross_entropy(lg.reshape(-1, lg.size(-1)), lb.reshape(-1), ignore_index=-100)
        return (loss, outputs) if return_outputs else loss

    def training_step(
        self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None
    ) -> torch.Tensor:
        self.samples_seen += int(inputs["input_ids"].size(0))
        self.tokens_seen += int(inputs["attention_mask"].sum())
        loss = super().training_step(model, inputs, num_items_in_batch)
        value = float(loss.detach())
        if not math.isfinite(value):
            last = complete_checkpoints(Path(str(self.args.output_dir)))
            raise NonFiniteLoss(
                self.state.global_step + 1,
                value,
                str(last[-1]) if last else None,
                _likely_cause(self.args, value),
            )
        return loss

    # ---- evaluation -----------------------------------------------------------------------
    def evaluate(
        self, eval_dataset: Any = None, ignore_keys: Any = None, metric_key_prefix: str = "eval"
    ) -> dict[str, float]:
        if self.evaluate_fn is None:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        t0 = time.perf_counter()
        scalars = self.evaluate_fn(self.model)
        metrics = {f"{metric_key_prefix}_{k}": float(v) for k, v in scalars.items()}
        metrics[f"{metric_key_prefix}_runtime"] = round(time.perf_counter() - t0, 3)
        metrics["epoch"] = float(self.state.epoch or 0.0)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    # ---- checkpoints ----------------------------------------------------------------------
    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        super()._save_checkpoint(model, trial)
        if not self.is_world_process_zero():
            return
        ckpt = Path(str(self.args.output_dir)) / f"checkpoint-{self.state.global_step}"
        if ckpt.is_dir():
            tmp = ckpt / f"{COMPLETE_MARKER}.tmp"
            tmp.write_text(f"{self.state.global_step}\n")
            os.replace(tmp, ckpt / COMPLETE_MARKER)


def _likely_cause(args: Any, value: float) -> str:
    if getattr(args, "fp16", False):
        return "fp16 overflow: use bf16 on a GPU that supports it, or a lower learning rate"
    if args.learning_rate >= 1e-3:
        return f"learning rate {args.learning_rate:g} too high for this model: try 10x lower"
    return "exploding gradients or bad inputs: lower the learning rate or set max_grad_norm (e.g. 1.0)"
