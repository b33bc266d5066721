"""Training state (optimizer, scheduler, RNG) as safetensors + JSON instead of pickles.

The Trainer writes optimizer.pt, scheduler.pt, rng_state.pth and training_args.bin with torch.save,
i.e. pickles. loralab's standard is that checkpoints are saved and loaded as safetensors: tensors go
into a .safetensors file, everything else (nesting, numbers, strings, int dict keys, tuples) into a
JSON skeleton that points at the tensors by name. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file


def _encode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = obj.detach().cpu().clone().contiguous()
        return {"__tensor__": name}
    if isinstance(obj, np.ndarray):
        name = f"t{len(tensors)}"
        tensors[name] = torch.from_numpy(np.ascontiguousarray(obj))
        return {"__ndarray__": name, "dtype": str(obj.dtype)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {"__dict__": [[_encode(k, tensors), _encode(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, tensors) for v in obj]
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} in a safetensors checkpoint")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__ndarray__" in obj:
        return tensors[obj["__ndarray__"]].numpy().astype(obj["dtype"])
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    if "__dict__" in obj:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__dict__"]}
    raise ValueError(f"unknown entry in a state skeleton: {sorted(obj)}")


def save_state(state: Any, path: Path) -> None:
    """Write `<path>.safetensors` and `<path>.json`; both via a temporary file and a rename."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _encode(state, tensors)
    st, js = path.with_suffix(".safetensors"), path.with_suffix(".json")
    tmp_st, tmp_js = st.with_name(st.name + ".tmp"), js.with_name(js.name + ".tmp")
    save_file(tensors, str(tmp_st))
    tmp_js.write_text(json.dumps(skeleton))
    os.replace(tmp_st, st)
    os.replace(tmp_js, js)


def load_state(path: Path, device: str | torch.device = "cpu") -> Any:
    dev = torch.device(device)
    # DDP on CPU runs on "cpu:0" (accelerate's MULTI_CPU device), which safetensors refuses
    tensors = load_file(
        str(path.with_suffix(".safetensors")), device="cpu" if dev.type == "cpu" else str(dev)
    )
    return _decode(json.loads(path.with_suffix(".json").read_text()), tensors)


def exists(path: Path) -> bool:
    return path.with_suffix(".safetensors").is_file() and path.with_suffix(".json").is_file()
