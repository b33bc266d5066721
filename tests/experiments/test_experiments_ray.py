"""`--executor ray` (issue 11) on a local 2-CPU Ray instance: exit codes (incl. a signal), logs, env and
cwd reach the job, at most `max_parallel` jobs run at once (checked from the jobs' own timestamps),
`wait` returns each job once, shutdown stops a running job, and a real `loralab train` run through Ray
gives the same metrics.json as the same config trained by a plain local subprocess, and (slow) a
two-run study through `run_study` records each run's own metrics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'loralab[ray]')")

from train_fixtures import experiment_yaml, make_data, tiny_bert  # noqa: E402

from loralab.errors import LoralabError  # noqa: E402
from loralab.experiments import ray_executor  # noqa: E402
from loralab.experiments.jobs import Finished, Job  # noqa: E402
from loralab.experiments.ray_executor import CANCEL_GRACE_S, FORCE_WAIT_S, RayExecutor  # noqa: E402
from loralab.experiments.record import STUDY_FILE  # noqa: E402
from loralab.experiments.runner import run_study  # noqa: E402


@pytest.fixture(scope="module")
def executor() -> Iterator[RayExecutor]:
    ex = RayExecutor(max_parallel=2, num_cpus=2)
    yield ex
    ex.shutdown()
    assert not ray.is_initialized()  # it started Ray, so it shut it down


def _py(code: str, log: Path, job_id: str, **kw: object) -> Job:
    return Job(id=job_id, argv=[sys.executable, "-c", code], log=log, **kw)  # type: ignore[arg-type]


def _drain(ex: RayExecutor) -> list[Finished]:
    out: list[Finished] = []
    while ex.running():
        got = ex.wait()
        assert got, "wait returned nothing while jobs were running"
        out += got
    return out


def test_exit_codes_logs_env_and_cwd(executor: RayExecutor, tmp_path: Path) -> None:
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    logs = tmp_path / "logs"
    jobs = [
        _py(
            "import os, sys, pathlib; print('to stdout'); print('to stderr', file=sys.stderr);"
            "pathlib.Path('out.json').write_text("
            "__import__('json').dumps({'x': os.environ['LORALAB_X'], 'cwd': os.getcwd()}))",
            logs / "ok.log",
            "ok",
            env={"LORALAB_X": "from the job"},
            cwd=workdir,
        ),
        _py("import sys; print('bye'); sys.exit(3)", logs / "three.log", "three"),
        _py("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", logs / "killed.log", "killed"),
        Job(id="missing", argv=[str(tmp_path / "no-such-program")], log=logs / "missing.log"),
        # The task itself fails (its log cannot be created on the node): exit 1, not a hang.
        _py("pass", tmp_path / "a-file" / "unwritable.log", "unwritable"),
    ]
    (tmp_path / "a-file").write_text("not a folder")
    (logs / "three.log").parent.mkdir(parents=True)
    (logs / "three.log").write_text("earlier attempt\n")  # appended to, never truncated
    for job in jobs:
        executor.submit(job)
    finished = _drain(executor)
    codes = {f.job.id: f.exit_code for f in finished}
    assert sorted(codes) == sorted(j.id for j in jobs)  # each job exactly once
    assert codes == {"ok": 0, "three": 3, "killed": -signal.SIGKILL, "missing": 127, "unwritable": 1}
    written = json.loads((workdir / "out.json").read_text())
    assert written == {"x": "from the job", "cwd": str(workdir)}
    ok_log = (logs / "ok.log").read_text()
    assert "to stdout" in ok_log and "to stderr" in ok_log
    three_log = (logs / "three.log").read_text()
    assert three_log.startswith("earlier attempt\n") and "bye" in three_log
    assert "no-such-program" in (logs / "missing.log").read_text()
    assert executor.wait() == []  # nothing left: returns at once instead of blocking


def test_submit_never_blocks_and_at_most_max_parallel_run(executor: RayExecutor, tmp_path: Path) -> None:
    stamps = tmp_path / "stamps"
    stamps.mkdir()
    code = (
        "import json, sys, time; t0 = time.time(); time.sleep(1.5);"
        f"open({str(stamps)!r} + '/' + sys.argv[1], 'w').write(json.dumps([t0, time.time()]))"
    )
    t = time.monotonic()
    for i in range(4):
        argv = [sys.executable, "-c", code, f"s{i}"]
        executor.submit(Job(id=f"s{i}", argv=argv, log=tmp_path / f"s{i}.log"))
    assert time.monotonic() - t < 1.0  # four 1.5 s jobs submitted without waiting for any
    assert executor.running() == 2  # the other two wait in the executor's queue
    finished = _drain(executor)
    assert sorted(f.job.id for f in finished) == ["s0", "s1", "s2", "s3"]
    assert all(f.exit_code == 0 for f in finished)
    spans = [json.loads((stamps / f"s{i}").read_text()) for i in range(4)]
    for start, _ in spans:  # how many jobs were running at each job's start, by their own clocks
        assert sum(1 for s, e in spans if s <= start < e) <= 2
    for f in finished:  # the reported seconds cover the job's own run
        s, e = json.loads((stamps / f.job.id).read_text())
        assert e - s <= f.seconds < e - s + 5


def test_a_job_no_local_instance_can_fit_is_refused(executor: RayExecutor, tmp_path: Path) -> None:
    with pytest.raises(LoralabError, match="needs 3 CPUs"):
        executor.submit(_py("pass", tmp_path / "big.log", "big", cpus=3))
    assert executor.running() == 0


def test_without_ray_installed_the_error_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ray_executor, "ray", None)
    with pytest.raises(LoralabError, match=r"pip install 'loralab\[ray\]'"):
        RayExecutor(max_parallel=1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (dead, not yet reaped by its new parent) counts as gone
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _gone_within(pid: int, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end and _alive(pid):
        time.sleep(0.1)
    return not _alive(pid)


def _running_sleeper(tmp_path: Path) -> tuple[RayExecutor, int]:
    """A new executor on the module's Ray running a 120 s sleeper, and the sleeper's pid once it runs."""
    pid_file = tmp_path / "pid"
    code = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    ex = RayExecutor(max_parallel=1)
    ex.submit(_py(code, tmp_path / "sleeper.log", "sleeper"))
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return ex, int(pid_file.read_text())


def test_shutdown_stops_a_running_job(executor: RayExecutor, tmp_path: Path) -> None:
    # A second executor on the same Ray: its shutdown cancels its own job and leaves Ray running.
    second, pid = _running_sleeper(tmp_path)
    t = time.monotonic()
    second.shutdown()
    # The polite cancel (KeyboardInterrupt in the task, which SIGTERMs its run) usually ends it at
    # once; when Ray does not deliver it, shutdown waits CANCEL_GRACE_S + 10 s and force-cancels (a
    # CI run saw exactly that: 20.0 s). Either way the 120 s sleeper must not be waited for.
    assert time.monotonic() - t < CANCEL_GRACE_S + 10 + FORCE_WAIT_S + 5
    assert ray.is_initialized()  # the module's executor still owns it
    # After a forced cancel the run dies with its worker (PDEATHSIG), which the OS finishes a moment
    # later; the sleeper must be gone long before its 120 s.
    assert _gone_within(pid, 10)
    assert second.running() == 0


def test_shutdown_force_cancels_when_the_polite_cancel_is_not_delivered(
    executor: RayExecutor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The path two CI runs took: Ray did not raise KeyboardInterrupt in the task, so shutdown waited
    and force-cancelled; the run must still be gone."""
    second, pid = _running_sleeper(tmp_path)
    real_cancel = ray.cancel
    monkeypatch.setattr(
        ray, "cancel", lambda ref, force=False: real_cancel(ref, force=True) if force else None
    )
    monkeypatch.setattr(ray_executor, "CANCEL_GRACE_S", 0.0)  # the wait is then 10 s
    second.shutdown()
    assert _gone_within(pid, 10)
    assert second.running() == 0


