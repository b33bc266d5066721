"""Measure the activations a training step keeps for backward: the reference for the estimate.

`torch.autograd.graph.saved_tensors_hooks` sees every tensor autograd saves during the forward pass.
Each storage is counted once (q, k and v split from one fused projection share a storage; a tensor
saved by two ops is held once), and parameters and buffers are excluded: they are weights, not
activations. Under non-reentrant gradient checkpointing (transformers' default since 4.35) the
checkpoint packs the saved tensors of each layer with its own hooks and drops them, and keeps the
layer's inputs alive for the recomputation instead; those inputs never reach our hook, so they are
collected from the checkpointed layers' forward calls and added (the issue's measurement rule).

Only what is still held when the forward pass returns counts. A graph that no output depends on is
freed with what it saved as soon as its last tensor goes: PEFT's DoRA builds `lora_B(lora_A(eye))`
on every call and uses it only detached (peft/tuners/lora/dora.py `get_lora_weight`), so the
(in, in) identity and the (in, r) product it packs are gone before backward runs; so is the (out, in)
`W.T + s*BA` of a Conv1D layer (PEFT's `transpose` wraps W.T in a new, trainable nn.Parameter), whose
norm is detached too. Those bytes are reported apart (`transient`). Identifying a storage by its
address alone would also merge a later storage that the allocator placed where a freed one was; a
weak reference to each packed tensor tells the two apart.
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass, field
from typing import Any

_DIGITS = re.compile(r"\.\d+(?=\.|$)")


@dataclass
class SavedTensors:
    """Bytes of the storages a forward pass saved for backward, by module name pattern."""

    total: int = 0
    checkpoint_inputs: int = 0
    transient: int = 0  # saved by graphs freed during the forward pass (not part of `total`)
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
    # torch/transformers: only a measured step needs them; a plain plan stays torch-free
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
    # torch/transformers: only a measured step needs them; a plain plan stays torch-free
    import torch
    from transformers.modeling_layers import GradientCheckpointingLayer as ckpt_layer

    exclude = {_storage_key(p) for p in model.parameters()} | {_storage_key(b) for b in model.buffers()}
    # storage -> (where, shape, dtype, bytes, weak references to the tensors packed on it)
    packed: dict[tuple[str, int], tuple[str, tuple[int, ...], str, int, list[Any]]] = {}
    retired: list[int] = []  # bytes of packed storages that were freed (their address was reused)
    held: dict[tuple[str, int], tuple[str, tuple[int, ...], str, int]] = {}  # checkpoint inputs
    out = SavedTensors()
    stack: list[str] = []
    handles = []
    # Keyed by id(module) rather than set as attributes: no state is left on the user's model.
    names: dict[int, str] = {id(m): n for n, m in model.named_modules()}
    pending_by: dict[int, list[tuple[tuple[str, int], Any]]] = {i: [] for i in names}

    def alive(refs: list[Any]) -> bool:
        return any(r() is not None for r in refs)

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
                if key in exclude:
                    continue
                pending_by[id(mod)].append((key, t))

    def post(mod: Any, args: Any, kwargs: Any, output: Any) -> None:
        stack.pop()
        pending, pending_by[id(mod)] = pending_by[id(mod)], []
        # Kept only when the layer's output is part of the graph (its backward will run).
        if not any(t.requires_grad for t in _tensors_in(output)):
            return
        for key, t in pending:
            if key not in held:
                where = _DIGITS.sub(".N", names[id(mod)]) + ":checkpoint"
                held[key] = (where, tuple(t.shape), str(t.dtype), t.untyped_storage().nbytes())

    for mod in model.modules():
        handles.append(mod.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(mod.register_forward_hook(post, with_kwargs=True))

    def pack(t: Any) -> Any:
        key = _storage_key(t)
        if key in exclude:
            return t
        entry = packed.get(key)
        if entry is not None and not alive(entry[4]):  # a freed storage's address, reused
            retired.append(entry[3])
            entry = None
        if entry is None:
            where = _DIGITS.sub(".N", stack[-1]) if stack else "<top>"
            dtype = str(t.dtype).replace("torch.", "")
            entry = (where, tuple(t.shape), dtype, t.untyped_storage().nbytes(), [])
            packed[key] = entry
        # An alias without the autograd history: returning `t` itself would make a node that saves its
        # own output (linalg.norm, softmax...) hold that output and, through its grad_fn, itself, a
        # cycle that keeps a discarded graph alive for good. Plain autograd stores outputs without
        # their grad_fn; the alias restores that, and only the saving node holds it.
        alias = t.detach()
        entry[4].append(weakref.ref(alias))
        return alias

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            result = run()
    finally:
        for h in handles:
            h.remove()
    # The graph hangs off `result` now: a packed tensor still alive is held by it for backward.
    for where, shape, dtype, nbytes, refs in packed.values():
        if alive(refs):
            out.add(where, shape, dtype, nbytes)
        else:
            out.transient += nbytes
    out.transient += sum(retired)
    for key, (where, shape, dtype, nbytes) in held.items():
        if key not in packed or not alive(packed[key][4]):
            out.checkpoint_inputs += nbytes
            out.add(where, shape, dtype, nbytes)
    return result, out
