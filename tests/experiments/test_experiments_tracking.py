"""A study in MLflow (issue 11): one parent run per study, each training run nested under it through
the environment `child_env` gives its process, a resumed study or run reattached instead of
duplicated, and the decisions and report logged on the parent. Checked with MLflow's own client on a
temporary SQLite store; the training runs here are the callback a `loralab train` process starts,
driven in this process (tests/train/test_train_tracking.py runs a real `loralab train` process)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from train_fixtures import experiment_yaml, make_data, tiny_bert

from loralab.config import load_experiment
from loralab.experiments.record import STUDY_FILE, Decision, RunRecord, StudyRecord
from loralab.experiments.tracking import child_env, finish_study_tracking, start_study_tracking
from loralab.train import tracking
from loralab.train.callbacks import MLflowCallback
from loralab.train.tracking import mlflow_callback

mlflow = pytest.importorskip("mlflow")
from transformers import TrainerState  # noqa: E402  (after the skip: the train extra brings both)

PARENT_TAG = "mlflow.parentRunId"
ENV_NAMES = (
    tracking.ENV_PARENT_RUN_ID,
    tracking.ENV_RUN_ID,
    tracking.ENV_RUN_NAME,
    tracking.ENV_TAGS,
    tracking.ENV_PARAMS,
    tracking.ENV_OFF,
    tracking.ENV_URI,
    tracking.ENV_EXPERIMENT,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("study-tracking")
    model = tiny_bert(root / "model")
    train_csv, test_csv = make_data(root / "data")
    return {"root": root, "model": model, "train": train_csv, "test": test_csv}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite store for the module (creating its tables takes seconds); each test its own study."""
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The study's variables, and the MLFLOW_TRACKING_URI that mlflow exports, back as they were."""
    for name in ENV_NAMES:
        monkeypatch.setenv(name, "")  # recorded, so that teardown restores what the test changed
        monkeypatch.delenv(name)
    return monkeypatch


def _study(tmp_path: Path, name: str) -> StudyRecord:
    runs = [
        RunRecord("attention", "attention", "tiny-bert", 42, {"lora.config.target_modules": ["query"]}),
        RunRecord(
            "all-linear",
            "all-linear",
            "tiny-bert",
            42,
            {"lora.config.target_modules": ["query", "key", "value", "dense"], "lora.config.r": 8},
        ),
    ]
    for i, r in enumerate(runs):
        r.key = f"key{i}"
        r.run_dir = str(tmp_path / "runs" / r.id / "run")
    return StudyRecord(name=name, kind="ablate", runs=runs)


def _cfg(tiny: dict[str, Path], folder: Path) -> Any:
    folder.mkdir(parents=True, exist_ok=True)
    path = experiment_yaml(folder, tiny["model"], tiny["train"], tiny["test"], epochs=1)
    # The study's runs track where the study says: no tracking section of their own.
    path.write_text(path.read_text(encoding="utf-8").replace("tracking:\n  backend: none", ""), "utf-8")
    return load_experiment(path)


def _train_run(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, cfg: Any, run_dir: Path, losses: list[float]
) -> MLflowCallback:
    """What a run's `loralab train` process does with its environment: start the callback, log steps,
    finish with its metrics."""
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    notes: list[str] = []
    cb = mlflow_callback(cfg, None, run_dir, notes)
    assert cb is not None and cb.active, notes
    for step, loss in enumerate(losses, start=1):
        state = TrainerState()
        state.global_step = step
        cb.on_log(None, state, None, logs={"loss": loss, "learning_rate": 0.01})  # type: ignore[arg-type]
    cb.finish({"accuracy": 0.5 + 0.1 * len(losses), "weighted_f1": 0.4 + 0.1 * len(losses)}, [])
    for k in env:
        monkeypatch.delenv(k)
    return cb


