"""MLflow for a study: one parent run per study, a nested run per training run.

The study process owns the parent run (through `MlflowClient`, so no run is "active" in it) and
creates each training run's MLflow run before its `loralab train` process starts: the run id is in
the study record from then on, so a run killed before it wrote `record.json` is still reattached on
`--resume` rather than duplicated. The training process finds its run through the environment that
`child_env` returns (`loralab.train.tracking.StudyChild` reads it) and reattaches to it; MLflow's UI
shows the runs nested under the parent by MLflow's own `mlflow.parentRunId` tag.

Tracking never costs a study: a store that cannot be reached within 3 s, or any MLflow error, turns
tracking off with a warning and the study goes on. URIs are written redacted (`loralab.io`).
"""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.markup import escape

from loralab.config.models import default_tracking_uri
from loralab.experiments.record import STUDY_FILE, RunRecord, StudyRecord
from loralab.io import redact_secrets, redact_uri
from loralab.train.callbacks import bounded_http
from loralab.train.tracking import (
    ENV_EXPERIMENT,
    ENV_OFF,
    ENV_PARAMS,
    ENV_PARENT_RUN_ID,
    ENV_RUN_ID,
    ENV_RUN_NAME,
    ENV_TAGS,
    ENV_URI,
    connect_uri,
    unreachable,
)

PARENT_TAG = "mlflow.parentRunId"
# The connectable URI of each parent run started in this process. The record keeps only the redacted
# form; a database URI's password is needed to connect but must not be written.
_URIS: dict[str, str] = {}
T = TypeVar("T")


def _warn(text: str) -> None:
    Console(stderr=True).print(f"[yellow]warning:[/] {escape(text)}")


def _guarded(what: str, fn: Callable[[], T]) -> T | None:
    """`fn()`, or None with a warning: a tracking failure is never a study failure."""
    try:
        with bounded_http():
            return fn()
    except Exception as e:
        _warn(f"MLflow: {what} failed, the study goes on: {redact_secrets(f'{type(e).__name__}: {e}')}")
        return None


def _client(uri: str) -> Any:
    from mlflow import MlflowClient  # optional (loralab[train]) and slow to import; only when tracking

    # mlflow sets up its own INFO logging on import; its table-creation chatter is noise here.
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return MlflowClient(uri)


def _uri(record: StudyRecord) -> str | None:
    """The URI to connect with: the one this process started with, else the record's when it held
    no credentials (a redacted URI cannot connect)."""
    m = record.mlflow or {}
    parent = m.get("parent_run_id")
    if parent and parent in _URIS:
        return _URIS[parent]
    uri = m.get("uri")
    return uri if isinstance(uri, str) and "***" not in uri else None


def _active(record: StudyRecord) -> bool:
    m = record.mlflow or {}
    return bool(m.get("parent_run_id")) and not m.get("off")


def start_study_tracking(study_dir: Path, record: StudyRecord, tracking: dict[str, object] | None) -> None:
    """Start, or reattach to (record.mlflow["parent_run_id"]), the study's parent run; fills record.mlflow.

    `tracking` is the base experiment's `tracking:` section: its `uri` (default: `sqlite:///mlflow.db`
    in the working directory, as `loralab train`) and `experiment_name` (default: the study's name).
    `backend: none` leaves record.mlflow None. A store that cannot be reached keeps the parent run id
    of an earlier start and sets record.mlflow["off"] to the reason; the runs then track nothing."""
    t = dict(tracking or {})
    if t.get("backend") == "none":
        record.mlflow = None
        return
    previous = dict(record.mlflow or {})
    previous.pop("off", None)
    if importlib.util.find_spec("mlflow") is None:
        record.mlflow = {**previous, "off": "MLflow is not installed (pip install 'loralab[train]')"}
        _warn(f"the study is not tracked: {record.mlflow['off']}")
        return
    notes: list[str] = []
    uri = connect_uri(str(t.get("uri") or default_tracking_uri()), notes)
    for n in notes:
        _warn(n)
    experiment = str(t.get("experiment_name") or record.name)
    base = {**previous, "uri": redact_uri(uri), "experiment": experiment}
    down = unreachable(uri)
    if down:
        record.mlflow = {**base, "off": f"{redact_uri(uri)}: {down}"}
        _warn(f"MLflow tracking is off for this study: {record.mlflow['off']}")
        return

    def go() -> dict[str, Any]:
        client = _client(uri)
        exp = client.get_experiment_by_name(experiment)
        # The kind tag makes MLflow's UI open the experiment on its training runs, not on the GenAI
        # trace overview it shows an experiment of no kind.
        kind = {"mlflow.experimentKind": "custom_model_development"}
        exp_id = exp.experiment_id if exp is not None else client.create_experiment(experiment, tags=kind)
        parent = _reattach(client, previous.get("parent_run_id"))
        if parent is None:
            tags = {"loralab.study": record.name, "kind": record.kind, "loralab.study_dir": str(study_dir)}
            run = client.create_run(exp_id, run_name=record.name, tags=tags)
            parent = run.info.run_id
            if record.study_file:
                client.log_param(parent, "study_file", record.study_file)
        return {**base, "experiment_id": exp_id, "parent_run_id": parent}

    started = _guarded("starting the study's parent run", go)
    record.mlflow = started if started is not None else {**base, "off": "starting the parent run failed"}
    if started is not None:
        _URIS[started["parent_run_id"]] = uri


