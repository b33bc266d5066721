"""Measure the activations a training step keeps for backward: the reference for the estimate.

`torch.autograd.graph.saved_tensors_hooks` sees every tensor autograd saves during the forward pass.
Each storage is counted once (q, k and v split from one fused projection share a storage; a tensor
saved by two ops is held once), and parameters and buffers are excluded: they are weights, not
activations. Under non-reentrant gradient checkpointing (transformers' default since 4.35) the
checkpoint packs the saved tensors of each layer with its own hooks and drops them, and keeps the
layer's inputs alive for the recomputation instead; those inputs never reach our hook, so they are
collected from the checkpointed layers' forward calls and added (the issue's measurement rule).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

_DIGITS = re.compile(r"\.\d+(?=\.|$)")


@dataclass
class SavedTensors:
    """Bytes of the storages a forward pass saved for backward, by module name pattern."""

    total: int = 0
    checkpoint_inputs: int = 0
    by_module: dict[str, int] = field(default_factory=dict)
    items: list[tuple[str, tuple[int, ...], str, int]] = field(default_factory=list)

    def add(self, where: str, shape: tuple[int, ...], dtype: str, nbytes: int) -> None:
        self.total += nbytes
        self.by_module[where] = self.by_module.get(where, 0) + nbytes
        self.items.append((where, shape, dtype, nbytes))


def _storage_key(t: Any) -> tuple[str, int]:
    s = t.untyped_storage()
    return (str(t.device), s.data_ptr())


def _tensors_in(obj: Any) -> list[Any]:
    import torch

    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _tensors_in(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors_in(o)]
    return []


def forward_saving(model: Any, run: Any) -> tuple[Any, SavedTensors]:
    """Call `run()` (a forward pass returning the loss) and measure what it saved for backward."""
    import torch
    from transformers.modeling_layers import GradientCheckpointingLayer as ckpt_layer

    exclude = {_storage_key(p) for p in model.parameters()} | {_storage_key(b) for b in model.buffers()}
    seen: set[tuple[str, int]] = set()
    out = SavedTensors()
    stack: list[str] = []
    handles = []
    # Keyed by id(module) rather than set as attributes: no state is left on the user's model.
    names: dict[int, str] = {id(m): n for n, m in model.named_modules()}
    pending_by: dict[int, list[tuple[tuple[str, int], Any]]] = {i: [] for i in names}

    def pre(mod: Any, args: Any, kwargs: Any) -> None:
        stack.append(names[id(mod)])
        # A checkpointed layer keeps its tensor inputs for the recomputation (outside our hook).
        if (
            isinstance(mod, ckpt_layer)
            and mod.gradient_checkpointing
            and mod.training
            and torch.is_grad_enabled()
        ):
            for t in _tensors_in(args) + _tensors_in(kwargs):
                key = _storage_key(t)
                if key in exclude or key in seen:
                    continue
                pending_by[id(mod)].append((key, t))

    def post(mod: Any, args: Any, kwargs: Any, output: Any) -> None:
        stack.pop()
        pending, pending_by[id(mod)] = pending_by[id(mod)], []
        # Kept only when the layer's output is part of the graph (its backward will run).
        if not any(t.requires_grad for t in _tensors_in(output)):
            return
        for key, t in pending:
            if key not in seen:
                seen.add(key)
                nbytes = t.untyped_storage().nbytes()
                out.checkpoint_inputs += nbytes
                out.add(
                    _DIGITS.sub(".N", names[id(mod)]) + ":checkpoint", tuple(t.shape), str(t.dtype), nbytes
                )

    for mod in model.modules():
        handles.append(mod.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(mod.register_forward_hook(post, with_kwargs=True))

    def pack(t: Any) -> Any:
        key = _storage_key(t)
        if key not in exclude and key not in seen:
            seen.add(key)
            where = _DIGITS.sub(".N", stack[-1]) if stack else "<top>"
            out.add(where, tuple(t.shape), str(t.dtype).replace("torch.", ""), t.untyped_storage().nbytes())
        return t

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            result = run()
    finally:
        for h in handles:
            h.remove()
    return result, out
