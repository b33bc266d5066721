"""Find a model's config.json: a local folder, the Hugging Face hub, or a bundled copy.

This module stays torch-free (json and the standard library only; huggingface_hub is imported only
when the hub is actually asked), because it runs on every `plan`, including cache hits that must
not pay for importing torch or transformers.

The hub is probed with a plain TCP connect before huggingface_hub is used: when the hub cannot be
reached, `hf_hub_download` retries with back-off for ~20 s before giving up, which would make an
offline plan of a bundled model unbearably slow.
"""

from __future__ import annotations

import json
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from loralab.arch.bundled import bundled_ids, find_bundled
from loralab.errors import ModelResolutionError
from loralab.models import resolve_local_alias  # torch-free unless an alias needs converting

Source = Literal["local", "bundled", "hub"]

# Seconds allowed for the reachability probe and for the hub's metadata request.
HUB_TIMEOUT_S = 3.0

# "org/name" as the hub spells repo ids; legacy ids without an org ("gpt2") still redirect on the hub.
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")
_TRUTHY = {"1", "true", "yes", "on"}


@dataclass
class ResolvedModel:
    model_id: str  # what the user named (a folder, a hub id, a bundled id)
    config: dict[str, Any]  # the config.json content
    source: Source
    path: Path | None  # the config.json that was read


def resolve_model(
    name_or_path: str, *, revision: str | None = None, trust_remote_code: bool = False
) -> ResolvedModel:
    """Find the config of `name_or_path`: local folder/file, then the hub, then the bundled copy.

    `trust_remote_code` does not change where a config is looked for (a config is data); it is taken
    here so callers can pass their model settings through unchanged.
    """
    del trust_remote_code
    key = (name_or_path.strip(), revision)
    if key in _RESOLVED:
        return _RESOLVED[key]
    found = _resolve(*key)
    if found.source != "local":  # one command asks several times; a hub miss costs retries each time
        _RESOLVED[key] = found
    return found


_RESOLVED: dict[tuple[str, str | None], ResolvedModel] = {}


def _resolve(name: str, revision: str | None) -> ResolvedModel:
    if not name:
        raise ModelResolutionError("model.name_or_path is empty")
    alias = resolve_local_alias(name)
    local = _resolve_local(str(alias) if alias is not None else name)
    if local is not None:
        return local
    tried: list[str] = []
    if _HUB_ID_RE.match(name):
        hub_file, why = _hub_config(name, revision)
        if hub_file is not None:
            return ResolvedModel(name, _read_config(hub_file), "hub", hub_file)
        tried.append(f"hub: {why}")
    bundled = find_bundled(name)
    if bundled is not None:
        _, folder = bundled
        return ResolvedModel(name, _read_config(folder / "config.json"), "bundled", folder / "config.json")
    tried.insert(0, "not a local folder")
    tried.append("not a bundled model")
    raise ModelResolutionError(
        f"cannot find model '{name}' ({'; '.join(tried)}); bundled models: {', '.join(bundled_ids())}"
    )


def _looks_like_path(name: str) -> bool:
    return (
        name.startswith(("/", "./", "../", "~", ".\\"))
        or name.count("/") > 1
        or "\\" in name
        or name.endswith(".json")
        or name in (".", "..")
    )


def _resolve_local(name: str) -> ResolvedModel | None:
    path = Path(name).expanduser()
    if path.is_file():
        return ResolvedModel(name, _read_config(path), "local", path)
    if path.is_dir():
        cfg = path / "config.json"
        if not cfg.is_file():
            raise ModelResolutionError(f"local model folder '{path}' has no config.json")
        return ResolvedModel(name, _read_config(cfg), "local", cfg)
    if _looks_like_path(name):
        raise ModelResolutionError(f"local model path '{path}' does not exist")
    return None


def _read_config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelResolutionError(f"cannot read model config '{path}': {e}") from e
    if not isinstance(data, dict):
        raise ModelResolutionError(f"model config '{path}' is not a JSON object")
    return data


# ---- hub -----------------------------------------------------------------------------------------


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUTHY


def _hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def _hub_reachable(timeout: float = HUB_TIMEOUT_S) -> bool:
    # Behind a proxy a direct connect says nothing; let huggingface_hub try.
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(_hub_endpoint())
    host = url.hostname or "huggingface.co"
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _hub_cache_root() -> str:
    """huggingface_hub's cache folder, read from the environment now (its constants are frozen at import)."""
    root = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if root:
        return os.path.expanduser(root)
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface"
    )
    return os.path.join(os.path.expanduser(home), "hub")


def _hub_cache_has(repo_id: str) -> bool:
    """Whether huggingface_hub's cache may hold this repo (cheap check before importing it)."""
    return Path(_hub_cache_root(), "models--" + repo_id.replace("/", "--")).is_dir()


def _hub_config(repo_id: str, revision: str | None) -> tuple[Path | None, str]:
    """(path of the downloaded or cached config.json, None) or (None, why the hub gave nothing)."""
    online = not hub_offline() and _hub_reachable()
    if not online and not _hub_cache_has(repo_id):
        return None, "offline (HF_HUB_OFFLINE)" if hub_offline() else f"{_hub_endpoint()} unreachable"
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        return None, "huggingface_hub is not installed"
    try:
        file = hf_hub_download(
            repo_id,
            "config.json",
            revision=revision,
            cache_dir=_hub_cache_root(),
            etag_timeout=HUB_TIMEOUT_S,
            local_files_only=not online,
        )
    except Exception as e:  # network errors, 404s, gated repos: all mean "use the fallback"
        reason = type(e).__name__
        return None, f"{reason} for {repo_id}" + ("" if online else " (offline, not in the hub cache)")
    return Path(file), ""
