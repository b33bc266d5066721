"""Data-parallel training on CPU: two processes (gloo) reach the same result as one process that
takes the same global batch (2 x 8 vs 1 x 16) for the same number of optimizer steps: as two "nodes"
started by accelerate, and as two torchrun "nodes" (--nnodes 2, their own --node-rank) of which one
is killed mid-run and both resumed. (`-n 2` on one machine, torchrun without --nnodes, runs in
test_deepspeed_cpu.py and the command lines in test_launch.py.)"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from train_fixtures import experiment_yaml, make_data, tiny_bert

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _cmd(cfg: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "loralab", "train", str(cfg), "--output", str(out), "--quiet", *extra]


def _check(p: subprocess.CompletedProcess[str] | tuple[int, str], out: Path) -> dict[str, float]:
    code, err = (p.returncode, p.stderr) if isinstance(p, subprocess.CompletedProcess) else p
    if code != 0:
        (out.parent / "stderr.txt").write_text(err)
    assert code == 0, "\n".join(line for line in err.splitlines() if "samples/s" not in line)[-3000:]
    return json.loads((out / "metrics.json").read_text())  # type: ignore[no-any-return]


def _train(cfg: Path, out: Path, *extra: str) -> dict[str, float]:
    p = subprocess.run(
        _cmd(cfg, out, *extra), capture_output=True, text=True, env=ENV, timeout=600, check=False
    )
    return _check(p, out)


def _steps(run: Path) -> int:
    return max(json.loads(x)["step"] for x in (run / "train_log.jsonl").read_text().splitlines())


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, dict[str, float]]:
    """One process taking the global batch of 16; the model and data the two-process runs share."""
    tmp = tmp_path_factory.mktemp("ddp")
    model = tiny_bert(tmp / "model")
    train_csv, test_csv = make_data(tmp / "data")
    one_dir = tmp / "one"
    one_dir.mkdir()
    one = experiment_yaml(one_dir, model, train_csv, test_csv)
    one.write_text(
        one.read_text().replace("per_device_train_batch_size: 8", "per_device_train_batch_size: 16")
    )
    return model, train_csv, test_csv, _train(one, one_dir / "run") | {"steps": _steps(one_dir / "run")}


def _assert_like_single(metrics: dict[str, float], run: Path, single: dict[str, float]) -> None:
    # 16 examples per optimizer step in both runs; only an epoch's last, short batch is split
    # differently (accelerate evens out the shards), so the step counts differ by < 1 per epoch.
    assert abs(_steps(run) - single["steps"]) < 8
    for k in ("accuracy", "weighted_f1", "macro_f1"):
        assert metrics[k] == pytest.approx(single[k], abs=0.12), k  # 45 test rows: within ~5 rows
    assert metrics["accuracy"] > 0.75 and single["accuracy"] > 0.75


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_nodes(cfg: Path, run: Path, *extra: str, port: str | None = None) -> list[subprocess.Popen[str]]:
    """Node 0 and node 1 of a two-node run: one launcher each, one process per node, static rendezvous
    on node 0's address. Each node is its own process group, so a test can kill one node whole."""
    port = port or str(_free_port())
    nodes = ("--nnodes", "2", "--master-addr", "127.0.0.1", "--master-port", port, "-n", "1")
    return [
        subprocess.Popen(
            _cmd(cfg, run, *nodes, "--node-rank", str(r), *extra),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
            start_new_session=True,
        )
        for r in (0, 1)
    ]


def _finish(nodes: list[subprocess.Popen[str]], run: Path) -> dict[str, float]:
    results = [(p.wait(timeout=600), p.stderr.read() if p.stderr else "") for p in nodes]
    assert results[1][0] == 0, results[1][1][-3000:]
    return _check(results[0], run)


