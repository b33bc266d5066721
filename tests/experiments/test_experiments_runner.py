"""`loralab study` (issue 11): failure isolation, the record, resume after Ctrl-C or kill -9, refusal
of a changed study, phases and the local executor.

The runner's bookkeeping is tested with a scripted executor (each job "runs" at once and writes what a
`loralab train` run writes); the slow tests run real `loralab train` processes on a tiny BERT.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console
from train_fixtures import experiment_yaml, make_data, tiny_bert
from typer.testing import CliRunner

from loralab.cli import app
from loralab.commands.study import study_table
from loralab.errors import ConfigError
from loralab.experiments.executor import LocalExecutor
from loralab.experiments.jobs import Finished, Job
from loralab.experiments.record import (
    CLASSIFICATION_METRICS,
    Decision,
    PhaseOutcome,
    RunRecord,
    StudyRecord,
    load_study,
)
from loralab.experiments.runner import StudyRefused, run_study

# ---- a scripted executor ---------------------------------------------------------------------------

Behaviour = Callable[[Job, Path], int]  # writes the run's files, returns the exit code


def _arg(job: Job, flag: str) -> str:
    return job.argv[job.argv.index(flag) + 1]


def succeed(job: Job, run_dir: Path) -> int:
    """What a finished `loralab train` leaves: metrics.json (buckets, no tail_f1: the runner takes the
    tail bucket's), record.json, status.json."""
    run_dir.mkdir(parents=True, exist_ok=True)
    seed = yaml.safe_load(Path(job.argv[4]).read_text(encoding="utf-8"))["training_args"]["seed"]
    metrics = {
        "accuracy": 0.5 + seed / 1000,
        "weighted_f1": 0.4 + seed / 1000,
        "macro_f1": 0.3,
        "n": 9,
        "buckets": [{"name": "rank 1-2", "mean_f1": 0.6}, {"name": "rank 3-3", "mean_f1": 0.2 + seed / 1000}],
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    record = {"lora_params": 1000 + seed, "training_time_hours": 0.01}
    (run_dir / "record.json").write_text(json.dumps(record), encoding="utf-8")
    (run_dir / "status.json").write_text(json.dumps({"status": "completed"}), encoding="utf-8")
    return 0


def crash_nan(job: Job, run_dir: Path) -> int:
    with job.log.open("a", encoding="utf-8") as f:
        f.write("epoch 0.1\nerror: training loss became nan at step 2; the run was stopped.\n")
    return 2


class Scripted:
    """jobs.Executor whose jobs finish at once by `behaviour(job)`; records every argv."""

    def __init__(self, behaviour: Callable[[Job], Behaviour], max_parallel: int = 2):
        self.max_parallel = max_parallel
        self.behaviour = behaviour
        self.submitted: list[Job] = []
        self.done: deque[Finished] = deque()
        self.shut = False

    def submit(self, job: Job) -> None:
        self.submitted.append(job)
        code = self.behaviour(job)(job, Path(_arg(job, "--output")))
        self.done.append(Finished(job, code, 0.1))

    def running(self) -> int:
        return len(self.done)

    def wait(self) -> list[Finished]:
        out = list(self.done)
        self.done.clear()
        return out

    def shutdown(self) -> None:
        self.shut = True


@pytest.fixture
def base(tmp_path: Path) -> Path:
    train, test = make_data(tmp_path / "data", n_train=30, n_test=9)
    return experiment_yaml(tmp_path, Path("bert-base-uncased"), train, test, epochs=1)


def _write_study(path: Path, base: Path, runs: list[dict[str, Any]], **extra: Any) -> Path:
    study = {"name": "st", "base": str(base), "seeds": [1, 2], "runs": runs, **extra}
    path.write_text(yaml.safe_dump({"study": study}, sort_keys=False), encoding="utf-8")
    return path


RUNS = [
    {"name": "a", "phase": "p1", "overrides": {"lora.config.r": 2}},
    {"name": "b", "phase": "p2", "overrides": {"training_args.learning_rate": 0.05}},
]


def _by_name(fail: set[str]) -> Callable[[Job], Behaviour]:
    return lambda job: crash_nan if job.id.split("-s")[0] in fail else succeed


def test_results_failures_and_the_record(tmp_path: Path, base: Path) -> None:
    study = _write_study(tmp_path / "s.yaml", base, RUNS)
    ex = Scripted(_by_name({"b"}))
    record = run_study(study, tmp_path / "out", executor=ex, quiet=True)
    assert record == load_study(tmp_path / "out")  # what is returned is what was saved
    assert [(r.id, r.status) for r in record.runs] == [
        ("a-s1", "done"), ("a-s2", "done"), ("b-s1", "failed"), ("b-s2", "failed"),
    ]  # fmt: skip
    for r in record.runs:
        run_dir = Path(str(r.run_dir))
        assert run_dir == tmp_path / "out" / "runs" / r.id / "run"
        if r.status == "done":
            m = json.loads((run_dir / "metrics.json").read_text())
            assert r.metrics == {
                **{k: m[k] for k in CLASSIFICATION_METRICS if k in m},
                "tail_f1": m["buckets"][-1]["mean_f1"],
            }
            rec = json.loads((run_dir / "record.json").read_text())
            assert r.trainable_params == rec["lora_params"]
            assert r.train_seconds == pytest.approx(rec["training_time_hours"] * 3600)
        else:
            assert r.exit_code == 2 and r.error is not None and "became nan" in r.error
            assert r.diagnosis is not None and r.diagnosis.signature == "nan-loss"
            assert r.log == str(tmp_path / "out" / "runs" / r.id / "train.log")
    argv = ex.submitted[0].argv
    assert argv[1:4] == ["-m", "loralab", "train"] and "--quiet" in argv and "--resume" not in argv
    # every run of the study shares one prefix cache folder (issue 13)
    assert argv[argv.index("--prefix-cache-dir") + 1] == str(tmp_path / "out" / "prefix_cache")
    assert (tmp_path / "out" / "study.yaml").read_text() == study.read_text()


def test_a_non_empty_out_is_refused_without_resume(tmp_path: Path, base: Path) -> None:
    study = _write_study(tmp_path / "s.yaml", base, RUNS)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("x")
    with pytest.raises(StudyRefused, match="--resume"):
        run_study(study, tmp_path / "out", executor=Scripted(_by_name(set())), quiet=True)


def test_resume_reruns_failed_and_keeps_done(tmp_path: Path, base: Path) -> None:
    study = _write_study(tmp_path / "s.yaml", base, RUNS)
    run_study(study, tmp_path / "out", executor=Scripted(_by_name({"b"})), quiet=True)
    metrics = tmp_path / "out" / "runs" / "a-s1" / "run" / "metrics.json"
    mtime = metrics.stat().st_mtime_ns
    ex = Scripted(_by_name(set()))
    record = run_study(study, tmp_path / "out", executor=ex, resume=True, quiet=True)
    assert [j.id for j in ex.submitted] == ["b-s1", "b-s2"]
    assert all("--resume" not in j.argv for j in ex.submitted)  # a failed run starts again
    assert all(r.status == "done" and r.error is None and r.diagnosis is None for r in record.runs)
    assert metrics.stat().st_mtime_ns == mtime


def test_a_changed_study_is_refused_on_resume_unless_forced(tmp_path: Path, base: Path) -> None:
    study = _write_study(tmp_path / "s.yaml", base, RUNS)
    run_study(study, tmp_path / "out", executor=Scripted(_by_name(set())), quiet=True)
    changed = [RUNS[0], {**RUNS[1], "overrides": {"training_args.learning_rate": 0.07}}]
    _write_study(study, base, changed)
    ex = Scripted(_by_name(set()))
    with pytest.raises(StudyRefused) as e:
        run_study(study, tmp_path / "out", executor=ex, resume=True, quiet=True)
    text = e.value.message()
    assert "run b-s1: training_args.learning_rate: 0.05 -> 0.07" in text
    assert "run b-s2: training_args.learning_rate" in text and "a-s1" not in text
    assert ex.submitted == []
    record = run_study(study, tmp_path / "out", executor=ex, resume=True, force=True, quiet=True)
    assert [j.id for j in ex.submitted] == ["b-s1", "b-s2"]  # only the changed runs
    assert record.runs[2].overrides == {"training_args.learning_rate": 0.07}


def test_a_bad_study_file_runs_nothing(tmp_path: Path, base: Path) -> None:
    study = _write_study(tmp_path / "s.yaml", base, [{"name": "a", "overrides": {"lora.config.rr": 2}}])
    ex = Scripted(_by_name(set()))
    with pytest.raises(ConfigError, match=r"run a: overrides\.lora\.config\.rr"):
        run_study(study, tmp_path / "out", executor=ex, quiet=True)
    assert ex.submitted == [] and not (tmp_path / "out").exists()
    result = CliRunner().invoke(app, ["study", str(study), "--out", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 2, result.output


def test_phases_stop_when_the_rules_say_so(tmp_path: Path, base: Path) -> None:
    three = [*RUNS, {"name": "c", "phase": "p3", "overrides": {"lora.config.r": 8}}]
    study = _write_study(tmp_path / "s.yaml", base, three)
    seen: list[tuple[str, list[str]]] = []

    def after(record: StudyRecord, phase: str, out: Path) -> PhaseOutcome:
        seen.append((phase, [r.id for r in record.runs if r.status == "done"]))
        stop = phase == "p2"
        d = Decision(
            after=phase, rule="r", inputs={"n": 1}, verdict="stop: target met" if stop else "advance"
        )
        return PhaseOutcome([d], stop=stop, reason="target met after p2" if stop else None, selected="a")

    ex = Scripted(_by_name(set()))
    record = run_study(study, tmp_path / "out", executor=ex, after_phase=after, quiet=True)
    # each phase is decided once all its runs (every seed) are done, before the next starts
    assert seen == [("p1", ["a-s1", "a-s2"]), ("p2", ["a-s1", "a-s2", "b-s1", "b-s2"])]
    assert [r.status for r in record.runs[4:]] == ["skipped", "skipped"]
    assert record.runs[4].reason == "target met after p2"
    assert [d.verdict for d in record.decisions] == ["advance", "stop: target met"]
    assert record.selected == "a"
    assert load_study(tmp_path / "out").decisions == record.decisions
    record = run_study(
        study, tmp_path / "out2", executor=Scripted(_by_name(set())), after_phase=after, all_phases=True
    )
    assert all(r.status == "done" for r in record.runs)


def test_ctrl_c_marks_running_runs_queued_and_resume_continues_them(tmp_path: Path, base: Path) -> None:
    study = _write_study(tmp_path / "s.yaml", base, RUNS)

    class Interrupted(Scripted):
        def wait(self) -> list[Finished]:
            if len(self.submitted) >= 2:
                raise KeyboardInterrupt
            return super().wait()

    def checkpointed(job: Job, run_dir: Path) -> int:  # it saved a complete checkpoint, then Ctrl-C
        (run_dir / "checkpoints" / "checkpoint-5").mkdir(parents=True)
        (run_dir / "checkpoints" / "checkpoint-5" / ".complete").write_text("")
        return -2

    ex = Interrupted(lambda job: succeed if job.id == "a-s1" else checkpointed, max_parallel=1)
    with pytest.raises(KeyboardInterrupt):
        run_study(study, tmp_path / "out", executor=ex, quiet=True)
    assert ex.shut
    saved = load_study(tmp_path / "out")
    assert [(r.id, r.status) for r in saved.runs] == [
        ("a-s1", "done"), ("a-s2", "queued"), ("b-s1", "queued"), ("b-s2", "queued"),
    ]  # fmt: skip
    assert saved.runs[1].reason is not None and "interrupted" in saved.runs[1].reason
    ex2 = Scripted(_by_name(set()))
    record = run_study(study, tmp_path / "out", executor=ex2, resume=True, quiet=True)
    assert [j.id for j in ex2.submitted] == ["a-s2", "b-s1", "b-s2"]
    assert "--resume" in ex2.submitted[0].argv  # continued from its checkpoint
    assert "--resume" not in ex2.submitted[1].argv  # never started: from the beginning
    assert all(r.status == "done" for r in record.runs)


def test_a_run_that_finished_after_the_study_died_is_not_run_again(tmp_path: Path, base: Path) -> None:
    study = _write_study(tmp_path / "s.yaml", base, RUNS[:1])

    class DiesAfterSecondRun(Scripted):  # the study process "dies" before it records a-s2's end
        def wait(self) -> list[Finished]:
            if len(self.submitted) >= 2:
                raise KeyboardInterrupt
            return super().wait()

    with pytest.raises(KeyboardInterrupt):
        run_study(study, tmp_path / "out", executor=DiesAfterSecondRun(_by_name(set()), 1), quiet=True)
    assert load_study(tmp_path / "out").runs[1].status == "queued"
    ex = Scripted(_by_name(set()))
    record = run_study(study, tmp_path / "out", executor=ex, resume=True, quiet=True)
    assert ex.submitted == []  # its run directory says completed: its results are read, not redone
    m = json.loads((tmp_path / "out" / "runs" / "a-s2" / "run" / "metrics.json").read_text())
    assert record.runs[1].status == "done" and record.runs[1].metrics is not None
    assert record.runs[1].metrics["weighted_f1"] == m["weighted_f1"]


def test_baselines_are_scored_like_runs(tmp_path: Path, base: Path) -> None:
    preds = tmp_path / "api.csv"
    preds.write_text("gold,pred\ncard,card\nfee,card\ntax,tax\ncard,card\n", encoding="utf-8")
    study = _write_study(
        tmp_path / "s.yaml", base, RUNS[:1], baselines=[{"name": "api", "predictions": "api.csv"}]
    )
    record = run_study(study, tmp_path / "out", executor=Scripted(_by_name(set())), quiet=True)
    b = record.baselines[0]
    assert b.error is None and b.metrics is not None
    assert b.metrics["accuracy"] == pytest.approx(3 / 4)  # 3 of 4 rows right


# ---- the local executor ----------------------------------------------------------------------------


def _py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_the_local_executor_runs_at_most_max_parallel(tmp_path: Path) -> None:
    ex = LocalExecutor(max_parallel=2)
    for i, code in enumerate(["print('hi')", "import sys; sys.exit(3)", "import time; time.sleep(0.2)"]):
        ex.submit(Job(id=f"j{i}", argv=_py(code), log=tmp_path / f"j{i}.log"))
        assert ex.running() <= 2
    finished: dict[str, int] = {}
    while len(finished) < 3:
        finished.update({f.job.id: f.exit_code for f in ex.wait()})
    assert finished == {"j0": 0, "j1": 3, "j2": 0}
    assert (tmp_path / "j0.log").read_text() == "hi\n"


def test_the_local_executor_shutdown_stops_its_children(tmp_path: Path) -> None:
    ex = LocalExecutor(max_parallel=1, grace_seconds=2)
    ex.submit(Job(id="j", argv=_py("import time; time.sleep(60)"), log=tmp_path / "j.log"))
    pid = ex.pids()["j"]
    t0 = time.monotonic()
    ex.shutdown()
    assert time.monotonic() - t0 < 5 and ex.running() == 0
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


# ---- real runs -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny BERT and a 1-epoch base experiment (max_length 32) on a small 3-class set."""
    folder = tmp_path_factory.mktemp("tiny")
    model = tiny_bert(folder / "model")
    train, test = make_data(folder / "data", n_train=60, n_test=18)
    return model, experiment_yaml(folder, model, train, test, epochs=1)


def _ray_installed() -> bool:
    return importlib.util.find_spec("ray") is not None


@pytest.mark.slow
@pytest.mark.parametrize(
    "executor",
    [
        "local",
        pytest.param(
            "ray",
            marks=pytest.mark.skipif(not _ray_installed(), reason="ray is an optional extra (loralab[ray])"),
        ),
    ],
)
def test_a_study_isolates_and_diagnoses_failing_runs(
    tmp_path: Path, tiny: tuple[Path, Path], executor: str
) -> None:
    _, base = tiny
    runs = [
        {"name": "good"},
        {"name": "badtarget", "overrides": {"lora.config.target_modules": ["query", "nosuch"]}},
        {"name": "nan", "overrides": {"training_args.learning_rate": 1.0e30}},
    ]
    study = _write_study(tmp_path / "s.yaml", base, runs, seeds=[7])
    out = tmp_path / "out"
    args = ["study", str(study), "--out", str(out), "--max-parallel", "3", "--executor", executor]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output  # a run failed
    record = load_study(out)
    good, bad, nan = record.runs
    assert (good.status, bad.status, nan.status) == ("done", "failed", "failed")
    m = json.loads(Path(str(good.run_dir), "metrics.json").read_text())
    assert good.metrics == {k: m[k] for k in CLASSIFICATION_METRICS if k in m}
    assert {"accuracy", "weighted_f1", "macro_f1", "tail_f1"} <= set(good.metrics)
    rec = json.loads(Path(str(good.run_dir), "record.json").read_text())
    assert good.trainable_params == rec["lora_params"] > 0
    assert bad.diagnosis is not None and bad.diagnosis.signature == "unmatched-target"
    assert "nosuch" in bad.diagnosis.evidence and bad.exit_code == 2
    assert nan.diagnosis is not None and nan.diagnosis.signature == "nan-loss"
    assert nan.error is not None and nan.error.startswith("error: training loss became nan")
    for r in (bad, nan):  # the evidence is in the run's own log
        assert r.diagnosis is not None and r.diagnosis.evidence in Path(str(r.log)).read_text()
    assert "done    good-s7" in result.output and "failed  nan-s7" in result.output
    # the study's report is written at the end (and logged on the parent MLflow run)
    report = (out / "report" / "report.md").read_text(encoding="utf-8")
    assert "unmatched-target" in report and "nan-loss" in report


def _wait_for(pred: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.3)


def _statuses(out: Path) -> dict[str, str]:
    try:
        return {r["name"]: r["status"] for r in json.loads((out / "study.json").read_text())["runs"]}
    except (OSError, ValueError, KeyError):
        return {}


EXECUTORS = [
    "local",
    pytest.param(
        "ray",
        marks=pytest.mark.skipif(not _ray_installed(), reason="ray is an optional extra (loralab[ray])"),
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize("executor", EXECUTORS)
def test_kill_9_of_the_study_then_resume_reruns_no_finished_run(
    tmp_path: Path, tiny: tuple[Path, Path], executor: str
) -> None:
    _, base = tiny
    runs = [{"name": n, "overrides": {"lora.config.r": r}} for n, r in (("r2", 2), ("r4", 4), ("r8", 8))]
    study = _write_study(tmp_path / "s.yaml", base, runs, seeds=[7])
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "loralab", "study", str(study), "--out", str(out), "--quiet"]
    argv += ["--executor", executor]
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        second = out / "runs" / "r4-s7" / "run" / "checkpoints"
        _wait_for(
            lambda: _statuses(out).get("r2") == "done" and any(second.glob("checkpoint-*/.complete")),
            240,
            "one run is done and the next has a checkpoint",
        )
        child = json.loads((second.parent / "status.json").read_text())["pid"]
        os.kill(proc.pid, signal.SIGKILL)  # the study process only
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    # the training child dies with the study (no orphan keeps writing into the run folder)
    _wait_for(lambda: not Path(f"/proc/{child}").exists() or _zombie(child), 20, "the orphaned child is gone")
    assert _statuses(out) == {"r2": "done", "r4": "running", "r8": "queued"}
    finished = Path(out / "runs" / "r2-s7" / "run" / "metrics.json")
    mtime = finished.stat().st_mtime_ns
    record = run_study(study, out, resume=True, quiet=True, executor=executor)
    assert [r.status for r in record.runs] == ["done", "done", "done"]
    assert finished.stat().st_mtime_ns == mtime  # not run again
    log = Path(str(record.runs[1].log)).read_text()
    continued = "--resume" in log.splitlines()[-1] or "--resume" in log.rsplit("==> loralab study: ", 1)[1]
    if executor == "local":
        assert continued
    else:
        # A Ray task's process may outlive the killed driver for a few seconds: the tiny run then
        # finishes on its own, and --resume reads its result instead of running it again.
        assert continued or log.count("==> loralab study: ") == 1
    for r in record.runs:
        m = json.loads(Path(str(r.run_dir), "metrics.json").read_text())
        assert r.metrics == {k: m[k] for k in CLASSIFICATION_METRICS if k in m}


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def test_the_live_table_shows_status_and_the_current_epoch(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "a-s1" / "run"
    run_dir.mkdir(parents=True)
    lines = [{"step": 2, "epoch": 0.25, "loss": 1.0}, {"step": 4, "epoch": 0.5, "loss": 0.9}]
    (run_dir / "train_log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    record = StudyRecord(
        name="st",
        runs=[
            RunRecord(
                name="a", phase="p1", model="m", seed=1, overrides={}, status="running", run_dir=str(run_dir)
            ),
            RunRecord(
                name="b", phase=None, model="m", seed=1, overrides={}, status="skipped", reason="target met"
            ),
        ],
    )
    console = Console(record=True, width=150)
    console.print(study_table(record, {"a-s1": time.monotonic() - 65}, {}))
    text = console.export_text()
    row_a = next(line for line in text.splitlines() if "│ a " in line)
    assert "running" in row_a and "1:05" in row_a and "0.50" in row_a  # the last line's epoch
    assert "target met" in text and "skipped" in text
