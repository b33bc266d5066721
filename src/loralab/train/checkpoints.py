"""Checkpoints without pickles: the Trainer's torch.save/torch.load of optimizer, scheduler, scaler
and RNG states replaced by safetensors + JSON (loralab.train.safe_state); training arguments as JSON.
DeepSpeed and FSDP keep their own checkpoint formats."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from loralab.errors import LoralabError
from loralab.train import safe_state

COMPLETE_MARKER = ".complete"  # renamed into place after every other part of a checkpoint is written


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
        missing = [p for p in ("optimizer", "scheduler") if safe_state.problem(Path(checkpoint) / p)]
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


def _json_problem(path: Path, required_key: str | None = None) -> str | None:
    if not path.is_file():
        return f"{path.name} missing"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return f"{path.name} unreadable: {type(e).__name__}"
    if required_key is not None and (not isinstance(data, dict) or required_key not in data):
        return f"{path.name} has no {required_key}"
    return None


def _weights_problem(ckpt: Path) -> str | None:
    """The model part: a LoRA adapter (adapter_model.safetensors + adapter_config.json), or the whole
    model's safetensors when LoRA is off (one file, or shards listed by an index)."""
    if (ckpt / "adapter_config.json").exists() or (ckpt / "adapter_model.safetensors").exists():
        return _json_problem(ckpt / "adapter_config.json") or safe_state.safetensors_problem(
            ckpt / "adapter_model.safetensors"
        )
    index = ckpt / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, AttributeError) as e:
            return f"{index.name} unreadable: {type(e).__name__}"
        for shard in sorted(shards):
            found = safe_state.safetensors_problem(ckpt / shard)
            if found:
                return found
        return None
    if (ckpt / "model.safetensors").exists():
        return safe_state.safetensors_problem(ckpt / "model.safetensors")
    return "adapter weights missing (no adapter_model.safetensors)"


def checkpoint_problems(ckpt: Path) -> list[str]:
    """What keeps `ckpt` from resuming the run exactly, one entry per missing or unreadable part; empty
    when it is whole. The Trainer itself resumes without a word from a checkpoint that lacks its
    optimizer, scheduler or RNG state (fresh ones instead), which silently changes the run.

    loralab's own format holds: the `.complete` marker (written last), adapter weights, trainer state,
    optimizer, scheduler and RNG state (one per process under DDP), and a loss scaler when present.
    DeepSpeed and FSDP keep weights, optimizer and RNG in their own layouts; for those the marker,
    the trainer state and that their state is there (DeepSpeed's `latest` folder, FSDP's optimizer)
    are checked.
    """
    if not (ckpt / COMPLETE_MARKER).exists():
        return ["no .complete marker: its save was interrupted"]
    found = [_json_problem(ckpt / "trainer_state.json", "global_step")]
    latest = ckpt / "latest"
    if latest.is_file() or any(ckpt.glob("global_step*")):  # DeepSpeed
        tag = latest.read_text(encoding="utf-8").strip() if latest.is_file() else ""
        if not tag or not (ckpt / tag).is_dir():
            found.append(f"DeepSpeed state folder {tag or '(latest)'} missing")
    elif any(ckpt.glob("pytorch_model_fsdp*")) or any(ckpt.glob("optimizer_0*")):  # FSDP
        if not any(ckpt.glob("optimizer_0*")) and not (ckpt / "optimizer.bin").is_file():
            found.append("FSDP optimizer state missing")
    else:
        found += [_weights_problem(ckpt), safe_state.problem(ckpt / "optimizer")]
        found.append(safe_state.problem(ckpt / "scheduler"))
        rng = sorted(p.with_suffix("") for p in ckpt.glob("rng_state*.json"))
        found += [safe_state.problem(p) for p in rng] if rng else ["RNG state missing (rng_state.*)"]
        if (ckpt / "scaler.json").exists() or (ckpt / "scaler.safetensors").exists():
            found.append(safe_state.problem(ckpt / "scaler"))
    return [f for f in found if f]


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