def test_real_training_through_ray_equals_the_local_run(executor: RayExecutor, tmp_path: Path) -> None:
    model = tiny_bert(tmp_path / "model")
    train_csv, test_csv = make_data(tmp_path / "data")
    cfg = experiment_yaml(tmp_path, model, train_csv, test_csv, epochs=1)

    def argv(out: Path) -> list[str]:
        return [sys.executable, "-m", "loralab", "train", str(cfg), "--output", str(out), "--quiet"]

    # The local path: the same command as a plain subprocess, while Ray runs its copy.
    local = subprocess.Popen(argv(tmp_path / "local"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    executor.submit(Job(id="train-s7", argv=argv(tmp_path / "ray"), log=tmp_path / "ray-train.log"))
    (finished,) = _drain(executor)
    local_out, _ = local.communicate(timeout=300)
    assert local.returncode == 0, local_out.decode()[-2000:]
    assert finished.exit_code == 0, (tmp_path / "ray-train.log").read_text()[-2000:]
    a = json.loads((tmp_path / "local" / "metrics.json").read_text())
    b = json.loads((tmp_path / "ray" / "metrics.json").read_text())
    for k in ("accuracy", "weighted_f1", "macro_f1", "tail_f1"):
        assert b[k] == a[k], k
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)


@pytest.mark.slow  # two tiny trainings through the whole study runner: ~30 s on 2 busy cores
def test_a_two_run_study_through_ray_records_each_runs_own_metrics(
    executor: RayExecutor, tmp_path: Path
) -> None:
    model = tiny_bert(tmp_path / "model")
    train_csv, test_csv = make_data(tmp_path / "data")
    experiment_yaml(tmp_path, model, train_csv, test_csv, epochs=1)
    study_file = tmp_path / "study.yaml"
    study_file.write_text(
        "study:\n"
        "  name: ray-pair\n"
        "  base: exp.yaml\n"
        "  seeds: [7]\n"
        "  runs:\n"
        "    - {name: lr2e-2, overrides: {training_args.learning_rate: 0.02}}\n"
        "    - {name: r2, overrides: {lora.config.r: 2}}\n",
        encoding="utf-8",
    )
    out = tmp_path / "study"
    # By name, as `loralab study --executor ray` does; it joins the module's 2-CPU instance.
    run_study(study_file, out, executor="ray", max_parallel=2, quiet=True)
    record = json.loads((out / STUDY_FILE).read_text())
    assert [(r["name"], r["status"]) for r in record["runs"]] == [("lr2e-2", "done"), ("r2", "done")]
    for r in record["runs"]:
        own = json.loads((Path(r["run_dir"]) / "metrics.json").read_text())
        assert r["metrics"], r["name"]
        for k, v in r["metrics"].items():
            assert v == own[k], (r["name"], k)
        assert "[loralab] ray task on" in Path(r["log"]).read_text()  # Ray ran it, not a local process
