"""Arch records by content: shipped with loralab, cached per user, or introspected once.

A record depends only on the architecture fields of config.json, the task and the installed
transformers/torch versions (a new release may add or rename modules), so those form the key. A hit
reads one small gzipped JSON file and imports neither torch nor transformers: `plan` of a known
model costs a fraction of a second instead of the ~5 s that importing them takes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from loralab.arch.introspect import introspect, versions
from loralab.arch.records import RECORD_SCHEMA_VERSION, ArchRecord
from loralab.arch.resolve import resolve_model

SHIPPED_DIR = Path(__file__).resolve().parent / "records"

# config.json fields that never change a module's shape. Label fields are dropped because a seq-cls
# record is label-generic (see `introspect`), so every num_labels shares one record.
IRRELEVANT_CONFIG_KEYS = frozenset(
    {"_name_or_path", "transformers_version", "_commit_hash", "id2label", "label2id", "num_labels"}
)


def cache_dir() -> Path:
    """The user's record cache: $LORALAB_CACHE_DIR, else ~/.cache/loralab/arch."""
    env = os.environ.get("LORALAB_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "loralab" / "arch"


def record_key(config: dict[str, Any], task: str, installed: dict[str, str] | None = None) -> str:
    """sha256 over the shape-relevant config, the task, the library versions and the record schema."""
    v = installed if installed is not None else versions()
    payload = {
        "config": {k: val for k, val in config.items() if k not in IRRELEVANT_CONFIG_KEYS},
        "task": task,
        "transformers": v.get("transformers"),
        "torch": v.get("torch"),
        "schema": RECORD_SCHEMA_VERSION,
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def read_record(path: Path) -> ArchRecord | None:
    """The record stored at `path`, or None if it is missing, unreadable or from another schema."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return ArchRecord.from_json(json.load(f))
    except (OSError, EOFError, ValueError, TypeError, KeyError):
        return None


def write_record(path: Path, rec: ArchRecord) -> None:
    """Write `rec` gzipped, atomically (a reader never sees half a file), with reproducible bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(rec.to_json(), separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json.gz", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
            gz.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def lookup(key: str) -> ArchRecord | None:
    for folder in (SHIPPED_DIR, cache_dir()):
        rec = read_record(folder / f"{key}.json.gz")
        if rec is not None:
            return rec
    return None


def default_num_labels(config: dict[str, Any]) -> int:
    """The label count transformers would use for this config (id2label, num_labels, else 2)."""
    id2label = config.get("id2label")
    if isinstance(id2label, dict) and id2label:
        return len(id2label)
    n = config.get("num_labels")
    return int(n) if isinstance(n, int) and n > 0 else 2


def get_arch_record(
    name_or_path: str,
    *,
    task: str,
    num_labels: int | None,
    revision: str | None = None,
    trust_remote_code: bool = False,
) -> ArchRecord:
    """The ArchRecord of the model `name_or_path` for `task` (seq-cls: with `num_labels` labels)."""
    resolved = resolve_model(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    return arch_record_for_config(
        resolved.config,
        task=task,
        num_labels=num_labels,
        model_id=name_or_path,
        trust_remote_code=trust_remote_code,
    )


def arch_record_for_config(
    config: dict[str, Any],
    *,
    task: str,
    num_labels: int | None,
    model_id: str,
    trust_remote_code: bool = False,
) -> ArchRecord:
    """Cached record for an already-loaded config; introspects (slow path) and caches on a miss."""
    key = record_key(config, task)
    rec = lookup(key)
    if rec is None:
        rec = introspect(
            config, task=task, num_labels=None, model_id=model_id, trust_remote_code=trust_remote_code
        )
        # A read-only or full cache only costs speed next time.
        with contextlib.suppress(OSError):
            write_record(cache_dir() / f"{key}.json.gz", rec)
    if task == "seq-cls":
        rec = rec.with_num_labels(num_labels if num_labels is not None else default_num_labels(config))
    return dataclasses.replace(rec, model_id=model_id)