def test_two_nodes_through_accelerate(
    tmp_path: Path, single: tuple[Path, Path, Path, dict[str, float]]
) -> None:
    """The same two nodes started by `accelerate launch` with the shipped two-node accelerate config;
    loralab's flags replace its process layout (2 x 1 processes on 127.0.0.1 instead of 2 x 8)."""
    model, train_csv, test_csv, one = single
    cfg = experiment_yaml(tmp_path, model, train_csv, test_csv)
    run = tmp_path / "run"
    example = Path(__file__).resolve().parents[2] / "examples" / "accelerate" / "two-nodes.yaml"
    nodes = _start_nodes(cfg, run, "--launcher", "accelerate", "--accelerate-config", str(example))
    _assert_like_single(_finish(nodes, run), run, one)


def _kill_tree(pid: int) -> None:
    import psutil

    root = psutil.Process(pid)
    for p in [*root.children(recursive=True), root]:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()


def test_kill_one_node_then_resume_both(
    tmp_path: Path, single: tuple[Path, Path, Path, dict[str, float]]
) -> None:
    """Two torchrun agents on this machine as node 0 and node 1 of a two-node run (global rank 0, on
    node 0, writes the run directory). Node 1 is killed (launcher and worker, SIGKILL) once a second
    checkpoint is complete; node 0 fails on the lost peer and keeps what it wrote; both nodes
    restarted with --resume continue from the last complete checkpoint and end like one process that
    takes the same global batch."""
    import time

    from loralab.train.rundir import complete_checkpoints

    model, train_csv, test_csv, one = single
    cfg = experiment_yaml(tmp_path, model, train_csv, test_csv)
    run = tmp_path / "run"
    nodes = _start_nodes(cfg, run)
    deadline = time.monotonic() + 300
    while not [c for c in complete_checkpoints(run / "checkpoints") if c.name != "checkpoint-5"]:
        assert time.monotonic() < deadline and nodes[0].poll() is None, "no second checkpoint"
        time.sleep(0.2)
    _kill_tree(nodes[1].pid)  # torchrun starts its workers in sessions of their own
    try:
        code0 = nodes[0].wait(timeout=180)  # gloo sees the closed connection
    except subprocess.TimeoutExpired:
        _kill_tree(nodes[0].pid)
        code0 = nodes[0].wait()
    nodes[1].wait()
    assert code0 != 0
    assert not (run / "metrics.json").exists()
    assert json.loads((run / "status.json").read_text())["status"] in ("failed", "running")
    last = complete_checkpoints(run / "checkpoints")[-1]
    resumed = _start_nodes(cfg, run, "--resume")
    metrics = _finish(resumed, run)
    _assert_like_single(metrics, run, one)
    assert json.loads((run / "status.json").read_text())["status"] == "completed"
    notes = json.loads((run / "record.json").read_text())["notes"]
    assert f"resumed from {last.name}" in notes
    assert "all 2 processes load the same config and data (sha256)" in notes  # checked across nodes


def test_multi_node_needs_an_output_and_a_master(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from loralab.cli import app
    from loralab.train.launch import node_layout

    cfg = experiment_yaml(tmp_path, tmp_path / "m", tmp_path / "t.csv", tmp_path / "s.csv")
    res = CliRunner().invoke(
        app, ["train", str(cfg), "--nnodes", "2", "--node-rank", "0", "--master-addr", "h"]
    )
    assert res.exit_code != 0 and "--output" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(
        app, ["train", str(cfg), "--nnodes", "2", "--node-rank", "2", "--master-addr", "h"]
    )
    assert res.exit_code != 0 and "--node-rank 2 is out of range" in res.output
    res = CliRunner().invoke(app, ["train", str(cfg), "--launcher", "mpirun"])
    assert res.exit_code == 2 and "use torchrun or accelerate" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(app, ["train", str(cfg), "--accelerate-config", str(cfg)])
    assert res.exit_code == 2 and "add --launcher accelerate" in res.output
    # Slurm: the node count and rank from the job, node 0's address from its node list
    slurm = {
        "SLURM_JOB_ID": "7",
        "SLURM_NNODES": "4",
        "SLURM_NODEID": "3",
        "SLURM_JOB_NODELIST": "gpu[03-06]",
    }
    layout = node_layout(None, None, None, None, slurm)
    assert (layout.nnodes, layout.node_rank, layout.master_addr, layout.master_port) == (4, 3, "gpu03", 29500)
    assert layout.source == "slurm"
