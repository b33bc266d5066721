"""Checkpoints without pickles: the Trainer's torch.save/torch.load of optimizer, scheduler, scaler
and RNG states replaced by safetensors + JSON (loralab.train.safe_state); training arguments as JSON.
DeepSpeed and FSDP keep their own checkpoint formats."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from loralab.errors import LoralabError
from loralab.train import safe_state
from loralab.train.rundir import state_problem


class SafeCheckpointMixin:
    """Replaces the Trainer's torch.save/torch.load of training state with safetensors + JSON."""

    args: Any
    optimizer: Any
    lr_scheduler: Any
    is_deepspeed_enabled: bool
    is_fsdp_enabled: bool

    def _own_format(self) -> bool:
        return not (self.is_deepspeed_enabled or self.is_fsdp_enabled)

    def _rng_path(self, folder: str) -> Path:
        suffix = "" if self.args.world_size <= 1 else f"_{self.args.process_index}"
        return Path(folder) / f"rng_state{suffix}"

    def _save_rng_state(self, output_dir: str) -> None:
        states: dict[str, Any] = {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "cpu": torch.random.get_rng_state(),
        }
        if torch.cuda.is_available():
            states["cuda"] = torch.cuda.random.get_rng_state_all()
        os.makedirs(output_dir, exist_ok=True)
        safe_state.save_state(states, self._rng_path(output_dir))

    def _load_rng_state(self, checkpoint: str | None) -> None:
        if checkpoint is None or not safe_state.exists(self._rng_path(checkpoint)):
            return
        states = safe_state.load_state(self._rng_path(checkpoint))
        random.setstate(_as_python_state(states["python"]))
        np.random.set_state(states["numpy"])
        torch.random.set_rng_state(states["cpu"])
        if torch.cuda.is_available() and "cuda" in states:
            torch.cuda.random.set_rng_state_all(states["cuda"])

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        if not self._own_format():
            super()._save_optimizer_and_scheduler(output_dir)  # type: ignore[misc]
            return
        if self.args.should_save:
            safe_state.save_state(self.optimizer.state_dict(), Path(output_dir) / "optimizer")
            safe_state.save_state(self.lr_scheduler.state_dict(), Path(output_dir) / "scheduler")

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        if checkpoint is None:
            return
        if not self._own_format():
            super()._load_optimizer_and_scheduler(checkpoint)  # type: ignore[misc]
            return
        missing = [p for p in ("optimizer", "scheduler") if state_problem(Path(checkpoint) / p)]
        if missing:
            # The Trainer's fallback would start fresh ones without a word (or unpickle a stray .pt).
            raise LoralabError(f"{checkpoint}: {' and '.join(missing)} state missing or unreadable")
        device = self.args.device
        self.optimizer.load_state_dict(safe_state.load_state(Path(checkpoint) / "optimizer", device))
        self.lr_scheduler.load_state_dict(safe_state.load_state(Path(checkpoint) / "scheduler"))

    def _save_scaler(self, output_dir: str) -> None:
        scaler = getattr(getattr(self, "accelerator", None), "scaler", None)
        if scaler is not None and self.args.should_save:
            safe_state.save_state(scaler.state_dict(), Path(output_dir) / "scaler")

    def _load_scaler(self, checkpoint: str | None) -> None:
        scaler = getattr(getattr(self, "accelerator", None), "scaler", None)
        if scaler is not None and checkpoint and safe_state.exists(Path(checkpoint) / "scaler"):
            scaler.load_state_dict(safe_state.load_state(Path(checkpoint) / "scaler"))

    def _save(self, output_dir: str | None = None, state_dict: dict[str, Any] | None = None) -> None:
        super()._save(output_dir, state_dict)  # type: ignore[misc]
        folder = Path(output_dir if output_dir is not None else self.args.output_dir)
        pickled = folder / "training_args.bin"
        if pickled.exists():
            pickled.unlink()
            (folder / "training_args.json").write_text(self.args.to_json_string())


def _as_python_state(v: Any) -> Any:
    """random.setstate wants tuples all the way down (JSON gave lists inside the tuple)."""
    if isinstance(v, list | tuple):
        return tuple(_as_python_state(x) for x in v)
    return v


def save_adapter(trainer: Any, adapter_dir: Path) -> None:
    """Write the trained adapter as safetensors. Every process calls it: under ZeRO-3 the shards are
    gathered by all ranks, under FSDP the full state dict is a collective too.

    Plain and DDP runs: PEFT's `save_pretrained` on rank 0. ZeRO-3 and FSDP: the Trainer's
    `save_model`, which gathers the shards (ZeRO-3 through `_zero3_consolidated_16bit_state_dict`, which
    needs `stage3_gather_16bit_weights_on_model_save`; preflight requires it). FSDP with a sharded
    state dict makes `save_model` write nothing at all (transformers' Trainer.save_model), so the
    final save switches to FULL_STATE_DICT first, as TRL's scripts do (accelerate #3508)."""
    if not (trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled):
        if trainer.args.should_save:
            trainer.model.save_pretrained(adapter_dir, safe_serialization=True)
        return
    if trainer.is_fsdp_enabled:
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(str(adapter_dir))
    if trainer.args.should_save:
        # save_model also pickles the TrainingArguments there; the adapter folder holds only
        # safetensors and JSON (the arguments are in config.yaml and each checkpoint's JSON).
        (adapter_dir / "training_args.bin").unlink(missing_ok=True)