def _reattach(client: Any, run_id: Any) -> str | None:
    """The earlier parent run, set running again; None when there was none or it is gone."""
    if not isinstance(run_id, str) or not run_id:
        return None
    from mlflow.exceptions import MlflowException  # see _client

    try:
        run = client.get_run(run_id)
    except MlflowException:
        _warn(f"MLflow: the study's parent run {run_id} is not in the store; a new one is started")
        return None
    if run.info.lifecycle_stage == "deleted":
        _warn(f"MLflow: the study's parent run {run_id} is deleted; a new one is started")
        return None
    client.update_run(run_id, status="RUNNING")
    return run_id


def run_tags(record: StudyRecord, run: RunRecord) -> dict[str, str]:
    return {
        "loralab.study": record.name,
        "loralab.run": run.id,
        "phase": run.phase or "",
        "model": run.model,
        "seed": str(run.seed),
        "key": run.key or "",
    }


def child_env(record: StudyRecord, run: RunRecord) -> dict[str, str]:
    """Environment for a run's `loralab train` process so its MLflow run nests under the parent (and a
    resumed run reattaches to run.mlflow_run_id).

    When run.mlflow_run_id is None, the run's MLflow run is created here (status SCHEDULED until its
    process starts) and its id set in run.mlflow_run_id: save the record after calling this, so that
    even a run killed before it writes `record.json` is reattached on resume. To track a re-run from
    scratch as a new MLflow run, set run.mlflow_run_id to None first. Credentials are never in the
    environment: the run's own config (the base's `tracking.uri`) or the inherited
    MLFLOW_TRACKING_USERNAME/PASSWORD carry them."""
    m = record.mlflow or {}
    if m.get("off"):
        return {ENV_OFF: str(m["off"])}
    if not _active(record):
        return {}
    tags = run_tags(record, run)
    env = {
        ENV_PARENT_RUN_ID: str(m["parent_run_id"]),
        ENV_RUN_NAME: run.id,
        ENV_EXPERIMENT: str(m.get("experiment") or record.name),
        ENV_TAGS: json.dumps(tags),
        ENV_PARAMS: json.dumps(redact_secrets(run.overrides), default=str),
    }
    uri = _uri(record)
    if uri is not None:
        env[ENV_URI] = uri
        if not run.mlflow_run_id:
            run.mlflow_run_id = _create_child(uri, record, run, tags)
    if run.mlflow_run_id:
        env[ENV_RUN_ID] = run.mlflow_run_id
    return env


def _create_child(uri: str, record: StudyRecord, run: RunRecord, tags: dict[str, str]) -> str | None:
    m = record.mlflow or {}

    def go() -> str:
        client = _client(uri)
        exp_id = m.get("experiment_id") or client.get_run(m["parent_run_id"]).info.experiment_id
        child = client.create_run(exp_id, run_name=run.id, tags={**tags, PARENT_TAG: m["parent_run_id"]})
        client.update_run(child.info.run_id, status="SCHEDULED")
        return str(child.info.run_id)

    return _guarded(f"creating the MLflow run of {run.id}", go)


# What each study status ends the parent run with; a run left running or scheduled by a process that
# died (kill -9, OOM) is closed by its record's status.
_STATUSES = {"done": "FINISHED", "finished": "FINISHED", "failed": "FAILED", "killed": "KILLED"}
_RUN_END = {
    "done": "FINISHED",
    "failed": "FAILED",
    "skipped": "KILLED",
    "queued": "KILLED",
    "running": "KILLED",
}


def mlflow_status(status: str) -> str:
    """MLflow's run status for a study status (`done`, `failed`, `interrupted`) or an MLflow one."""
    s = status.strip().lower()
    return _STATUSES.get(s, "KILLED" if s in ("interrupted", "cancelled", "canceled") else "FAILED")


def finish_study_tracking(study_dir: Path, record: StudyRecord, artifacts: list[Path], status: str) -> None:
    """Log the decisions and the study report as artifacts of the parent run and close it.

    The parent gets study.json, decisions.json (`decisions` and `selected`), each path in `artifacts`
    (files, or folders logged under their name), the count of runs by status as metrics and the
    selected run as a tag; child runs a dead process left running are closed with their record's
    status. `status`: `done`, `failed`, `interrupted`, or an MLflow status (FINISHED, FAILED, KILLED)."""
    uri = _uri(record)
    if not _active(record) or uri is None:
        return
    parent = str((record.mlflow or {})["parent_run_id"])

    def go() -> None:
        client = _client(uri)
        study_file = study_dir / STUDY_FILE
        files = [study_file] if study_file.is_file() else []
        for a in artifacts:
            if a.resolve() not in {f.resolve() for f in files}:
                files.append(a)
        for a in files:
            if a.is_dir():
                client.log_artifacts(parent, str(a), artifact_path=a.name)
            elif a.is_file():
                client.log_artifact(parent, str(a))
        decisions = record.to_json()
        client.log_dict(parent, {k: decisions[k] for k in ("decisions", "selected")}, "decisions.json")
        counts = {s: 0 for s in ("done", "failed", "skipped", "running", "queued")}
        for r in record.runs:
            counts[r.status] = counts.get(r.status, 0) + 1
        for s, n in counts.items():
            client.log_metric(parent, f"runs_{s}", n)
        if record.selected:
            client.set_tag(parent, "loralab.selected", record.selected)
        _close_orphans(client, record)
        client.set_terminated(parent, status=mlflow_status(status))

    _guarded("closing the study's parent run", go)


def _close_orphans(client: Any, record: StudyRecord) -> None:
    for r in record.runs:
        if not r.mlflow_run_id:
            continue
        info = client.get_run(r.mlflow_run_id).info
        if info.status in ("RUNNING", "SCHEDULED"):
            client.set_terminated(r.mlflow_run_id, status=_RUN_END.get(r.status, "KILLED"))
