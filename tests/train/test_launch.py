"""How `loralab train` starts its processes: flags > Slurm > the accelerate config file > defaults, and
the torchrun / accelerate command lines that come out (no process is started here)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from loralab.train.launch import LaunchError, accelerate_command, plan_launch, torchrun_command

ROOT = Path(__file__).resolve().parents[2]
TWO_NODES = ROOT / "examples" / "accelerate" / "two-nodes.yaml"
SLURM = {"SLURM_JOB_ID": "7", "SLURM_NNODES": "2", "SLURM_NODEID": "1", "SLURM_JOB_NODELIST": "gpu[03-04]"}


def test_one_process_trains_in_process_and_workers_never_relaunch() -> None:
    assert plan_launch("torchrun", None, None, None, None, None, None, env={}) is None
    assert plan_launch("torchrun", None, 1, None, None, None, None, env={}) is None
    two = plan_launch("torchrun", None, 2, None, None, None, None, env={})
    assert two is not None and (two.per_node, two.node.nnodes, two.accelerate) == (2, 1, None)
    # Under Slurm a worker sees SLURM_NNODES=2 too: LOCAL_RANK (set by torchrun and accelerate) says
    # it is already a launched process, so it trains instead of starting a launcher of its own.
    assert plan_launch("torchrun", None, 4, None, None, None, None, env={**SLURM, "LOCAL_RANK": "3"}) is None
    node = plan_launch("torchrun", None, 4, None, None, None, None, env=SLURM)
    assert node is not None and (node.node.nnodes, node.node.node_rank, node.node.master_addr) == (
        2,
        1,
        "gpu03",
    )


def test_accelerate_file_fills_what_the_flags_leave_open() -> None:
    from_file = plan_launch("accelerate", TWO_NODES, None, None, 1, None, None, env={})
    assert from_file is not None and from_file.accelerate is not None
    # num_processes 16 counts both machines: 8 per node; the rank is the flag's, the rest the file's
    assert from_file.per_node == 16 // 2
    n = from_file.node
    assert (n.nnodes, n.node_rank, n.master_addr, n.master_port) == (2, 1, "10.0.0.1", 29500)
    flags = plan_launch("accelerate", TWO_NODES, 1, None, 0, "127.0.0.1", 29999, env={})
    assert flags is not None and flags.accelerate is not None
    cmd = accelerate_command(flags.accelerate, 29999)
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"] and cmd[-1] == "-m"
    flat = " ".join(cmd)
    assert "--num_processes 2 --num_machines 2 --machine_rank 0 --main_process_ip 127.0.0.1" in flat
    assert f"--config_file {TWO_NODES}" in flat
    # Slurm's rank wins over the file's machine_rank (one file is shared by every node)
    slurm = plan_launch("accelerate", TWO_NODES, None, None, None, None, None, env=SLURM)
    assert slurm is not None and (slurm.node.node_rank, slurm.node.master_addr) == (1, "gpu03")


def test_accelerate_without_a_file_gets_an_explicit_minimal_one(tmp_path: Path) -> None:
    launch = plan_launch("accelerate", None, 2, None, None, None, None, env={})
    assert launch is not None and launch.accelerate is not None and launch.accelerate.written
    written = yaml.safe_load(launch.accelerate.config_file.read_text())
    launch.accelerate.config_file.unlink()
    # a default_config.yaml in the user's cache cannot change the run: every value is spelled out
    assert (written["distributed_type"], written["num_processes"], written["num_machines"]) == (
        "MULTI_GPU",
        2,
        1,
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("num_machines: two\n", "num_machines must be a whole number, got 'two'"),
        ("- a list\n", "expected a mapping"),
        ("a: [unclosed\n", "not YAML or JSON"),
    ],
)
def test_bad_accelerate_config_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    bad = tmp_path / "acc.yaml"
    bad.write_text(text)
    with pytest.raises(LaunchError, match=message) as e:
        plan_launch("accelerate", bad, None, None, None, None, None, env={})
    assert str(bad) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(LaunchError, match="cannot be read"):
        plan_launch("accelerate", tmp_path / "missing.yaml", None, None, None, None, None, env={})


def test_torchrun_command_across_nodes() -> None:
    launch = plan_launch("torchrun", None, 8, 2, 1, "10.0.0.1", None, env={})
    assert launch is not None
    cmd = " ".join(torchrun_command(launch.node, launch.per_node, 29500))
    assert "--nproc_per_node 8 --nnodes 2 --node_rank 1 --master_addr 10.0.0.1 --master_port 29500 -m" in cmd
