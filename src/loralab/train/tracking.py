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

A run of a study (`loralab.experiments.tracking.child_env`) gets its MLflow place from the
environment of its `loralab train` process: the study's store and experiment, its parent run (the
run is nested under it), its own run id when it was created or tracked before (reattached, never
duplicated), its name, tags and the study's overrides as params. Plain `loralab train` sees none of
these variables and tracks exactly as configured.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from loralab.config.models import ExperimentConfig, default_tracking_uri
from loralab.io import redact_secrets, redact_uri, uri_credentials
from loralab.plan.planner import Plan
from loralab.train.callbacks import MLflowCallback


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


# The variables a study sets for each run's process. MLflow's own MLFLOW_RUN_ID is not used: mlflow
# reads it in any start_run of the process, and a stale one would hijack an unrelated run.
ENV_PARENT_RUN_ID = "LORALAB_MLFLOW_PARENT_RUN_ID"
ENV_RUN_ID = "LORALAB_MLFLOW_RUN_ID"
ENV_RUN_NAME = "LORALAB_MLFLOW_RUN_NAME"
ENV_TAGS = "LORALAB_MLFLOW_TAGS"  # JSON object
ENV_PARAMS = "LORALAB_MLFLOW_PARAMS"  # JSON object: the run's overrides, dotted keys
ENV_OFF = "LORALAB_MLFLOW_OFF"  # why the study's tracking is off (its server is down)
ENV_URI = "MLFLOW_TRACKING_URI"
ENV_EXPERIMENT = "MLFLOW_EXPERIMENT_NAME"


@dataclass
class StudyChild:
    """Where a study's run is tracked, from its process environment."""

    parent_run_id: str
    run_id: str | None = None
    run_name: str | None = None
    uri: str | None = None
    experiment: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    off: str | None = None

    @staticmethod
    def from_env(env: Mapping[str, str]) -> StudyChild | None:
        """None outside a study: MLFLOW_TRACKING_URI and MLFLOW_EXPERIMENT_NAME count only with a
        parent run (mlflow itself exports MLFLOW_TRACKING_URI, so in a plain run it may be stale)."""
        parent = env.get(ENV_PARENT_RUN_ID)
        if not parent and not env.get(ENV_OFF):
            return None
        return StudyChild(
            parent_run_id=parent or "",
            run_id=env.get(ENV_RUN_ID) or None,
            run_name=env.get(ENV_RUN_NAME) or None,
            uri=env.get(ENV_URI) or None,
            experiment=env.get(ENV_EXPERIMENT) or None,
            tags={str(k): str(v) for k, v in _json_object(env.get(ENV_TAGS)).items()},
            params=_json_object(env.get(ENV_PARAMS)),
            off=env.get(ENV_OFF) or None,
        )


def _json_object(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def mlflow_callback(
    cfg: ExperimentConfig, plan: Plan | None, run_dir: Path, notes: list[str]
) -> MLflowCallback | None:
    """The MLflow callback of a run, started; None when tracking is off. What went wrong goes to `notes`."""
    t = cfg.tracking or {}
    if t.get("backend") == "none":
        return None
    study = StudyChild.from_env(os.environ)
    if study is not None and study.off:
        notes.append(f"MLflow tracking is off for this run: {study.off}")
        return None
    if importlib.util.find_spec("mlflow") is None:
        notes.append("MLflow is not installed: the run is not tracked (pip install mlflow-skinny)")
        return None
    # The config's own URI first: it may hold credentials that the study passes nowhere.
    uri = connect_uri(t.get("uri") or (study.uri if study else None) or default_tracking_uri(), notes)
    down = unreachable(uri)
    if down:
        notes.append(f"MLflow tracking is off for this run: {redact_uri(uri)}: {down}")
        return None
    experiment = str(t.get("experiment_name") or (cfg.experiment or {}).get("name") or "loralab")
    run_name = str(t.get("run_name") or run_dir.name)
    params = tracking_params(cfg, plan)
    tags = {str(k): str(v) for k, v in (t.get("tags") or {}).items()}
    if study is not None:
        # The study's experiment and names win: every run of a study sits under its parent run.
        experiment = study.experiment or experiment
        run_name = study.run_name or run_name
        params.update(study.params)
        tags.update(study.tags)
    cb = MLflowCallback(
        uri,
        experiment,
        run_name,
        redact_secrets(params),
        tags=redact_secrets(tags),
        run_id=study.run_id if study else None,
        parent_run_id=(study.parent_run_id or None) if study else None,
    )
    cb.start()
    if cb.note:
        notes.append(cb.note)
    if cb.failed:
        notes.append(f"MLflow tracking failed and was turned off: {cb.failed}")
    return cb
