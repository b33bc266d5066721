"""`loralab ui` (issue 11): MLflow's own UI on the store loralab tracks in. A store holding a study's
parent run and two nested runs with metrics is served; its REST API and a headless Chromium (skipped
with the reason when chromium is absent, like tests/report/test_report_browser.py) find the parent,
the nested runs and their metrics. Without the full mlflow package the command names the extra."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from loralab.cli import app
from loralab.commands import ui
from loralab.experiments.record import RunRecord, StudyRecord
from loralab.experiments.tracking import child_env, finish_study_tracking, start_study_tracking
from loralab.train.tracking import default_tracking_uri

CHROMIUM = "/usr/bin/chromium"
PARENT_TAG = "mlflow.parentRunId"
READY_S = 150  # MLflow's server starts in 10-40 s on a busy 2-core machine
# Straight to 127.0.0.1, whatever HTTP_PROXY says.
LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _full_mlflow() -> None:
    try:
        importlib.metadata.version("mlflow")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the full mlflow package is not installed (pip install 'loralab[ui]')")


def _chromium() -> str:
    path = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if not path:
        pytest.skip("chromium is not installed (run scripts/install_browser.sh as root to install Debian's)")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _study_store(folder: Path) -> tuple[Path, StudyRecord, dict[str, dict[str, list[float]]]]:
    """A store with a study's parent run and two nested runs; the metrics logged, by run name."""
    import mlflow  # after the skip: the ui extra brings the full package

    db = folder / "mlflow.db"
    runs = [
        RunRecord("attention", "attention", "tiny-bert", 42, {"lora.config.r": 8}, key="k0"),
        RunRecord("all-linear", "all-linear", "tiny-bert", 42, {"lora.config.r": 16}, key="k1"),
    ]
    record = StudyRecord(name="ui-study", kind="ablate", runs=runs)
    start_study_tracking(folder, record, {"uri": f"sqlite:///{db}"})
    client = mlflow.MlflowClient(f"sqlite:///{db}")
    logged: dict[str, dict[str, list[float]]] = {}
    for i, r in enumerate(runs):
        child_env(record, r)
        assert r.mlflow_run_id is not None
        logged[r.id] = {
            "loss": [1.0 - 0.25 * s - 0.125 * i for s in range(3)],
            "weighted_f1": [0.5 + 0.25 * i],
        }
        for name, values in logged[r.id].items():
            for step, v in enumerate(values):
                client.log_metric(r.mlflow_run_id, name, v, step=step)
        client.set_terminated(r.mlflow_run_id, "FINISHED")
        r.status = "done"
    record.save(folder)
    finish_study_tracking(folder, record, [], "done")
    return db, record, logged


def _json(url: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with LOCAL.open(req, timeout=10) as r:
        return json.loads(r.read())


def _answers(base: str) -> bool:
    try:
        with LOCAL.open(f"{base}/health", timeout=5) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def _wait_ready(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"loralab ui exited {proc.returncode}:\n{log.read_text()[-3000:]}"
        if _answers(base):
            return
        time.sleep(0.5)
    pytest.fail(f"MLflow's server did not answer within {READY_S} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """The whole process group: `loralab ui`, MLflow's server and its workers."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_ui_serves_the_study_with_nested_runs(tmp_path: Path) -> None:
    _full_mlflow()
    db, record, logged = _study_store(tmp_path)
    assert record.mlflow is not None
    parent_id, exp_id = record.mlflow["parent_run_id"], record.mlflow["experiment_id"]
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "ui.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "loralab", "ui", "--port", str(port), "--store", str(db)],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_ready(base, proc, log)
        found = _json(f"{base}/ajax-api/2.0/mlflow/runs/search", {"experiment_ids": [exp_id]})["runs"]
        by_name = {r["info"]["run_name"]: r for r in found}
        assert set(by_name) == {record.name, *logged}
        tags = {n: {t["key"]: t["value"] for t in r["data"].get("tags", [])} for n, r in by_name.items()}
        assert by_name[record.name]["info"]["run_id"] == parent_id and PARENT_TAG not in tags[record.name]
        for name, metrics in logged.items():
            assert tags[name][PARENT_TAG] == parent_id
            latest = {m["key"]: m["value"] for m in by_name[name]["data"]["metrics"]}
            assert latest == {k: v[-1] for k, v in metrics.items()}
            run_id = by_name[name]["info"]["run_id"]
            api = f"{base}/ajax-api/2.0/mlflow/metrics/get-history?run_id={run_id}&metric_key=loss"
            steps = sorted((m["step"], m["value"]) for m in _json(api)["metrics"])
            assert steps == list(enumerate(metrics["loss"]))
        # `loralab ui` says where to go once its own probe gets an answer.
        deadline = time.monotonic() + 10
        while f"open {base}" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert f"open {base}" in log.read_text()

        # The browser: a nested run's page names its parent run and shows its metrics.
        browser = _chromium()
        child = record.runs[0]
        page = f"{base}/#/experiments/{exp_id}/runs/{child.mlflow_run_id}"
        res = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-proxy-server", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=15000",
             "--dump-dom", page],
            capture_output=True, text=True, timeout=90, check=False,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr[-2000:]
        text = re.sub(
            r"\s+",
            " ",
            re.sub(r"<[^>]+>", " ", re.sub(r"<(style|script).*?</\1>", "", res.stdout, flags=re.S)),
        )
        assert child.id in text and f"Parent run {record.name}" in text, text[:3000]
        for name, values in logged[child.id].items():
            assert re.search(rf"{name} {values[-1]:g}\b", text), (name, text[:3000])
    finally:
        _stop(proc)
    assert proc.returncode is not None


def test_ui_without_the_full_mlflow_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.metadata.version

    def version(name: str) -> str:
        if name == "mlflow":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(ui.importlib.metadata, "version", version)
    res = CliRunner().invoke(app, ["ui", "--port", str(_free_port())])
    assert res.exit_code == 2
    assert "pip install 'loralab[ui]'" in res.output and "mlflow-skinny" in res.output


def test_ui_store_is_trains_default_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert ui.store_uri(None) == ui.default_tracking_uri() == default_tracking_uri()
    assert ui.store_uri("runs/mlflow.db") == f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    assert ui.store_uri("http://host:5000") == "http://host:5000"
