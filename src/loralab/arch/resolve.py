"""Find a model's config.json: a local folder, the Hugging Face hub, or a bundled copy.

This module stays torch-free (json and the standard library only; huggingface_hub is imported only
when the hub is actually asked), because it runs on every `plan`, including cache hits that must
not pay for importing torch or transformers.

The hub is probed with a plain TCP connect (to the proxy, when one is set) before huggingface_hub is
used, and then asked once without retries: when the hub cannot be reached and the file is not in its
cache, `hf_hub_download` retries with back-off for ~25 s (minutes when the connection hangs), which would
make an offline plan of a bundled model unbearably slow. `hub_reachable`, `offline_reason` and
`hub_load_kwargs` give loaders (tokenizer, weights) the same fast answer before `from_pretrained`.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlparse

from loralab.arch.bundled import bundled_ids, find_bundled_or_legacy, legacy_hub_target
from loralab.errors import ModelResolutionError
from loralab.models import resolve_local_alias  # torch-free unless an alias needs converting

Source = Literal["local", "bundled", "hub"]

# Seconds allowed for the reachability probe and for the hub's metadata request.
HUB_TIMEOUT_S = 3.0
# How long a probe's answer is reused: one command looks up several ids (config, tokenizer, weights).
PROBE_TTL_S = 60.0

# "org/name" as the hub spells repo ids; legacy ids without an org ("gpt2") still redirect on the hub.
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")
_TRUTHY = {"1", "true", "yes", "on"}
# Answers huggingface_hub retries for ~25 s when the file is not cached: the hub is not answering.
_RETRIED_STATUS = frozenset({408, 429, 500, 502, 503, 504})


@dataclass
class ResolvedModel:
    model_id: str  # what the user named (a folder, a hub id, a bundled id)
    config: dict[str, Any]  # the config.json content
    source: Source
    path: Path | None  # the config.json that was read
    # The organisation id the hub redirects model_id to, when model_id is a legacy id ("gpt2").
    alias_of: str | None = None

    @property
    def note(self) -> str | None:
        """A line for the user when the model was found under another name, else None."""
        if self.alias_of is None:
            return None
        used = " (bundled config used)" if self.source == "bundled" else ""
        return f"{self.model_id} is the hub's legacy name of {self.alias_of}{used}"


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
    legacy_of = legacy_hub_target(name)
    if _HUB_ID_RE.match(name):
        hub_file, why = _hub_config(name, revision)
        if hub_file is not None:
            return ResolvedModel(name, _read_config(hub_file), "hub", hub_file, legacy_of)
        tried.append(f"hub: {why}")
    bundled = find_bundled_or_legacy(name)
    if bundled is not None:
        model_id, folder, by_alias = bundled
        cfg = folder / "config.json"
        return ResolvedModel(name, _read_config(cfg), "bundled", cfg, model_id if by_alias else None)
    tried.insert(0, "not a local folder")
    tried.append(f"not a bundled model{f' (legacy name of {legacy_of})' if legacy_of else ''}")
    raise ModelResolutionError(
        f"cannot find model '{name}' ({'; '.join(tried)}); fix: pass a local folder holding its config.json, "
        f"or a bundled model: {', '.join(bundled_ids())}"
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
    """Whether the environment switches the hub off (huggingface_hub honours both variables)."""
    return _offline_var() is not None


def _offline_var() -> str | None:
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in _TRUTHY:
            return var
    return None


def _hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def offline_reason(timeout: float | None = None) -> str | None:
    """None when the hub can be asked now, else why not, in a few words ("offline (HF_HUB_OFFLINE)",
    "https://huggingface.co unreachable").

    A TCP connect to the hub, or to the proxy the environment names for it, must succeed within
    `timeout` seconds (HUB_TIMEOUT_S by default); the answer is reused for PROBE_TTL_S.
    """
    var = _offline_var()
    if var is not None:
        return f"offline ({var})"
    endpoint = _hub_endpoint()
    target, proxy = _probe_target(endpoint)
    if target is None:
        return None
    known = _PROBES.get(target)
    if known is None or time.monotonic() - known[0] > PROBE_TTL_S:
        connected = _connects(*target, HUB_TIMEOUT_S if timeout is None else timeout)
        why = (
            None if connected else f"{endpoint} unreachable" + (f" (through proxy {proxy})" if proxy else "")
        )
        known = (time.monotonic(), why)
        _PROBES[target] = known
    return known[1]


def hub_reachable(timeout: float | None = None) -> bool:
    """Whether the hub can be asked now (see `offline_reason`)."""
    return offline_reason(timeout) is None


def hub_load_kwargs(name_or_path: str, *, what: str = "model", revision: str | None = None) -> dict[str, Any]:
    """Extra `from_pretrained` kwargs that keep transformers from waiting on an unreachable hub.

    {} for a local path, a name that is no hub id, or a reachable hub; {"local_files_only": True} when
    the hub cannot be reached but its cache holds the repo. Raises ModelResolutionError at once (one
    line naming the id and the fix) when neither holds, instead of letting each file download retry
    for ~25 s. `what` names the thing being loaded in that message ("tokenizer", "weights").
    """
    name = name_or_path.strip()
    if Path(name).expanduser().exists() or _looks_like_path(name) or not _HUB_ID_RE.match(name):
        return {}
    why = offline_reason()
    if why is None:
        why = _hub_silent(name, revision, _hub_endpoint())
    if why is None:
        return {}
    if _hub_cache_has(name):
        return {"local_files_only": True}
    at = f"@{revision}" if revision else ""
    target = legacy_hub_target(name)
    hint = f"; the cache holds it as '{target}', write that id" if target and _hub_cache_has(target) else ""
    if find_bundled_or_legacy(name) is not None:
        hint += " (loralab bundles its config only: `plan` works offline, loading needs the files)"
    raise ModelResolutionError(
        f"cannot load the {what} of '{name}{at}': {why}, and it is not in the Hugging Face cache "
        f"({_hub_cache_root()}){hint}; fix: set model.name_or_path to a local folder with the model's "
        f"files, or download it where the hub is reachable (`hf download {name}`)"
    )


# (host, port) probed -> (monotonic time of the answer, why the hub cannot be asked or None)
_PROBES: dict[tuple[str, int], tuple[float, str | None]] = {}


def _probe_target(endpoint: str) -> tuple[tuple[str, int] | None, str]:
    """((host, port) a TCP connect should reach, the proxy URL or ""); (None, proxy) when undecidable."""
    url = urlparse(endpoint)
    scheme = url.scheme or "https"
    host = url.hostname or "huggingface.co"
    port = url.port or (80 if scheme == "http" else 443)
    proxy = _env_proxy(scheme, host)
    if not proxy:
        return (host, port), ""
    purl = urlparse(proxy if "://" in proxy else f"http://{proxy}")
    if not purl.hostname:
        return None, proxy  # huggingface_hub's client will make of it what it can
    default_port = {"https": 443, "socks5": 1080, "socks5h": 1080, "socks4": 1080}.get(purl.scheme, 80)
    return (purl.hostname, purl.port or default_port), proxy


def _env_proxy(scheme: str, host: str) -> str:
    """The proxy the environment names for `scheme` ("" when none, or when NO_PROXY exempts `host`).

    The variables httpx (huggingface_hub's client) reads: <scheme>_proxy, all_proxy, no_proxy.
    """
    # urllib.request costs ~60 ms to import and most lookups never reach the hub.
    import urllib.request

    proxies = urllib.request.getproxies_environment()
    no_proxy, host = proxies.get("no", ""), host.lower()
    if no_proxy.strip() == "*":
        return ""
    for entry in no_proxy.split(","):
        entry = entry.strip().lower().lstrip("*.").split(":")[0]
        if entry and (host == entry or host.endswith("." + entry)):
            return ""
    return proxies.get(scheme) or proxies.get("all") or ""


def _connects(host: str, port: int, timeout: float) -> bool:
    ok: list[bool] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                ok.append(True)
        except OSError:
            ok.append(False)

    # The socket timeout does not cover the DNS lookup, which can hang for many seconds on a broken
    # resolver; a daemon thread bounds the whole probe.
    probe = threading.Thread(target=attempt, name="loralab-hub-probe", daemon=True)
    probe.start()
    probe.join(timeout)
    return bool(ok) and ok[0]


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
    """(path of the downloaded or cached config.json, "") or (None, why the hub gave nothing)."""
    why = offline_reason()
    if why is not None and not _hub_cache_has(repo_id):
        return None, why
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        return None, "huggingface_hub is not installed"
    endpoint = _hub_endpoint()
    if why is None:
        why = _hub_silent(repo_id, revision, endpoint)
        if why is not None and not _hub_cache_has(repo_id):
            return None, why
    try:
        file = hf_hub_download(
            repo_id,
            "config.json",
            revision=revision,
            cache_dir=_hub_cache_root(),
            etag_timeout=HUB_TIMEOUT_S,
            local_files_only=why is not None,
            endpoint=endpoint,
        )
    except Exception as e:  # network errors, 404s, gated repos: all mean "use the fallback"
        reason = type(e).__name__
        return None, f"{reason} for {repo_id}" + ("" if why is None else f" ({why}, not in the hub cache)")
    return Path(file), ""


def _hub_silent(repo_id: str, revision: str | None, endpoint: str) -> str | None:
    """None when the hub answers a metadata request for config.json in time, else why not.

    A TCP connect proves little (a proxy or a firewall may accept and never answer); this one request
    has no retries. An answer such as 404 or 401 is an answer: hf_hub_download then fails as fast.
    """
    from huggingface_hub import get_hf_file_metadata
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    # Spelled out: hf_hub_url swaps in `endpoint` only when the endpoint it froze at import still matches.
    url = f"{endpoint}/{repo_id}/resolve/{quote(revision or 'main', safe='')}/config.json"
    try:
        get_hf_file_metadata(url, timeout=HUB_TIMEOUT_S)
        return None
    except OfflineModeIsEnabled:  # HF_HUB_OFFLINE was set when huggingface_hub was imported
        return "offline (HF_HUB_OFFLINE when huggingface_hub was imported)"
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else None
        if status not in _RETRIED_STATUS:
            return None
        why = f"{endpoint} answered HTTP {status}"
    except Exception as e:  # connection refused, reset, timed out, TLS failure: nothing usable came back
        why = f"{endpoint} did not answer ({type(e).__name__})"
    target, _ = _probe_target(endpoint)
    if target is not None:  # the next lookups in this command need not wait again
        _PROBES[target] = (time.monotonic(), why)
    return why
