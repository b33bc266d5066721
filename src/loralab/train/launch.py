"""Starting `loralab train` in several processes: torchrun (the default) or `accelerate launch`, on one
machine or as one node of several. loralab has no launcher of its own: it builds the engine's command
line, runs it, and every process it starts is an ordinary `loralab train` (the HF Trainer reads the
distributed setup from the launcher's environment, and DeepSpeed from the experiment's config).

Where the layout comes from, first found wins: the command-line flags; under Slurm (SLURM_JOB_ID set)
the job's node count, this node's rank and its first host as node 0; with `--launcher accelerate` the
accelerate config file's num_machines / machine_rank / main_process_ip / main_process_port /
num_processes; else MASTER_ADDR / MASTER_PORT; else one node.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from loralab.config import load_experiment
from loralab.errors import LoralabError
from loralab.train.rundir import RunDirRefused, check_run_dir, free_port, new_run_dir

TORCHRUN_PORT = 29500  # torchrun's own default master port (accelerate's too)


class LaunchError(LoralabError):
    """The launcher or its config cannot start this run."""


@dataclass
class NodeLayout:
    """Where this machine sits in a multi-node run (one launcher per node)."""

    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int | None = None  # None on one node: a free port is picked
    source: str = "flags"


def first_slurm_host(nodelist: str) -> str:
    """The first host of a Slurm node list ("gpu[03-04,07],cpu1" -> "gpu03"), as `scontrol show
    hostnames` would list it first: node 0 of the job, where rank 0 runs."""
    first = re.split(r",(?![^\[]*\])", nodelist.strip())[0]
    m = re.fullmatch(r"([^\[]*)\[([^\],-]+)[^\]]*\]", first)
    return m.group(1) + m.group(2) if m else first


def in_slurm(env: Mapping[str, str]) -> bool:
    return "SLURM_JOB_ID" in env and env.get("SLURM_NNODES", "").isdigit()


def node_layout(
    nnodes: int | None,
    node_rank: int | None,
    master_addr: str | None,
    master_port: int | None,
    env: Mapping[str, str] | None = None,
) -> NodeLayout:
    """The flags, else Slurm's environment (SLURM_NNODES, SLURM_NODEID, the job's first host), else
    MASTER_ADDR / MASTER_PORT, else one node. Refuses a layout torchrun would hang on."""
    env = os.environ if env is None else env
    slurm = in_slurm(env)
    n = nnodes if nnodes is not None else int(env["SLURM_NNODES"]) if slurm else 1
    r = node_rank if node_rank is not None else int(env.get("SLURM_NODEID", "0") or 0) if slurm else 0
    addr = master_addr or env.get("MASTER_ADDR")
    if addr is None and slurm and env.get("SLURM_JOB_NODELIST"):
        addr = first_slurm_host(env["SLURM_JOB_NODELIST"])
    port = master_port or (int(env["MASTER_PORT"]) if env.get("MASTER_PORT", "").isdigit() else None)
    if n > 1 and not addr:
        raise RunDirRefused(f"--nnodes {n}: give --master-addr HOST (the address of node 0)")
    if not 0 <= r < n:
        raise RunDirRefused(f"--node-rank {r} is out of range for --nnodes {n}: give 0 to {n - 1}")
    source = "slurm" if slurm and (nnodes is None or node_rank is None) else "flags"
    return NodeLayout(n, r, addr or "127.0.0.1", port if n == 1 else port or TORCHRUN_PORT, source)


# ---- accelerate ----------------------------------------------------------------------------------


def read_accelerate_config(path: Path) -> dict[str, Any]:
    """accelerate's config file (YAML or JSON, as `accelerate config` writes it), read safely."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise LaunchError(f"--accelerate-config {path}: cannot be read ({e.strerror or e})") from e
    except yaml.YAMLError as e:
        raise LaunchError(f"--accelerate-config {path}: not YAML or JSON ({str(e).splitlines()[0]})") from e
    if not isinstance(data, dict):
        raise LaunchError(f"--accelerate-config {path}: expected a mapping of accelerate settings")
    return data


def _int_key(data: Mapping[str, Any], key: str, path: Path) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise LaunchError(f"--accelerate-config {path}: {key} must be a whole number, got {value!r}")
    return value


@dataclass
class AccelerateLayout:
    node: NodeLayout
    per_node: int
    config_file: Path  # the user's file, or a minimal one written for this launch
    written: bool = False  # config_file is loralab's temporary one (removed after the launch)