def _children(client: Any, exp_id: str, parent: str) -> list[Any]:
    return client.search_runs([exp_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent}'")


def test_runs_nest_under_the_study_parent(
    tiny: dict[str, Path], tmp_path: Path, clean_env: pytest.MonkeyPatch, store: str
) -> None:
    record = _study(tmp_path, "nest")
    start_study_tracking(tmp_path, record, {"backend": "mlflow", "uri": store})
    assert record.mlflow is not None and record.mlflow["experiment"] == record.name
    parent = record.mlflow["parent_run_id"]
    cfg = _cfg(tiny, tmp_path / "cfg")
    envs = {r.id: child_env(record, r) for r in record.runs}
    for i, r in enumerate(record.runs):
        assert envs[r.id][tracking.ENV_RUN_ID] == r.mlflow_run_id  # created before its process starts
        cb = _train_run(envs[r.id], clean_env, cfg, Path(r.run_dir or ""), [1.0, 0.8, 0.5][: i + 2])
        assert cb.run_id == r.mlflow_run_id

    client = mlflow.MlflowClient(store)
    p = client.get_run(parent)
    assert p.info.run_name == record.name and p.data.tags["loralab.study"] == record.name
    assert p.data.tags["kind"] == "ablate" and PARENT_TAG not in p.data.tags
    exp_id = p.info.experiment_id
    assert client.get_experiment(exp_id).name == record.name
    children = {c.info.run_name: c for c in _children(client, exp_id, parent)}
    assert set(children) == {r.id for r in record.runs}
    for i, r in enumerate(record.runs):
        c = children[r.id]
        assert c.info.run_id == r.mlflow_run_id and c.info.status == "FINISHED"
        assert {k: c.data.tags[k] for k in ("phase", "model", "seed", "key")} == {
            "phase": r.phase,
            "model": r.model,
            "seed": str(r.seed),
            "key": r.key,
        }
        for key, value in r.overrides.items():
            assert c.data.params[key] == json.dumps(value)
        # the run's own params (loralab.train.tracking.tracking_params) are there too
        assert c.data.params["model"] == str(cfg.model.name_or_path)
        losses = [1.0, 0.8, 0.5][: i + 2]
        history = client.get_metric_history(c.info.run_id, "loss")
        assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == list(
            enumerate(losses, start=1)
        )
        assert c.data.metrics["accuracy"] == pytest.approx(0.5 + 0.1 * len(losses))


def test_resume_reattaches_parent_and_runs(
    tiny: dict[str, Path], tmp_path: Path, clean_env: pytest.MonkeyPatch, store: str
) -> None:
    record = _study(tmp_path, "resume")
    start_study_tracking(tmp_path, record, {"uri": store})
    cfg = _cfg(tiny, tmp_path / "cfg")
    first = record.runs[0]
    env = child_env(record, first)
    run_id = first.mlflow_run_id
    # The run's process starts tracking, then dies; the study record says running.
    for k, v in env.items():
        clean_env.setenv(k, v)
    notes: list[str] = []
    cb = mlflow_callback(cfg, None, Path(first.run_dir or ""), notes)
    assert cb is not None and cb.active
    for k in env:
        clean_env.delenv(k)
    first.status = "running"
    record.save(tmp_path)
    mlflow.end_run(status="KILLED")  # what this process's death leaves behind, at best
    client = mlflow.MlflowClient(store)

    # `--resume`: a new study process reads study.json and starts again.
    resumed = StudyRecord.from_json(json.loads((tmp_path / STUDY_FILE).read_text(encoding="utf-8")))
    start_study_tracking(tmp_path, resumed, {"uri": store})
    assert resumed.mlflow is not None and record.mlflow is not None
    assert resumed.mlflow["parent_run_id"] == record.mlflow["parent_run_id"]
    again = resumed.runs[0]
    env2 = child_env(resumed, again)
    assert again.mlflow_run_id == run_id and env2[tracking.ENV_RUN_ID] == run_id
    cb2 = _train_run(env2, clean_env, cfg, Path(again.run_dir or ""), [0.9, 0.7])
    assert cb2.run_id == run_id

    exp_id = client.get_run(run_id).info.experiment_id
    parents = client.search_runs([exp_id], filter_string="tags.`loralab.study` = 'resume'")
    assert sorted(r.info.run_id for r in parents if PARENT_TAG not in r.data.tags) == [
        resumed.mlflow["parent_run_id"]
    ]
    kids = _children(client, exp_id, resumed.mlflow["parent_run_id"])
    assert [k.info.run_id for k in kids if k.info.run_name == again.id] == [run_id]
    assert client.get_run(run_id).info.status == "FINISHED"


def test_finish_logs_decisions_report_and_closes_orphans(
    tmp_path: Path, clean_env: pytest.MonkeyPatch, store: str
) -> None:
    record = _study(tmp_path, "finish")
    start_study_tracking(tmp_path, record, {"uri": store})
    for r in record.runs:
        child_env(record, r)
    record.runs[0].status = "done"
    record.runs[1].status = "failed"  # its process was killed: its MLflow run never ended
    record.decisions = [
        Decision("attention", "target", {"weighted_f1": 0.9, "tail_f1": 0.8}, "stop: target met")
    ]
    record.selected = "attention"
    record.save(tmp_path)
    report = tmp_path / "report"
    report.mkdir()
    (report / "study.md").write_text("# finish\n", encoding="utf-8")
    finish_study_tracking(tmp_path, record, [report], "done")

    client = mlflow.MlflowClient(store)
    assert record.mlflow is not None
    parent = record.mlflow["parent_run_id"]
    p = client.get_run(parent)
    assert p.info.status == "FINISHED" and p.data.tags["loralab.selected"] == "attention"
    assert p.data.metrics["runs_done"] == 1 and p.data.metrics["runs_failed"] == 1
    names = {a.path for a in client.list_artifacts(parent)}
    assert {STUDY_FILE, "decisions.json", "report"} <= names
    assert {a.path for a in client.list_artifacts(parent, "report")} == {"report/study.md"}
    local = Path(client.download_artifacts(parent, "decisions.json", str(tmp_path / "dl")))
    written = json.loads(local.read_text(encoding="utf-8"))
    saved = json.loads((tmp_path / STUDY_FILE).read_text(encoding="utf-8"))
    assert written == {"decisions": saved["decisions"], "selected": saved["selected"]}
    statuses = {r.id: client.get_run(r.mlflow_run_id or "").info.status for r in record.runs}
    assert statuses == {record.runs[0].id: "FINISHED", record.runs[1].id: "FAILED"}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_tracking_off_and_unreachable(
    tiny: dict[str, Path], tmp_path: Path, clean_env: pytest.MonkeyPatch, store: str
) -> None:
    record = _study(tmp_path, "off")
    start_study_tracking(tmp_path, record, {"backend": "none"})
    assert record.mlflow is None and child_env(record, record.runs[0]) == {}

    port = _closed_port()
    start_study_tracking(tmp_path, record, {"uri": f"http://127.0.0.1:{port}/"})
    assert record.mlflow is not None and f"cannot reach 127.0.0.1:{port}" in record.mlflow["off"]
    env = child_env(record, record.runs[0])
    assert set(env) == {tracking.ENV_OFF} and record.runs[0].mlflow_run_id is None
    clean_env.setenv(tracking.ENV_OFF, env[tracking.ENV_OFF])
    notes: list[str] = []
    assert mlflow_callback(_cfg(tiny, tmp_path / "cfg"), None, tmp_path / "run", notes) is None
    assert notes == [f"MLflow tracking is off for this run: {env[tracking.ENV_OFF]}"]
    finish_study_tracking(tmp_path, record, [], "done")  # nothing to close, and no error
