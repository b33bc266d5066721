"""Every process of a distributed run must train the same experiment on the same data: a node with a
stale copy of the config or of a data file would otherwise train silently on something else (its
gradients still average in). Checked once at start, after the Trainer has set up the process group."""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.distributed as dist

from loralab.config.models import ExperimentConfig
from loralab.config.resolved import DATA_KEYS, resolved_config
from loralab.data import file_digest
from loralab.errors import LoralabError


class RanksDisagree(LoralabError):
    """Processes of one run loaded different configs or data."""


def run_fingerprint(cfg: ExperimentConfig) -> dict[str, str]:
    """sha256 of the resolved experiment and of each data file (its content, as data_files.json records
    it), as this process sees them."""
    config = json.dumps(resolved_config(cfg), sort_keys=True, default=str).encode()
    text = {"config": hashlib.sha256(config).hexdigest()}
    for key, fp in data_fingerprints(cfg).items():
        text[key] = fp.get("sha256") or f"unreadable: {fp.get('error')}"
    return text


def data_fingerprints(cfg: ExperimentConfig) -> dict[str, Any]:
    """{"data.train_file": {path, bytes, sha256}, ...} for each data file of the experiment; a file
    that cannot be read gets its error instead (the data stage reports it properly)."""
    out: dict[str, Any] = {}
    for key in DATA_KEYS:
        name = getattr(cfg.data, key)
        if not name:
            continue
        path = Path(cfg.resolve_path(name)).resolve()
        try:
            out[f"data.{key}"] = {
                "path": str(path),
                "bytes": path.stat().st_size,
                "sha256": file_digest(path),
            }
        except OSError as e:
            out[f"data.{key}"] = {"path": str(path), "error": e.strerror or type(e).__name__}
    return out


def check_ranks_agree(mine: dict[str, Any], gather: Callable[[Any], list[Any]]) -> None:
    """Compare this process's fingerprint with every other's (`gather` is all_gather_object); raise
    naming the ranks, hosts and parts that differ from rank 0's."""
    everyone = gather({"host": socket.gethostname(), **mine})
    ref = everyone[0]
    lines = []
    for rank, fp in enumerate(everyone[1:], start=1):
        parts = sorted(k for k in ref.keys() | fp.keys() if k != "host" and ref.get(k) != fp.get(k))
        if parts:
            where = f"rank {rank} on {fp.get('host')} differs from rank 0 on {ref.get('host')}"
            lines.append(f"{where} in {', '.join(parts)}")
    if lines:
        raise RanksDisagree(
            "the processes of this run do not train the same experiment: "
            + "; ".join(lines)
            + ". Give every node the same config and data files (a shared filesystem, or copy them), "
            "then start again"
        )


def torch_gather(obj: Any) -> list[Any]:
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
