"""Tokenise a split once and cache it per (tokenizer, texts, max_length).

The cache lives under `$LORALAB_CACHE_DIR/tokens` (default ~/.cache/loralab/tokens) as a NumPy
archive of concatenated ids plus offsets (no pickle), keyed by a hash of the tokenizer's full
serialisation, the rendered texts (so the template is covered) and max_length.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from loralab.train.batching import Examples

CACHE_VERSION = 1


def cache_dir() -> Path:
    base = os.environ.get("LORALAB_CACHE_DIR") or str(Path.home() / ".cache" / "loralab")
    return Path(base) / "tokens"


def tokenizer_fingerprint(tokenizer: Any) -> str:
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    h.update(backend.to_str().encode() if backend is not None else repr(tokenizer).encode())
    h.update(json.dumps(sorted(tokenizer.special_tokens_map.items()), default=str).encode())
    return h.hexdigest()


def _key(tokenizer: Any, texts: list[str], max_length: int, pair: bool) -> str:
    h = hashlib.sha256()
    h.update(f"v{CACHE_VERSION}|{max_length}|{pair}|{tokenizer_fingerprint(tokenizer)}".encode())
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()[:32]


def _save(path: Path, ids: list[list[int]], truncated: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    flat = np.fromiter((t for s in ids for t in s), dtype=np.int64)
    offsets = np.cumsum([0] + [len(s) for s in ids]).astype(np.int64)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
    np.savez(tmp, ids=flat, offsets=offsets, truncated=np.array([truncated]))
    os.replace(tmp, path)


def _load(path: Path) -> tuple[list[list[int]], int] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            flat, offsets, truncated = z["ids"], z["offsets"], int(z["truncated"][0])
    except (OSError, ValueError, KeyError):
        return None
    ids = [flat[offsets[i] : offsets[i + 1]].tolist() for i in range(len(offsets) - 1)]
    return ids, truncated


def tokenize_texts(tokenizer: Any, texts: list[str], max_length: int) -> tuple[list[list[int]], int]:
    """Token ids (with special tokens, no padding) and how many texts were truncated."""
    path = cache_dir() / f"{_key(tokenizer, texts, max_length, False)}.npz"
    hit = _load(path) if path.exists() else None
    if hit is not None:
        return hit
    full = tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]
    truncated = sum(len(x) > max_length for x in full)
    ids = full
    if truncated:
        ids = tokenizer(texts, add_special_tokens=True, truncation=True, max_length=max_length)["input_ids"]
    with contextlib.suppress(OSError):  # a read-only cache costs only time
        _save(path, ids, truncated)
    return ids, truncated


def classification_examples(
    tokenizer: Any, texts: list[str], label_ids: list[int], row_ids: list[str], max_length: int
) -> Examples:
    ids, truncated = tokenize_texts(tokenizer, texts, max_length)
    return Examples(input_ids=ids, labels=list(label_ids), texts=texts, row_ids=row_ids, truncated=truncated)
