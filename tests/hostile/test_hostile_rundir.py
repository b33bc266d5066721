"""Hostile run directories (issue 10, A and B): names that climb out of runs/, output folders that are
files or hold the user's own files, resumes of something else (a changed config or data file, a
checkpoint with a missing part, a run that never reached a checkpoint, a run still being written).

Every refusal is one line (or one line per differing key) naming the path, exit code 2, and leaves the
folder exactly as it was."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from train_fixtures import experiment_yaml, make_data, tiny_bert
from typer.testing import CliRunner

from loralab.cli import app
from loralab.config import load_experiment
from loralab.train.launch import Launch, NodeLayout, launch_distributed
from loralab.train.run import config_differences, train
from loralab.train.rundir import (
    RUNS_DIR,
    RunDirRefused,
    check_run_dir,
    checkpoint_problems,
    new_run_dir,
    process_identity,
    run_folder_name,
)
from loralab.train.session import Session

HOSTILE_NAME = "../../../../victim"


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under `folder` with its content hash and mtime: "untouched" means equal snapshots."""
    return {
        str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hostile-rundir")
    model = tiny_bert(root / "model")
    train_csv, test_csv = make_data(root / "data")
    return {"root": root, "model": model, "train": train_csv, "test": test_csv}


@pytest.fixture(scope="module")
def base_run(tiny: dict[str, Path]) -> dict[str, Any]:
    """One finished run, started from a working directory four levels down with
    `experiment.name: ../../../../victim` and no --output (the run folder comes from the name). Its data
    is its own copy, so a test may change the file's content and put it back."""
    top = tiny["root"] / "top"
    work = top / "a" / "b" / "c" / "work"
    work.mkdir(parents=True)
    data = top / "data"
    data.mkdir()
    train_csv = Path(shutil.copy(tiny["train"], data / "train.csv"))
    test_csv = Path(shutil.copy(tiny["test"], data / "test.csv"))
    cfg = experiment_yaml(
        top, tiny["model"], train_csv, test_csv, epochs=1, extra=f"experiment:\n  name: {HOSTILE_NAME}\n"
    )
    old = Path.cwd()
    os.chdir(work)
    try:
        result = train(cfg, quiet=True)
    finally:
        os.chdir(old)
    assert result is not None and not result.run_dir.is_absolute()  # runs/<stamp>-<name>, from cwd
    run_dir = work / result.run_dir
    return {"top": top, "work": work, "cfg": cfg, "train_csv": train_csv, "result": result, "run": run_dir}


def _cfg_stub(name: object, stem: str = "exp") -> Any:
    return SimpleNamespace(experiment={"name": name}, source=Path(f"/x/{stem}.yaml"))


# ---- A: where a run is written ----------------------------------------------------------------------

NAMES = [
    # (experiment.name, the folder name after the time stamp)
    (HOSTILE_NAME, "victim"),
    ("/etc/cron.d/job", "etc-cron.d-job"),
    ("..", "exp"),  # nothing usable left: the config file's name
    (".", "exp"),
    ("", "exp"),
    ("~", "exp"),
    ("a/../../b", "a-..-..-b"),
    ("C:\\Windows\\System32", "C-Windows-System32"),
    ("name\x00null", "name-null"),
    ("$(rm -rf ~)", "rm--rf"),
    ("-rf", "rf"),  # a leading dash would read as an option in a shell
    (".hidden", "hidden"),
    ("분류 실험 1", "분류-실험-1"),  # Korean stays readable
    (42, "42"),
    ("baseline-r16_a32.v2", "baseline-r16_a32.v2"),  # a plain name is kept as it is
]


@pytest.mark.parametrize(("given", "expected"), NAMES)
def test_experiment_name_becomes_one_folder_inside_runs(
    given: object, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = _cfg_stub(given)
    run_dir = new_run_dir(cfg, None)
    assert run_dir.parent == RUNS_DIR
    assert run_dir.resolve().parent == (tmp_path / "runs").resolve()
    stamp = run_dir.name[: len("20250101-120000")]
    assert run_dir.name == f"{stamp}-{expected}"
    name, note = run_folder_name(cfg)
    assert name == expected
    # a note exactly when the name given is not the folder's
    assert (note is not None) == (str(given) != expected)


@pytest.mark.parametrize("given", ["x" * 300, "한" * 200, "../" * 100 + "v"])
def test_long_names_fit_a_file_name(given: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    run_dir = new_run_dir(_cfg_stub(given), None)
    # 100 bytes of name + "YYYYmmdd-HHMMSS-" (16) stay under the 255-byte limit of a file name
    assert len(run_dir.name.encode("utf-8")) <= 116
    run_dir.mkdir(parents=True)  # a real folder can be made with it
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [run_dir.name]


def test_two_runs_of_one_name_in_one_second_get_two_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    first = new_run_dir(_cfg_stub("same"), None)
    first.mkdir(parents=True)
    second = new_run_dir(_cfg_stub("same"), None)
    if second.name[:15] == first.name[:15]:  # same second: a suffix, not the first run's folder
        assert second.name == first.name + "-2"
    assert second != first


def test_hostile_name_writes_nothing_outside_runs(base_run: dict[str, Any]) -> None:
    top, work = base_run["top"], base_run["work"]
    run_dir = base_run["run"]
    # cwd was top/a/b/c/work: "runs/<stamp>-../../../../victim" resolved to top/a/b/victim
    assert not (top / "a" / "b" / "victim").exists() and not (top / "victim").exists()
    assert sorted(p.name for p in (top / "a" / "b").iterdir()) == ["c"]
    assert sorted(p.name for p in work.iterdir()) == ["runs"]
    (folder,) = (work / "runs").iterdir()
    assert folder.name.endswith("-victim") and folder.name == run_dir.name
    assert json.loads((folder / "status.json").read_text())["status"] == "completed"
    assert any("is not a plain folder name" in n for n in base_run["result"].notes)


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def _refused_one_line(result: Any, *needles: str) -> str:
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert "internal error" not in err and "file not found" not in err
    for n in needles:
        assert n in err, (n, err)
    return str(err)


def test_output_that_cannot_be_a_run_folder_is_refused(tiny: dict[str, Path], tmp_path: Path) -> None:
    cfg = experiment_yaml(tmp_path, tiny["model"], tiny["train"], tiny["test"])
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine\n")
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    cases = [
        # (--output, what the message says)
        (a_file, "is a file, not a folder"),
        (a_file / "run", f"{a_file} is a file, so no folder can be made under it"),
        (a_file / "deeper" / "run", f"{a_file} is a file, so no folder can be made under it"),
        (tmp_path / "dangling", "is a link to nothing"),
        (Path("/proc/loralab-run"), "cannot create the run directory /proc/loralab-run"),
    ]
    before = snapshot(tmp_path)
    for output, says in cases:
        _refused_one_line(_cli("train", str(cfg), "-o", str(output), "--quiet"), str(output), says)
    assert snapshot(tmp_path) == before
    assert not Path("/proc/loralab-run").exists()


def test_output_holding_the_users_own_files_is_refused(tiny: dict[str, Path], tmp_path: Path) -> None:
    # `loralab train proj/config.yaml -o proj`: the user's commented config would become the run's.
    proj = tmp_path / "proj"
    proj.mkdir()
    mine = experiment_yaml(proj, tiny["model"], tiny["train"], tiny["test"], epochs=1)
    users_config = proj / "config.yaml"
    users_config.write_text("# my notes: r=4 worked best\n" + mine.read_text(encoding="utf-8"))
    mine.unlink()
    other = tmp_path / "other"
    other.mkdir()
    (other / "metrics.json").write_text('{"mine": true}\n')  # a name loralab writes, not loralab's file
    (other / "status.json").write_text('{"status": "my own"}\n')
    many = tmp_path / "many"
    many.mkdir()
    for i in range(7):
        (many / f"f{i}.txt").write_text("x")
    cases = [
        (proj, ["holds files loralab did not write (config.yaml)", "give a new or empty folder"]),
        (other, ["metrics.json, status.json"]),
        (many, ["f0.txt, f1.txt, f2.txt, f3.txt, f4.txt and 2 more"]),
    ]
    before = snapshot(tmp_path)
    for output, says in cases:
        _refused_one_line(_cli("train", str(users_config), "-o", str(output), "--quiet"), str(output), *says)
        # --resume into a folder that never held a run: told so, not "no checkpoint"
        result = _cli("train", str(users_config), "-o", str(output), "--resume", "--quiet")
        _refused_one_line(result, f"--resume: {output} is not a loralab run")
    assert snapshot(tmp_path) == before


def test_empty_folder_and_demo_folder_are_fine(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert check_run_dir(tmp_path / "empty", resume=False) == []
    assert check_run_dir(tmp_path / "new" / "run", resume=False) == []
    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / "demo.yaml").write_text("# `loralab demo`: LoRA on ...\nmodel: x\n")  # `loralab demo` writes it
    assert check_run_dir(demo, resume=False) == []
    (demo / "demo.yaml").write_text("model: x\n")  # a user's demo.yaml is the user's
    with pytest.raises(RunDirRefused, match=r"did not write \(demo.yaml\)"):
        check_run_dir(demo, resume=False)


def test_distributed_launch_refuses_before_starting_workers(tiny: dict[str, Path], tmp_path: Path) -> None:
    cfg = experiment_yaml(tmp_path, tiny["model"], tiny["train"], tiny["test"])
    a_file = tmp_path / "file"
    a_file.write_text("x")
    t0 = time.perf_counter()
    with pytest.raises(RunDirRefused, match="is a file, not a folder"):
        launch_distributed(cfg, output=a_file, resume=False, quiet=True, launch=Launch(NodeLayout(), 2))
    with pytest.raises(RunDirRefused, match="--resume continues the run in --output"):
        launch_distributed(cfg, output=None, resume=True, quiet=True, launch=Launch(NodeLayout(), 2))
    assert time.perf_counter() - t0 < 30  # no torchrun was started


def test_resume_needs_output(tiny: dict[str, Path], tmp_path: Path) -> None:
    cfg = experiment_yaml(tmp_path, tiny["model"], tiny["train"], tiny["test"])
    _refused_one_line(
        _cli("train", str(cfg), "--resume", "--quiet"), "--resume continues the run in --output"
    )


# ---- B: resume only what the run was ----------------------------------------------------------------


def _copy_run(base_run: dict[str, Any], dest: Path) -> Path:
    return Path(shutil.copytree(base_run["run"], dest))


def test_completed_run_is_not_overwritten(base_run: dict[str, Any], tmp_path: Path) -> None:
    run_dir = _copy_run(base_run, tmp_path / "run")
    before = snapshot(run_dir)
    result = _cli("train", str(base_run["cfg"]), "-o", str(run_dir), "--quiet")
    _refused_one_line(result, f"{run_dir} already holds a completed run", "--resume", "checkpoint-17")
    assert snapshot(run_dir) == before


def _edit(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new)


CHANGES = [
    # (what the user changed in the YAML, the key the refusal names, the values it shows)
    (("r: 4", "r: 8"), "lora.config.r", "the run has 4, this config has 8"),
    (
        ("learning_rate: 0.02", "learning_rate: 0.002"),
        "training_args.learning_rate",
        "0.02, this config has 0.002",
    ),
    (
        ("num_train_epochs: 1", "num_train_epochs: 3"),
        "training_args.num_train_epochs",
        "1, this config has 3",
    ),
    (("[query, key, value, dense]", "[query, value]"), "lora.config.target_modules", ""),
    (("max_length: 32", "max_length: 16"), "data.max_length", "32, this config has 16"),
    (("seed: 7", "seed: 8"), "training_args.seed", ""),
    (
        ("use_cpu: true", "use_cpu: true\n  weight_decay: 0.1"),
        "training_args.weight_decay",
        "the run has nothing",
    ),
]


@pytest.mark.parametrize(("edit", "key", "shows"), CHANGES, ids=[c[1] for c in CHANGES])
def test_resume_with_a_changed_config_is_refused_and_touches_nothing(
    base_run: dict[str, Any], tmp_path: Path, edit: tuple[str, str], key: str, shows: str
) -> None:
    run_dir = base_run["run"]
    changed = tmp_path / "exp.yaml"
    changed.write_text(_edit(base_run["cfg"].read_text(encoding="utf-8"), *edit), encoding="utf-8")
    before = snapshot(run_dir)
    with pytest.raises(RunDirRefused) as e:
        train(changed, output=run_dir, resume=True, quiet=True)
    msg = e.value.message()
    assert msg.startswith(f"--resume: the config differs from the run's ({run_dir / 'config.yaml'})")
    assert f"  - {key}: " in msg and shows in msg
    assert sum(line.startswith("  - ") for line in msg.splitlines()) == 1  # only what changed
    assert f"loralab train {run_dir / 'config.yaml'} --output {run_dir} --resume" in msg
    assert snapshot(run_dir) == before


def test_resume_with_changed_data_is_refused(base_run: dict[str, Any], tmp_path: Path) -> None:
    run_dir = base_run["run"]
    train_csv: Path = base_run["train_csv"]
    original = train_csv.read_bytes()
    before = snapshot(run_dir)
    # 1. same path, one label changed in place: only the content hash tells
    edited = original.replace(b",card\r\n", b",fee\r\n", 1)
    assert edited != original and len(edited) == len(original) - 1
    try:
        train_csv.write_bytes(edited)
        with pytest.raises(RunDirRefused) as e:
            train(base_run["cfg"], output=run_dir, resume=True, quiet=True)
    finally:
        train_csv.write_bytes(original)
    msg = e.value.message()
    assert f"  - data.train_file: {train_csv.resolve()} changed since the run started" in msg
    assert f"({len(original)} -> {len(original) - 1} bytes" in msg
    # 2. the same content under another path: the path is part of the run (evaluate reads it)
    moved = Path(shutil.copy(train_csv, tmp_path / "train.csv"))
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(
        _edit(base_run["cfg"].read_text(encoding="utf-8"), f"train_file: {train_csv}", f"train_file: {moved}")
    )
    with pytest.raises(RunDirRefused, match=r"  - data\.train_file: the run has"):
        train(cfg, output=run_dir, resume=True, quiet=True)
    assert snapshot(run_dir) == before


def test_what_resume_compares(base_run: dict[str, Any], tmp_path: Path) -> None:
    run_dir = base_run["run"]
    # The command the refusal suggests is valid: the run's own config.yaml matches the run.
    assert config_differences(load_experiment(run_dir / "config.yaml"), run_dir) == ([], [])
    # Tracking decides where metrics go, not what is trained: not compared.
    cfg = tmp_path / "exp.yaml"
    text = base_run["cfg"].read_text(encoding="utf-8")
    cfg.write_text(_edit(text, "tracking:\n  backend: none", "tracking:\n  uri: http://127.0.0.1:9/"))
    assert config_differences(load_experiment(cfg), run_dir) == ([], [])


DAMAGE = [
    # (what is done to a complete checkpoint, the part its problem names)
    ("rm optimizer.safetensors", "optimizer.safetensors missing"),
    ("rm optimizer.json", "optimizer.json missing"),
    ("rm scheduler.safetensors scheduler.json", "scheduler.json missing"),
    ("rm trainer_state.json", "trainer_state.json missing"),
    ("garble trainer_state.json", "trainer_state.json unreadable"),
    ("rm rng_state.safetensors rng_state.json", "RNG state missing"),
    ("rm rng_state.safetensors", "rng_state.safetensors missing"),
    ("rm adapter_model.safetensors", "adapter_model.safetensors missing"),
    ("rm adapter_config.json", "adapter_config.json missing"),
    ("cut adapter_model.safetensors", "adapter_model.safetensors truncated"),
    ("cut optimizer.safetensors", "optimizer.safetensors truncated"),
    ("empty scheduler.safetensors", "scheduler.safetensors truncated"),
    ("unknown tensor optimizer.json", "optimizer.json names tensors that optimizer.safetensors lacks"),
    ("rm .complete", "no .complete marker"),
]


def _damage(ckpt: Path, how: str) -> None:
    verb, *rest = how.split(" ")
    names = rest[-1:] if verb in ("garble", "cut", "empty", "unknown") else rest
    for name in names:
        p = ckpt / name
        if verb == "rm":
            p.unlink()
        elif verb == "garble":
            p.write_text('{"global_step": 1')
        elif verb == "cut":
            p.write_bytes(p.read_bytes()[:-100])
        elif verb == "empty":
            p.write_bytes(b"")
        elif verb == "unknown":
            p.write_text(p.read_text().replace('"__tensor__": "t0"', '"__tensor__": "t999"', 1))


@pytest.mark.parametrize(("how", "says"), DAMAGE, ids=[d[0] for d in DAMAGE])
def test_a_checkpoint_is_complete_only_with_every_part(
    base_run: dict[str, Any], tmp_path: Path, how: str, says: str
) -> None:
    ckpt = Path(shutil.copytree(base_run["run"] / "checkpoints" / "checkpoint-17", tmp_path / "c"))
    assert checkpoint_problems(ckpt) == []  # the copy is whole
    _damage(ckpt, how)
    problems = checkpoint_problems(ckpt)
    assert len(problems) == 1 and problems[0].startswith(says), problems


LAYOUTS = [
    # (files of a DeepSpeed or FSDP checkpoint, besides .complete and trainer_state.json; problems)
    (["latest=global_step5", "global_step5/"], []),
    (["latest=global_step5"], ["DeepSpeed state folder global_step5 missing"]),
    (["global_step5/"], ["DeepSpeed state folder (latest) missing"]),
    (["pytorch_model_fsdp_0/", "optimizer_0/"], []),
    (["pytorch_model_fsdp_0/", "optimizer.bin=x"], []),
    (["pytorch_model_fsdp_0/"], ["FSDP optimizer state missing"]),
]


@pytest.mark.parametrize(("files", "problems"), LAYOUTS)
def test_deepspeed_and_fsdp_checkpoints_are_checked_in_their_own_layout(
    tmp_path: Path, files: list[str], problems: list[str]
) -> None:
    ckpt = tmp_path / "checkpoint-5"
    ckpt.mkdir()
    (ckpt / ".complete").write_text("5\n")
    (ckpt / "trainer_state.json").write_text('{"global_step": 5}')
    for f in files:
        if f.endswith("/"):
            (ckpt / f).mkdir()
        else:
            name, text = f.split("=")
            (ckpt / name).write_text(text)
    assert checkpoint_problems(ckpt) == problems


def test_resume_passes_over_an_incomplete_checkpoint_and_says_so(
    base_run: dict[str, Any], tmp_path: Path
) -> None:
    run_dir = _copy_run(base_run, tmp_path / "run")
    (run_dir / "checkpoints" / "checkpoint-17" / "optimizer.safetensors").unlink()
    adapter = run_dir / "checkpoints" / "checkpoint-15" / "adapter_model.safetensors"
    size = adapter.stat().st_size
    _damage(adapter.parent, "cut adapter_model.safetensors")  # 100 bytes short
    result = train(base_run["cfg"], output=run_dir, resume=True, quiet=True)
    assert result is not None
    skipped = [n for n in result.notes if "skipped" in n]
    assert skipped == [
        "checkpoint-17 skipped: optimizer.safetensors missing: resuming from checkpoint-10",
        f"checkpoint-15 skipped: adapter_model.safetensors truncated: {size - 100} bytes, its header says "
        f"{size}: resuming from checkpoint-10",
    ]
    record_notes = json.loads((run_dir / "record.json").read_text())["notes"]
    assert all(n in record_notes for n in skipped)
    # steps 11..17 trained again from checkpoint-10's exact state: the uninterrupted run's result
    original = base_run["result"].metrics
    for k in ("accuracy", "weighted_f1", "macro_f1"):
        assert result.metrics[k] == original[k]
    assert result.metrics["loss"] == pytest.approx(original["loss"], rel=1e-6)
    assert checkpoint_problems(run_dir / "checkpoints" / "checkpoint-17") == []  # saved again, whole


def test_resume_with_no_complete_checkpoint_is_a_clear_error(
    base_run: dict[str, Any], tmp_path: Path
) -> None:
    run_dir = _copy_run(base_run, tmp_path / "run")
    for ckpt in (run_dir / "checkpoints").iterdir():
        (ckpt / "scheduler.json").unlink()
    status = json.loads((run_dir / "status.json").read_text())
    (run_dir / "status.json").write_text(
        json.dumps({**status, "status": "failed", "error": "OSError: disk full"})
    )
    before = snapshot(run_dir)
    with pytest.raises(RunDirRefused) as e:
        train(base_run["cfg"], output=run_dir, resume=True, quiet=True)
    assert e.value.message() == (
        f"--resume has nothing to resume from in {run_dir} (status failed: OSError: disk full; no complete "
        "checkpoint: checkpoint-17 skipped: scheduler.json missing; checkpoint-15 skipped: scheduler.json "
        "missing; checkpoint-10 skipped: scheduler.json missing); start again with --output NEW, or delete "
        f"{run_dir} and run the same command"
    )
    assert snapshot(run_dir) == before


@pytest.fixture(scope="module")
def failed_start(tiny: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A run that really failed in setup, before its first checkpoint."""
    root = tmp_path_factory.mktemp("failed-start")
    cfg = experiment_yaml(root, tiny["model"], tiny["train"], tiny["test"], epochs=1)
    run_dir = root / "run"

    def broken_setup(self: Session) -> None:
        raise RuntimeError("model download interrupted")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Session, "setup", broken_setup)
        with pytest.raises(RuntimeError):
            train(cfg, output=run_dir, quiet=True)
    return {"cfg": cfg, "run": run_dir}


def _as(failed: Path, dest: Path, how: str) -> Path:
    run = Path(shutil.copytree(failed, dest))
    status = json.loads((run / "status.json").read_text())
    if how == "killed while running":
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()  # a process number that has ended, as after kill -9
        ident = {**process_identity(), "pid": dead.pid}  # this machine, a process that is gone
        (run / "status.json").write_text(json.dumps({"status": "running", "time": status["time"], **ident}))
    elif how == "no status.json":
        (run / "status.json").unlink()
    elif how == "only an interrupted checkpoint":
        (run / "checkpoints" / "checkpoint-5").mkdir(parents=True)
        (run / "checkpoints" / "checkpoint-5" / "adapter_config.json").write_text("{}")
    return run


NONE_SAVED = "no complete checkpoint: none was saved"
FAILED_STARTS = [
    ("failed in setup", f"status failed: RuntimeError: model download interrupted; {NONE_SAVED}"),
    ("killed while running", f"status running; {NONE_SAVED}"),
    ("no status.json", f"no status.json; {NONE_SAVED}"),
    ("only an interrupted checkpoint", "checkpoint-5 skipped: no .complete marker: its save was interrupted"),
]


@pytest.mark.parametrize(("how", "says"), FAILED_STARTS, ids=[f[0] for f in FAILED_STARTS])
def test_a_run_that_never_reached_a_checkpoint_says_what_to_do(
    failed_start: dict[str, Path], tmp_path: Path, how: str, says: str
) -> None:
    run = _as(failed_start["run"], tmp_path / "run", how)
    assert not (run / "checkpoints").exists() or how == "only an interrupted checkpoint"
    before = snapshot(run)
    fix = f"start again with --output NEW, or delete {run} and run the same command"
    cfg = str(failed_start["cfg"])
    fresh = _refused_one_line(_cli("train", cfg, "-o", str(run), "--quiet"), says, fix)
    assert fresh.startswith(f"error: {run} holds a run that stopped before its first complete checkpoint (")
    resumed = _refused_one_line(_cli("train", cfg, "-o", str(run), "--resume", "--quiet"), says, fix)
    assert resumed.startswith(f"error: --resume has nothing to resume from in {run} (")
    assert snapshot(run) == before


def test_a_run_still_being_written_is_refused(failed_start: dict[str, Path], tmp_path: Path) -> None:
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run = Path(shutil.copytree(failed_start["run"], tmp_path / "run"))
        started = Path(f"/proc/{live.pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
        ident = {**process_identity(), "pid": live.pid, "started": started}
        (run / "status.json").write_text(json.dumps({"status": "running", "time": "t0", **ident}))
        before = snapshot(run)
        for extra in ([], ["--resume"]):
            result = _cli("train", str(failed_start["cfg"]), "-o", str(run), *extra, "--quiet")
            _refused_one_line(result, f"{run} is in use: loralab process {live.pid} on this machine")
        assert snapshot(run) == before
        # The same number with another start time is another process (the run's ended long ago).
        (run / "status.json").write_text(
            json.dumps({"status": "running", "time": "t0", **ident, "started": "1"})
        )
        result = _cli("train", str(failed_start["cfg"]), "-o", str(run), "--resume", "--quiet")
        _refused_one_line(result, "--resume has nothing to resume from")
    finally:
        live.kill()
        live.wait()