def accelerate_layout(
    config_file: Path | None,
    per_node: int | None,
    nnodes: int | None,
    node_rank: int | None,
    master_addr: str | None,
    master_port: int | None,
    env: Mapping[str, str] | None = None,
) -> AccelerateLayout:
    """Flags first, then Slurm, then the accelerate config file's process layout. The file is shared by
    every node, so its machine_rank is only a default (accelerate's own flags override it the same way)."""
    env = os.environ if env is None else env
    data = read_accelerate_config(config_file) if config_file is not None else {}
    src = config_file or Path("accelerate")
    machines = _int_key(data, "num_machines", src)
    total = _int_key(data, "num_processes", src)
    if not in_slurm(env):
        nnodes = nnodes if nnodes is not None else machines
        node_rank = node_rank if node_rank is not None else _int_key(data, "machine_rank", src)
        if master_addr is None and data.get("main_process_ip") not in (None, "", "MASTER_ADDR"):
            master_addr = str(data["main_process_ip"])
    master_port = master_port if master_port is not None else _int_key(data, "main_process_port", src)
    node = node_layout(nnodes, node_rank, master_addr, master_port, env)
    if per_node is None:
        # accelerate's num_processes counts every machine's processes
        per_node = max(1, total // max(1, machines or node.nnodes)) if total else 1
    if config_file is None:
        return AccelerateLayout(node, per_node, _minimal_accelerate_config(node, per_node), written=True)
    return AccelerateLayout(node, per_node, config_file)


def _minimal_accelerate_config(node: NodeLayout, per_node: int) -> Path:
    """Plain data parallelism, for `--launcher accelerate` without a config file: written explicitly so
    that a default_config.yaml in ~/.cache/huggingface/accelerate cannot change the run."""
    data = {
        "compute_environment": "LOCAL_MACHINE",
        "distributed_type": "MULTI_GPU" if per_node * node.nnodes > 1 else "NO",
        "mixed_precision": "no",  # the Trainer sets it from training_args (bf16 / fp16)
        "num_machines": node.nnodes,
        "num_processes": per_node * node.nnodes,
        "machine_rank": node.node_rank,
        "rdzv_backend": "static",
        "same_network": True,
        "use_cpu": False,
    }
    fd, name = tempfile.mkstemp(prefix="loralab-accelerate-", suffix=".yaml")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        yaml.safe_dump(data, f, sort_keys=False)
    return Path(name)


def accelerate_command(lay: AccelerateLayout, port: int) -> list[str]:
    """`accelerate launch` with the whole process layout spelled out (it overrides the file's)."""
    node = lay.node
    return [
        *(sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(lay.config_file)),
        *("--num_processes", str(lay.per_node * node.nnodes), "--num_machines", str(node.nnodes)),
        *("--machine_rank", str(node.node_rank), "--main_process_ip", node.master_addr),
        *("--main_process_port", str(port), "-m"),
    ]


def torchrun_command(node: NodeLayout, per_node: int, port: int) -> list[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(per_node)]
    if node.nnodes > 1:
        cmd += ["--nnodes", str(node.nnodes), "--node_rank", str(node.node_rank)]
    return [*cmd, "--master_addr", node.master_addr, "--master_port", str(port), "-m"]


@dataclass
class Launch:
    """How `loralab train` starts its processes: torchrun or accelerate, per_node on each node."""

    node: NodeLayout
    per_node: int
    accelerate: AccelerateLayout | None = None


def plan_launch(
    launcher: str,
    accelerate_config: Path | None,
    per_node: int | None,
    nnodes: int | None,
    node_rank: int | None,
    master_addr: str | None,
    master_port: int | None,
    env: Mapping[str, str] | None = None,
) -> Launch | None:
    """The launch to make, or None to train in this process: one process on one node without
    accelerate, or this process is already one of a launcher's workers (LOCAL_RANK is set by torchrun
    and accelerate; under Slurm the job's SLURM_NNODES would otherwise start a launcher per worker)."""
    env = os.environ if env is None else env
    if "LOCAL_RANK" in env:
        return None
    spread = (per_node, nnodes, node_rank, master_addr, master_port)
    if launcher == "accelerate":
        acc = accelerate_layout(accelerate_config, *spread, env=env)
        return Launch(acc.node, acc.per_node, acc)
    node = node_layout(nnodes, node_rank, master_addr, master_port, env)
    if (per_node or 1) == 1 and node.nnodes == 1:
        return None
    return Launch(node, per_node or 1)


# ---- the launch ----------------------------------------------------------------------------------


def launch_distributed(
    config: Path,
    *,
    output: Path | None,
    resume: bool,
    quiet: bool,
    prefix_cache: str | None = None,
    prefix_cache_dir: Path | None = None,
    fmt: str | None = None,
    launch: Launch,
) -> int:
    """Run `loralab train` in `launch.per_node` processes per node (DDP: gloo on CPU, NCCL on GPUs) with
    torchrun, or with `accelerate launch` when `launch.accelerate` is given (its config file then chooses the
    engine: DDP, DeepSpeed or FSDP).

    The run directory is fixed here so that every rank uses the same one; across nodes it must be given
    (--output) and sit on a filesystem every node sees, as the Trainer's checkpoints and resume need.
    A static rendezvous on node 0's address keeps global rank 0, the one process that writes the run
    directory, on node 0.
    """
    node, accelerate = launch.node, launch.accelerate
    cfg = load_experiment(config, fmt=fmt)
    if resume and output is None:
        raise RunDirRefused("--resume continues the run in --output: give --output RUN_DIR")
    if node.nnodes > 1 and output is None:
        raise RunDirRefused(
            f"--nnodes {node.nnodes}: give --output RUN_DIR on a filesystem every node sees (each node "
            "would otherwise name its own folder)"
        )
    run_dir = new_run_dir(cfg, output)
    if node.node_rank == 0:
        # The folder checks, here too: a refusal is one line from this process, not one per worker;
        # the other nodes would see node 0's fresh run in a shared folder.
        check_run_dir(run_dir, resume=resume)
    port = node.master_port or free_port()
    cmd = (
        accelerate_command(accelerate, port) if accelerate else torchrun_command(node, launch.per_node, port)
    )
    cmd += ["loralab", "train", str(config), "--output", str(run_dir)]
    cmd += ["--resume"] * resume + ["--quiet"] * quiet
    cmd += ["--prefix-cache", prefix_cache] if prefix_cache else []
    cmd += ["--prefix-cache-dir", str(prefix_cache_dir)] if prefix_cache_dir else []
    cmd += ["--format", fmt] if fmt else []
    try:
        return subprocess.call(cmd)
    finally:
        if accelerate is not None and accelerate.written:
            accelerate.config_file.unlink(missing_ok=True)
