"""Where a run is tracked: MLflow at `tracking.uri`, else a SQLite store in the working directory.

MLflow 3 keeps the plain-folder store (./mlruns) in maintenance mode and refuses it by default, so
the local default is `sqlite:///mlflow.db` (artifacts under ./mlruns); `tracking: {backend: none}`
turns tracking off. Credentials for a remote server belong in the environment (MLFLOW_TRACKING_USERNAME,
MLFLOW_TRACKING_PASSWORD), never in the config file. A `tracking.uri` that holds them anyway
(`http://alice:pw@host/`) is split: MLflow gets the bare URI and the user-info through those two
variables, so the password is in no URL that MLflow or requests might log or that `set_tracking_uri`
exports as MLFLOW_TRACKING_URI; everything loralab writes shows the URI as `http://***@host/`.
Database URIs (postgresql://user:pw@db/...) have no such variables and keep their user-info for the
connection; they are redacted wherever loralab writes or prints them all the same.
"""

from __future__ import annotations

import importlib.util
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from loralab.config.models import ExperimentConfig
from loralab.io import redact_secrets, redact_uri, uri_credentials
from loralab.plan.planner import Plan
from loralab.train.callbacks import MLflowCallback


def default_tracking_uri() -> str:
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def tracking_params(cfg: ExperimentConfig, plan: Plan | None) -> dict[str, Any]:
    lora = cfg.lora_config_dict()
    params: dict[str, Any] = {
        "model": cfg.model.name_or_path,
        "task": cfg.model.task,
        "phase": (cfg.experiment or {}).get("phase", ""),
        "r": lora.get("r"),
        "lora_alpha": lora.get("lora_alpha"),
        "target_modules": lora.get("target_modules"),
        "layers_to_transform": lora.get("layers_to_transform"),
        "lora_params": plan.counts.trainable_params if plan is not None else None,
    }
    for k in (
        "learning_rate",
        "num_train_epochs",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
    ):
        if k in cfg.training_args:
            params[k] = cfg.training_args[k]
    return params


# Ports of the server kinds MLflow connects to over the network; sqlite/file/databricks URIs are not
# probed (nothing to reach, or a profile instead of a host).
DEFAULT_PORTS = {"http": 80, "https": 443, "postgresql": 5432, "mysql": 3306, "mssql": 1433}
PROBE_TIMEOUT_S = 3.0


def unreachable(uri: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why the tracking server at `uri` cannot be reached (a TCP connect to its host and port within
    `timeout`), or None. Without this, MLflow's retries stall a run for over four minutes before the
    first failure."""
    parts = urlsplit(uri)
    scheme = parts.scheme.split("+", 1)[0].lower()  # postgresql+psycopg2 -> postgresql
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError:
        return f"{redact_uri(uri)} has no valid port"
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return None
    except OSError as e:
        reason = "no answer" if isinstance(e, TimeoutError) else (e.strerror or type(e).__name__)
        return f"cannot reach {parts.hostname}:{port} within {timeout:g} s ({reason})"


def connect_uri(uri: str, notes: list[str]) -> str:
    """The URI MLflow connects with. An http(s) URI's user name and password move into
    MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD for this process (its DDP workers inherit
    them), which MLflow's REST client sends as basic auth."""
    clean, user, password = uri_credentials(uri)
    if urlsplit(uri).scheme.lower() not in ("http", "https") or user is None:
        if user is not None:
            notes.append(f"tracking.uri holds credentials; loralab writes it as {redact_uri(uri)}")
        return uri
    os.environ["MLFLOW_TRACKING_USERNAME"] = user
    if password is not None:
        os.environ["MLFLOW_TRACKING_PASSWORD"] = password
    notes.append(
        f"tracking.uri holds a user name and password: they were passed to MLflow as "
        f"MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD and are written nowhere ({redact_uri(uri)}); "
        "set those environment variables instead of putting them in the config"
    )
    return clean


def mlflow_callback(
    cfg: ExperimentConfig, plan: Plan | None, run_dir: Path, notes: list[str]
) -> MLflowCallback | None:
    """The MLflow callback of a run, started; None when tracking is off. What went wrong goes to `notes`."""
    t = cfg.tracking or {}
    if t.get("backend") == "none":
        return None
    if importlib.util.find_spec("mlflow") is None:
        notes.append("MLflow is not installed: the run is not tracked (pip install mlflow-skinny)")
        return None
    uri = connect_uri(t.get("uri") or default_tracking_uri(), notes)
    down = unreachable(uri)
    if down:
        notes.append(f"MLflow tracking is off for this run: {redact_uri(uri)}: {down}")
        return None
    experiment = str(t.get("experiment_name") or (cfg.experiment or {}).get("name") or "loralab")
    run_name = str(t.get("run_name") or run_dir.name)
    cb = MLflowCallback(uri, experiment, run_name, redact_secrets(tracking_params(cfg, plan)))
    cb.start()
    if cb.failed:
        notes.append(f"MLflow tracking failed and was turned off: {cb.failed}")
    return cb
