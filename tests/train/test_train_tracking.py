"""A study's run in a real `loralab train` process (issue 11): with the environment the study gives it
(`loralab.experiments.tracking.child_env`) its MLflow run is the one the study created, nested under
the study's parent run, with the run's tags and overrides, the metrics of its own metrics.json, and
its id in record.json. Plain `loralab train` (no such environment) starts a run of its own, unnested."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from train_fixtures import experiment_yaml, make_data, tiny_bert

from loralab.config import load_experiment
from loralab.experiments.record import RunRecord, StudyRecord
from loralab.experiments.tracking import child_env, start_study_tracking
from loralab.train import tracking

mlflow = pytest.importorskip("mlflow")
PARENT_TAG = "mlflow.parentRunId"
STUDY_VARS = (
    tracking.ENV_PARENT_RUN_ID,
    tracking.ENV_RUN_ID,
    tracking.ENV_RUN_NAME,
    tracking.ENV_TAGS,
    tracking.ENV_PARAMS,
    tracking.ENV_OFF,
    tracking.ENV_URI,
    tracking.ENV_EXPERIMENT,
)


def _train(cfg: Path, run_dir: Path, cwd: Path, env: dict[str, str]) -> None:
    base = {k: v for k, v in os.environ.items() if k not in STUDY_VARS}
    p = subprocess.run(
        [sys.executable, "-m", "loralab", "train", str(cfg), "--output", str(run_dir), "--quiet"],
        cwd=cwd,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert p.returncode == 0, p.stderr[-3000:]


@pytest.mark.slow  # a real `loralab train` process: 20 s alone, a minute on a busy 2-core machine
def test_study_run_process_tracks_into_its_nested_run(tmp_path: Path) -> None:
    model = tiny_bert(tmp_path / "model")
    train_csv, test_csv = make_data(tmp_path / "data", n_train=60, n_test=30)
    cfg = experiment_yaml(tmp_path, model, train_csv, test_csv, epochs=1)
    cfg.write_text(cfg.read_text(encoding="utf-8").replace("tracking:\n  backend: none", ""), "utf-8")
    store = f"sqlite:///{tmp_path / 'study' / 'mlflow.db'}"
    (tmp_path / "study").mkdir()
    run = RunRecord("attention", "attention", str(model), 7, {"training_args.learning_rate": 0.02}, key="k1")
    record = StudyRecord(name="train-study", runs=[run])
    start_study_tracking(tmp_path / "study", record, {"uri": store})
    assert record.mlflow is not None
    env = child_env(record, run)
    assert run.mlflow_run_id is not None

    # The process runs elsewhere: without the study's URI it would track into <its cwd>/mlflow.db.
    (tmp_path / "elsewhere").mkdir()
    run_dir = tmp_path / "runs" / run.id / "run"
    _train(cfg, run_dir, tmp_path / "elsewhere", env)
    assert not (tmp_path / "elsewhere" / "mlflow.db").exists()

    saved = json.loads((run_dir / "record.json").read_text(encoding="utf-8"))
    assert saved["mlflow_run_id"] == run.mlflow_run_id
    client = mlflow.MlflowClient(store)
    r = client.get_run(run.mlflow_run_id)
    assert r.info.status == "FINISHED" and r.info.run_name == run.id
    assert r.data.tags[PARENT_TAG] == record.mlflow["parent_run_id"]
    assert (r.data.tags["phase"], r.data.tags["seed"], r.data.tags["key"]) == ("attention", "7", "k1")
    assert r.data.params["training_args.learning_rate"] == "0.02"
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    for name in ("accuracy", "weighted_f1", "macro_f1"):
        assert r.data.metrics[name] == pytest.approx(metrics[name])
    exp_id = r.info.experiment_id
    assert client.get_experiment(exp_id).name == "train-study"
    assert len(client.search_runs([exp_id], filter_string=f"tags.`{PARENT_TAG}` != ''")) == 1
    assert {a.path for a in client.list_artifacts(run.mlflow_run_id)} >= {"metrics.json", "record.json"}


def test_plain_train_tracks_unnested(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a study's environment (and with a stale MLFLOW_TRACKING_URI that mlflow exported in an
    earlier run), a run is tracked as configured: <cwd>/mlflow.db, named after its folder, no parent."""
    for name in STUDY_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(tracking.ENV_URI, f"sqlite:///{tmp_path / 'stale.db'}")
    monkeypatch.chdir(tmp_path)
    model = tiny_bert(tmp_path / "model")
    train_csv, test_csv = make_data(tmp_path / "data", n_train=30, n_test=15)
    path = experiment_yaml(tmp_path, model, train_csv, test_csv, epochs=1)
    path.write_text(path.read_text(encoding="utf-8").replace("tracking:\n  backend: none", ""), "utf-8")
    notes: list[str] = []
    cb = tracking.mlflow_callback(load_experiment(path), None, tmp_path / "run", notes)
    assert cb is not None and cb.active and cb.run_id is not None, notes
    cb.finish({"accuracy": 1.0}, [])
    r = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(cb.run_id)
    assert PARENT_TAG not in r.data.tags and r.info.run_name == "run" and r.info.status == "FINISHED"
    assert not (tmp_path / "stale.db").exists()
