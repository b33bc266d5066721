"""`loralab plan CONFIG --write-launch DIR`: the files a multi-GPU / multi-node layout needs.

One folder per layout: the DeepSpeed JSON (ZeRO-2, ZeRO-3, with or without CPU offload) or the
accelerate FSDP config, the experiment pointing at it, the launch command lines (`loralab train`
starting torchrun, or `accelerate launch` for FSDP), a Slurm batch script, and a README with the memory
per device recomputed for that layout: the plan a user reads before launching is the one the files
launch.

Every value that transformers' HfTrainerDeepSpeedConfig fills from TrainingArguments is "auto" here
(transformers/integrations/deepspeed.py `trainer_config_process` / `trainer_config_finalize`), so the
experiment's training_args stay the one place batch size, learning rate and precision are set.
"""

from __future__ import annotations

import copy
import io
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from loralab.arch.records import ArchRecord
from loralab.arch.resolve import resolve_model
from loralab.config.models import ExperimentConfig
from loralab.config.resolved import resolved_config
from loralab.errors import ConfigError, Problem
from loralab.plan.estimate.memory import MemoryEstimate, estimate_memory
from loralab.plan.estimate.render_memory import memory_table, verdict_lines
from loralab.plan.estimate.setup import Overrides, resolve_deepspeed, setup_from_config
from loralab.plan.planner import Plan

MASTER_PORT = 29500  # torchrun's and accelerate's default rendezvous port


@dataclass(frozen=True)
class Layout:
    """How the model states are spread: ZeRO stage (None: DDP, no DeepSpeed), CPU offload, FSDP."""

    name: str
    zero_stage: int | None
    offload: bool = False
    fsdp: bool = False
    what: str = ""


LAYOUTS: dict[str, Layout] = {
    lay.name: lay
    for lay in (
        Layout("ddp", None, what="DDP: every GPU holds the whole model and its optimizer state"),
        Layout("zero2", 2, what="DeepSpeed ZeRO-2: optimizer state and gradients sharded"),
        Layout("zero2-offload", 2, offload=True, what="DeepSpeed ZeRO-2, optimizer state offloaded to CPU"),
        Layout("zero3", 3, what="DeepSpeed ZeRO-3: parameters, gradients and optimizer state sharded"),
        Layout(
            "zero3-offload",
            3,
            offload=True,
            what="DeepSpeed ZeRO-3, parameters and optimizer state offloaded to CPU",
        ),
        # FSDP FULL_SHARD shards what ZeRO-3 shards; the estimate models it as ZeRO-3 (no FSDP model).
        Layout("fsdp", 3, fsdp=True, what="FSDP FULL_SHARD through accelerate (estimated as ZeRO-3)"),
    )
}


