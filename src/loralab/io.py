"""The bottom of loralab: process rank, JSON files and stdout, library chatter, secrets kept out of
what loralab writes or prints.

Every stage may import this module; it imports nothing of loralab's.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit


def rank() -> int:
    """This process's rank under torchrun/accelerate launch (0 when not distributed)."""
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


def dumps(obj: Any) -> str:
    """loralab's one JSON text form: indented, Korean kept readable (no \\uXXXX), dates as strings."""
    return json.dumps(obj, indent=2, ensure_ascii=False, default=str)


def write_json(path: Path, obj: Any) -> None:
    """Write `obj` to `path` atomically (a reader never sees half a file); rank 0 only."""
    if not is_main_process():
        return  # one writer per run directory: rank 0
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(dumps(obj) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def print_json(obj: Any) -> None:
    """One JSON object on stdout, for `--json` (machine-read: no console wrapping or colour)."""
    sys.stdout.write(dumps(obj) + "\n")


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys ({"lora": {"config": {"r": 8}}} -> {"lora.config.r": 8});
    lists stay values, so a changed `target_modules` is one key."""
    if not isinstance(d, dict) or not d:
        return {prefix.rstrip("."): d} if prefix else {}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flatten(v, f"{prefix}{k}."))
    return out


def quiet_libraries() -> None:
    """Library chatter (load reports, deprecation notices, MLflow's INFO lines) would bury loralab's
    own progress and findings; their warnings that matter are re-stated by preflight."""
    # transformers is heavy (~2 s): imported only by the commands that load a model anyway.
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")


# ---- secrets ------------------------------------------------------------------------------------
# What stands in for a secret in anything loralab writes or prints. Read back (a run's config.yaml
# given to `train` again), `uri_credentials` treats it as no credentials at all.
REDACTED = "***"

# `scheme://user:password@host`: the user-info runs up to the last "@" before the path; a password
# with a raw "@" in it (not %40) is still caught whole.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^\s/?#@]*(?:@[^\s/?#@]*)*)@")
# Query parameters that carry a secret (`?token=...`, `&X-Amz-Signature=...`, `?api_key=...`).
_QUERY_SECRET = re.compile(
    r"(?i)(?P<key>[?&][\w.-]*(?:token|password|passwd|pwd|secret|api_?key|access_?key|signature|sig)=)"
    r"[^&#\s'\"]*"
)
# Mapping keys whose string value is a secret wherever they sit (training_args.hub_token, a tracking
# password, a cloud key). Tokenizer keys such as pad_token or eos_token are not secrets: a bare
# "token" counts only alone or after hub/auth/access/api.
_SECRET_KEY = re.compile(
    r"(?i)^(?:.*_)?(?:password|passwd|secret|secret_key|secret_access_key|api_?key|access_key|private_key|"
    r"client_secret|hub_token|auth_token|access_token|api_token|credentials?)$|^token$"
)


def redact_uri(uri: str) -> str:
    """`uri` with any user name and password, and secret query parameters, replaced by ***."""
    return _QUERY_SECRET.sub(lambda m: m["key"] + REDACTED, _USERINFO.sub(rf"\g<scheme>{REDACTED}@", uri))


def redact_secrets(obj: Any) -> Any:
    """A copy of `obj` (text, or mappings and lists nested in any depth) with credentials in URIs and
    the values of secret-named keys (`hub_token`, `password`, ...) replaced by ***; other values as is."""
    if isinstance(obj, str):
        return redact_uri(obj) if ("@" in obj or "=" in obj) else obj
    if isinstance(obj, dict):
        return {
            k: REDACTED
            if isinstance(k, str) and isinstance(v, str) and v and _SECRET_KEY.match(k)
            else redact_secrets(v)
            for k, v in obj.items()
        }
    if isinstance(obj, list | tuple):
        return type(obj)(redact_secrets(v) for v in obj)
    return obj


def uri_credentials(uri: str) -> tuple[str, str | None, str | None]:
    """(`uri` without its user-info, user name, password); names and passwords are %-decoded.
    A user-info that is loralab's own *** (a redacted URI read back) counts as none."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri, None, None
    userinfo, _, host = parts.netloc.rpartition("@")
    clean = urlunsplit(parts._replace(netloc=host))
    if userinfo in ("", REDACTED):
        return clean, None, None
    user, sep, password = userinfo.partition(":")
    return clean, unquote(user) or None, unquote(password) if sep else None


# ---- safetensors headers: checked without torch, so a damaged file is named before a model loads --


def safetensors_problem(path: Path) -> str | None:
    """Why `path` is not a whole safetensors file ("missing", "truncated: ..."), or None.

    Reads the header only (8-byte length, JSON), so checking every checkpoint before a resume costs
    milliseconds: a file cut short by a full disk or a kill mid-copy is shorter than its header says.
    """
    if not path.is_file():
        return f"{path.name} missing"
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if n < 0 or 8 + n > size:
                return f"{path.name} truncated: {size} bytes, no complete header"
            header = json.loads(f.read(n))
        ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        return f"{path.name} unreadable: {type(e).__name__}"
    expected = 8 + n + max(ends, default=0)
    if size != expected:
        return f"{path.name} truncated: {size} bytes, its header says {expected}"
    return None


def tensor_names(path: Path) -> set[str]:
    """The tensor names in a safetensors file's header (the file is assumed whole)."""
    with path.open("rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return {k for k in json.loads(f.read(n)) if k != "__metadata__"}