@dataclass
class LaunchFiles:
    """What `write_launch` wrote: (file, what it is) in writing order, the layout's memory, notes."""

    layout: Layout
    gpus: int  # per node
    nodes: int
    memory: MemoryEstimate
    overrides: Overrides  # the overrides that reproduce `memory` from the written experiment.yaml
    files: list[tuple[Path, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def paths(self) -> list[Path]:
        return [p for p, _ in self.files]


def default_layout(cfg: ExperimentConfig) -> str:
    """The layout the experiment already asks for: its DeepSpeed stage and offload, else DDP."""
    if not cfg.deepspeed:
        return "ddp"
    ds, _ = resolve_deepspeed(cfg.deepspeed)
    zo = ds.get("zero_optimization") or {}
    stage = int(zo.get("stage", 0) or 0)

    def on(key: str) -> bool:
        block = zo.get(key)
        return isinstance(block, dict) and block.get("device") not in (None, "none")

    offload = on("offload_optimizer") or on("offload_param")
    if stage >= 3:
        return "zero3-offload" if offload else "zero3"
    if stage >= 1:  # stage 1 has no layout of its own: ZeRO-2 shards what it shards and the gradients
        return "zero2-offload" if offload else "zero2"
    return "ddp"


def check_layout(layout: str, gpus: int, nodes: int) -> Layout:
    problems = []
    if layout not in LAYOUTS:
        problems.append(
            Problem("--layout", "", f"unknown layout {layout!r}", "use one of: " + ", ".join(LAYOUTS))
        )
    for flag, value in (("--gpus", gpus), ("--nodes", nodes)):
        if value < 1:
            problems.append(Problem(flag, "", f"{value} is out of range", "give 1 or more"))
    if problems:
        raise ConfigError(problems)
    return LAYOUTS[layout]


def deepspeed_config(layout: Layout, training_args: dict[str, Any]) -> dict[str, Any]:
    """The DeepSpeed JSON of a ZeRO layout; "auto" wherever transformers fills the value."""
    assert layout.zero_stage is not None and not layout.fsdp
    zo: dict[str, Any] = {
        "stage": layout.zero_stage,
        "overlap_comm": True,
        "contiguous_gradients": True,
        "reduce_bucket_size": "auto",  # transformers: hidden_size**2
    }
    if layout.zero_stage == 3:
        zo.update(
            {
                "stage3_prefetch_bucket_size": "auto",  # 0.9 * hidden_size**2
                "stage3_param_persistence_threshold": "auto",  # 10 * hidden_size
                # Gathers the sharded weights at save: without it the adapter saved under ZeRO-3 is
                # empty tensors (peft #2892).
                "stage3_gather_16bit_weights_on_model_save": True,
            }
        )
    else:
        zo["allgather_bucket_size"] = 500_000_000  # DeepSpeed's default, written so it can be tuned here
    if layout.offload:
        zo["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if layout.zero_stage == 3:
            zo["offload_param"] = {"device": "cpu", "pin_memory": True}
    ds: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "train_batch_size": "auto",
        "gradient_clipping": "auto",
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto"},
        "zero_optimization": zo,
    }
    if layout.offload:
        # DeepSpeed refuses a client (torch) optimizer with ZeRO-Offload unless told otherwise; its own
        # AdamW here runs as DeepSpeedCPUAdam on the offloaded state. Same fp32 m and v per parameter,
        # so the memory estimate is unchanged; transformers fills the params from training_args.
        ds["optimizer"] = {
            "type": "AdamW",
            "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"},
        }
    return ds


def decoder_layer_class(arch: ArchRecord) -> str | None:
    """The class of the repeated block (what FSDP wraps): read off the arch record's numbered blocks,
    e.g. model.layers.0 -> Qwen3DecoderLayer; no torch, no model build."""
    classes: list[str] = []
    for stack in arch.layers_per_stack:
        m = arch.module(f"{stack}.0")
        if m is not None and m.cls not in classes:
            classes.append(m.cls)
    return ",".join(classes) or None  # accelerate reads a comma-separated list (encoder, decoder)


def mixed_precision(training_args: dict[str, Any]) -> str:
    return "bf16" if training_args.get("bf16") else "fp16" if training_args.get("fp16") else "no"


def accelerate_config(
    layout: Layout, layer_cls: str | None, training_args: dict[str, Any], gpus: int, nodes: int
) -> dict[str, Any]:
    """accelerate's ClusterConfig YAML for FSDP (keys as accelerate 1.x `accelerate config` writes them)."""
    fsdp: dict[str, Any] = {
        "fsdp_version": 1,
        # accelerate 1.x: FSDP1's sharding strategy is written under reshard_after_forward
        # (fsdp_sharding_strategy is deprecated in favour of it).
        "fsdp_reshard_after_forward": "FULL_SHARD",
        # PEFT: frozen base weights and trainable adapters share a wrapped block; FSDP1 needs the
        # original parameters kept to flatten mixed requires_grad.
        "fsdp_use_orig_params": True,
        "fsdp_offload_params": False,
        "fsdp_backward_prefetch": "BACKWARD_PRE",
        "fsdp_forward_prefetch": False,
        # Checkpoints sharded (fast, every rank writes its shard); the final adapter is gathered into a
        # full state dict at save (README.txt).
        "fsdp_state_dict_type": "SHARDED_STATE_DICT",
        "fsdp_cpu_ram_efficient_loading": True,  # rank 0 loads the weights, the others get them by sync
        "fsdp_sync_module_states": True,  # required by cpu_ram_efficient_loading
        "fsdp_activation_checkpointing": False,  # training_args.gradient_checkpointing does it
    }
    if layer_cls:
        fsdp["fsdp_auto_wrap_policy"] = "TRANSFORMER_BASED_WRAP"
        fsdp["fsdp_transformer_layer_cls_to_wrap"] = layer_cls
    else:  # no numbered blocks found: wrap by size instead of not at all
        fsdp["fsdp_auto_wrap_policy"] = "SIZE_BASED_WRAP"
        fsdp["fsdp_min_num_params"] = 100_000_000
    return {
        "compute_environment": "LOCAL_MACHINE",
        "debug": False,
        "distributed_type": "FSDP",
        "downcast_bf16": "no",
        "fsdp_config": fsdp,
        "machine_rank": 0,  # overridden per node by --machine_rank in launch.sh
        "main_process_ip": "MASTER_ADDR",  # placeholder: overridden by --main_process_ip in launch.sh
        "main_process_port": MASTER_PORT,
        "main_training_function": "main",
        "mixed_precision": mixed_precision(training_args),
        "num_machines": nodes,
        "num_processes": gpus * nodes,  # accelerate counts processes over all machines
        "rdzv_backend": "static",
        "same_network": True,
        "use_cpu": False,
    }


def layout_memory(
    cfg: ExperimentConfig, plan: Plan, layout: Layout, *, gpus: int, nodes: int, budget: int | None
) -> tuple[MemoryEstimate, Overrides, list[str]]:
    """The memory estimate for `layout` over gpus*nodes devices, and the overrides that give it from
    the written experiment.yaml (whose deepspeed section is the layout's JSON)."""
    total = gpus * nodes
    lay_cfg = copy.copy(cfg)
    notes: list[str] = []
    if layout.fsdp:
        lay_cfg.deepspeed = None
        ov = Overrides(gpus=total, zero_stage=3)
        notes.append(
            "FSDP is estimated as ZeRO-3: FULL_SHARD shards parameters, gradients and optimizer state "
            "the same way; FSDP's flat-parameter buffers and all-gather prefetch are not modelled"
        )
    elif layout.zero_stage is None:
        lay_cfg.deepspeed = None
        ov = Overrides(gpus=total)
    else:
        lay_cfg.deepspeed = deepspeed_config(layout, cfg.training_args)
        ov = Overrides(gpus=total)
    setup, setup_notes = setup_from_config(lay_cfg, plan.arch, ov)
    m = cfg.model
    hf_cfg = resolve_model(m.name_or_path, revision=m.revision, trust_remote_code=m.trust_remote_code).config
    memory = estimate_memory(plan, hf_cfg, setup, budget=budget)
    memory.notes[:0] = setup_notes + notes
    return memory, ov, notes


def experiment_dict(cfg: ExperimentConfig, layout: Layout) -> dict[str, Any]:
    """The experiment as `train` will read it from the launch folder: resolved (absolute data paths,
    PEFT's LoRA config), its deepspeed pointing at the folder's JSON (or dropped for DDP / FSDP)."""
    raw = resolved_config(cfg)
    raw.pop("deepspeed", None)
    if layout.zero_stage is not None and not layout.fsdp:
        raw["deepspeed"] = "deepspeed.json"  # relative to the YAML's folder (the loader's rule)
    return raw


def launch_lines(layout: Layout, gpus: int, nodes: int) -> list[str]:
    """The command each node runs (NODE_RANK, MASTER_ADDR, RUN_DIR from the environment)."""
    here = 'cd "$(dirname "$0")"'
    if layout.fsdp:
        return [
            here,
            f"# loralab starts accelerate launch: {gpus} processes on this node ({gpus * nodes} in all),",
            "# its flags replacing the file's process layout. The same as",
            f"#   accelerate launch --config_file accelerate_config.yaml --num_machines {nodes} "
            f"--num_processes {gpus * nodes} --machine_rank $NODE_RANK --main_process_ip $MASTER_ADDR "
            f"--main_process_port {MASTER_PORT} -m loralab train experiment.yaml --output $RUN_DIR",
            "loralab train experiment.yaml \\",
            "  --launcher accelerate --accelerate-config accelerate_config.yaml \\",
            f'  -n {gpus} --nnodes {nodes} --node-rank "$NODE_RANK" --master-addr "$MASTER_ADDR" \\',
            f'  --master-port {MASTER_PORT} --output "$RUN_DIR"',
        ]
    return [
        here,
        f"# loralab starts torchrun: {gpus} processes on this node, {nodes} node(s). The same as",
        f"#   torchrun --nnodes {nodes} --node_rank $NODE_RANK --master_addr $MASTER_ADDR "
        f"--master_port {MASTER_PORT} --nproc_per_node {gpus} -m loralab train experiment.yaml "
        "--output $RUN_DIR",
        f'loralab train experiment.yaml -n {gpus} --nnodes {nodes} --node-rank "$NODE_RANK" \\',
        f'  --master-addr "$MASTER_ADDR" --master-port {MASTER_PORT} --output "$RUN_DIR"',
    ]


def launch_sh(layout: Layout, gpus: int, nodes: int) -> str:
    lines = [
        "#!/usr/bin/env bash",
        f"# {layout.name}: {layout.what}. Run on every node, with",
        "#   NODE_RANK    0 on the first node, up to nodes-1",
        "#   MASTER_ADDR  the first node's address (every node the same)",
        "#   RUN_DIR      the run folder, on a filesystem every node sees",
        "set -euo pipefail",
        ': "${NODE_RANK:?set NODE_RANK (0 .. nodes-1)}"',
        ': "${MASTER_ADDR:?set MASTER_ADDR to the address of the first node}"',
        ': "${RUN_DIR:?set RUN_DIR to a folder every node sees}"',
        *launch_lines(layout, gpus, nodes),
    ]
    return "\n".join(lines) + "\n"


def slurm_sbatch(layout: Layout, gpus: int, nodes: int, name: str) -> str:
    # loralab train reads SLURM_NNODES / SLURM_NODEID / the first host of SLURM_JOB_NODELIST itself,
    # for accelerate as for torchrun.
    engine = "--launcher accelerate --accelerate-config accelerate_config.yaml " if layout.fsdp else ""
    cmd = f'srun loralab train experiment.yaml {engine}-n {gpus} --output "$RUN_DIR"'
    lines = [
        "#!/usr/bin/env bash",
        f"#SBATCH --job-name={shlex.quote(name)}",
        f"#SBATCH --nodes={nodes}",
        "#SBATCH --ntasks-per-node=1  # one launcher per node; it starts the per-GPU processes",
        f"#SBATCH --gpus-per-node={gpus}",
        "#SBATCH --exclusive",
        "set -euo pipefail",
        'cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")}"',
        ': "${RUN_DIR:?export RUN_DIR (a folder every node sees) before sbatch}"',
        cmd,
    ]
    return "\n".join(lines) + "\n"


def readme(result: LaunchFiles, layer_cls: str | None) -> str:
    lay, mem = result.layout, result.memory
    console = Console(width=110, record=True, file=io.StringIO(), color_system=None)
    console.print(memory_table(mem))
    for line in verdict_lines(mem):
        console.print(line)
    table = console.export_text()
    total = mem.per_device["total"]
    lines = [
        f"Launch files for layout {lay.name}: {lay.what}.",
        f"{result.nodes} node(s) x {result.gpus} GPU(s) = {result.nodes * result.gpus} processes.",
        "",
        "Files:",
        *[f"  {p.name}: {what}" for p, what in result.files],
        "",
        f"Memory per device for this layout: {total:,} bytes ({total / 2**30:.2f} GiB)",
        f"(`loralab plan experiment.yaml --gpus {result.nodes * result.gpus}"
        + (" --zero-stage 3" if lay.fsdp else "")
        + "` gives the same figures)",
        "",
        table.rstrip(),
    ]
    if mem.notes:
        lines += ["", *[f"note: {n}" for n in mem.notes]]
    if lay.fsdp:
        lines += [
            "",
            "FSDP and the adapter: checkpoints during training are SHARDED_STATE_DICT (each rank writes",
            "its shard, no gather on every save); for the final adapter loralab switches to",
            "FULL_STATE_DICT and saves through the Trainer on every rank (a sharded save writes nothing;",
            "accelerate #3508), then re-reads the file against the plan (peft #2892).",
            f"Wrapped block: {layer_cls or 'none found; wrapping by size (100M parameters)'}.",
        ]
    if lay.zero_stage == 3 and not lay.fsdp:
        lines += [
            "",
            "ZeRO-3: stage3_gather_16bit_weights_on_model_save is on, so the saved adapter is whole",
            "(without it PEFT saves empty tensors: peft #2892).",
        ]
    return "\n".join(lines) + "\n"


def write_launch(
    cfg: ExperimentConfig,
    plan: Plan,
    memory: MemoryEstimate,
    out_dir: Path,
    *,
    gpus: int,
    nodes: int,
    layout: str | None = None,
) -> LaunchFiles:
    """Write the launch files of `layout` (default: the config's own, see `default_layout`) for
    `nodes` machines of `gpus` GPUs each into `out_dir`. `memory` is the plan's estimate for the config
    as written; its budget is kept for the layout's recomputed estimate."""
    lay = check_layout(layout or default_layout(cfg), gpus, nodes)
    mem, ov, notes = layout_memory(cfg, plan, lay, gpus=gpus, nodes=nodes, budget=memory.budget)
    result = LaunchFiles(layout=lay, gpus=gpus, nodes=nodes, memory=mem, overrides=ov, notes=notes)
    out_dir.mkdir(parents=True, exist_ok=True)

    def put(name: str, text: str, what: str, *, executable: bool = False) -> None:
        path = out_dir / name
        path.write_text(text, encoding="utf-8")
        if executable:
            path.chmod(0o755)
        result.files.append((path, what))

    layer_cls = decoder_layer_class(plan.arch)
    if lay.fsdp:
        acc = accelerate_config(lay, layer_cls, cfg.training_args, gpus, nodes)
        put(
            "accelerate_config.yaml",
            yaml.safe_dump(acc, sort_keys=False),
            f"accelerate FSDP config (FULL_SHARD, wrap {layer_cls or 'by size'}, use_orig_params)",
        )
    elif lay.zero_stage is not None:
        ds = deepspeed_config(lay, cfg.training_args)
        put(
            "deepspeed.json",
            json.dumps(ds, indent=2) + "\n",
            f"DeepSpeed config (ZeRO-{lay.zero_stage}" + (", CPU offload)" if lay.offload else ")"),
        )
    exp = experiment_dict(cfg, lay)
    header = f"# {lay.name} launch of {cfg.source} (written by loralab plan --write-launch)\n"
    put(
        "experiment.yaml", header + yaml.safe_dump(exp, allow_unicode=True, sort_keys=False), "the experiment"
    )
    put("launch.sh", launch_sh(lay, gpus, nodes), "command line per node", executable=True)
    name = str(((cfg.raw.get("tracking") or {}).get("run_name")) or lay.name)
    put("slurm.sbatch", slurm_sbatch(lay, gpus, nodes, name), "Slurm batch script")
    result.files.append((out_dir / "README.txt", "memory per device for this layout"))
    (out_dir / "README.txt").write_text(readme(result, layer_cls), encoding="utf-8")
    return result


def launch_json(result: LaunchFiles) -> dict[str, Any]:
    """The `launch` entry of `plan --json` and `recommend --json`."""
    return {
        "layout": result.layout.name,
        "gpus_per_node": result.gpus,
        "nodes": result.nodes,
        "files": [str(p) for p in result.paths],
        "memory": result.memory.to_json(),
    }


def print_launch(result: LaunchFiles, out: Console) -> None:
    """What `loralab plan --write-launch` prints: the files, then the layout's memory beside them."""
    lay = result.layout
    out.print(
        f"[bold]launch files[/] ({lay.name}: {lay.what}; {result.nodes} node(s) x {result.gpus} GPU(s))"
    )
    for path, what in result.files:
        out.print(f"  {path}  [dim]{what}[/]")
    out.print(memory_table(result.memory))
    for line in verdict_lines(result.memory):
        out.print(line)
    for n in result.notes:
        out.print(f"[dim]note: {n}[/]")


__all__ = [
    "LAYOUTS",
    "LaunchFiles",
    "Layout",
    "deepspeed_config",
    "default_layout",
    "launch_json",
    "layout_memory",
    "print_launch",
    "write_launch",
]
