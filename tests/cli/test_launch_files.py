"""`loralab plan --write-launch`: the files for a ZeRO-2, a ZeRO-3-offload and an FSDP layout of the
Qwen3-8B seed 000 experiment (2 nodes x 8 GPUs) parse, are accepted by transformers' DeepSpeed config
handling and accelerate's config loader, and plan reads them back to the same memory figures."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from loralab.commands.launch import LaunchFiles, default_layout, write_launch
from loralab.commands.plan import PlanExtras, plan_extras
from loralab.config import load_experiment
from loralab.plan.experiment import plan_experiment

ROOT = Path(__file__).resolve().parents[2]
SEED000 = ROOT / "examples" / "seed000-qwen3-8b-phase1-attention.yaml"
GPUS, NODES = 8, 2


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, LaunchFiles]:
    """The three layouts written once (planning Qwen3-8B takes seconds)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the bundled config: no hub call
    cfg = load_experiment(SEED000)
    plan = plan_experiment(cfg, with_options=False)
    memory, _, _ = plan_extras(cfg, plan, PlanExtras(), SEED000)
    base = tmp_path_factory.mktemp("launch")
    return {
        lay: write_launch(cfg, plan, memory, base / lay, gpus=GPUS, nodes=NODES, layout=lay)
        for lay in ("zero2", "zero3-offload", "fsdp")
    }


def test_default_layout_is_the_configs_own() -> None:
    assert default_layout(load_experiment(SEED000)) == "zero2"  # seed000-zero2.json: stage 2, no offload


def filled_by_transformers(path: Path) -> dict[str, Any]:
    """The DeepSpeed config as transformers' Trainer completes it.

    TrainingArguments(deepspeed=...) needs the deepspeed package installed (scripts/test.sh installs
    it; it is not a loralab dependency): where it is, TrainingArguments itself reads and checks the
    file, and the model-dependent keys are filled as the Trainer fills them at the start of training.
    Otherwise transformers' own HfTrainerDeepSpeedConfig runs on it, built past its
    `dep_version_check("deepspeed")` on accelerate's base class: the same fill of every "auto" from
    TrainingArguments (trainer_config_process) and from the model (trainer_config_finalize), and the
    same mismatch check. Without deepspeed transformers' class derives from `object`, so accelerate's
    HfDeepSpeedConfig (which transformers' derives from when deepspeed is there) is mixed back in."""
    from transformers import TrainingArguments

    targs = dict(per_device_train_batch_size=8, gradient_accumulation_steps=8, bf16=True, use_cpu=True)
    model = SimpleNamespace(config=SimpleNamespace(hidden_size=4096))  # Qwen3-8B's hidden size
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        pass
    else:
        args = TrainingArguments(output_dir=str(path.parent / "out"), deepspeed=str(path), **targs)
        args.hf_deepspeed_config.trainer_config_finalize(args, model, num_training_steps=1000)
        return dict(args.hf_deepspeed_config.config)
    from accelerate.utils.deepspeed import HfDeepSpeedConfig as AccelerateDeepSpeedConfig
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    class Filler(HfTrainerDeepSpeedConfig, AccelerateDeepSpeedConfig):  # type: ignore[misc]
        pass

    ds = Filler.__new__(Filler)
    AccelerateDeepSpeedConfig.__init__(ds, str(path))  # past transformers' dep_version_check
    ds._dtype, ds.mismatches = None, []
    args = TrainingArguments(output_dir=str(path.parent / "out"), **targs)
    ds.trainer_config_process(args)
    ds.trainer_config_finalize(args, model, num_training_steps=1000)
    return dict(ds.config)


@pytest.mark.parametrize("layout,stage,offload", [("zero2", 2, False), ("zero3-offload", 3, True)])
def test_deepspeed_json_is_accepted_and_fully_filled(
    written: dict[str, LaunchFiles], layout: str, stage: int, offload: bool
) -> None:
    path = written[layout].paths[0]
    assert path.name == "deepspeed.json"
    raw = json.loads(path.read_text())
    zo = raw["zero_optimization"]
    assert zo["stage"] == stage
    for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "train_batch_size"):
        assert raw[key] == "auto"
    assert raw["bf16"] == {"enabled": "auto"} and zo["reduce_bucket_size"] == "auto"
    if offload:
        assert zo["offload_optimizer"] == {"device": "cpu", "pin_memory": True}
        assert zo["offload_param"] == {"device": "cpu", "pin_memory": True}
        assert zo["stage3_gather_16bit_weights_on_model_save"] is True  # whole adapter at save
    else:
        assert "offload_optimizer" not in zo and "stage3_prefetch_bucket_size" not in zo
    filled = filled_by_transformers(path)
    assert "auto" not in json.dumps(filled)  # transformers filled every "auto" we wrote
    assert filled["train_batch_size"] == 8 * 8 * 1  # world size 1 in this process
    assert filled["bf16"]["enabled"] is True
    assert filled["zero_optimization"]["reduce_bucket_size"] == 4096 * 4096
    if offload:
        assert filled["optimizer"]["params"]["lr"] == pytest.approx(5e-5)  # TrainingArguments' default


def test_accelerate_config_loads_with_fsdp_keys(written: dict[str, LaunchFiles]) -> None:
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file

    path = written["fsdp"].paths[0]
    assert path.name == "accelerate_config.yaml"
    cfg = load_config_from_file(str(path))
    assert isinstance(cfg, ClusterConfig)
    assert str(cfg.distributed_type).endswith("FSDP")
    assert (cfg.num_machines, cfg.num_processes, cfg.machine_rank) == (NODES, NODES * GPUS, 0)
    assert cfg.mixed_precision == "bf16"
    fsdp = cfg.fsdp_config
    assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert fsdp["fsdp_transformer_layer_cls_to_wrap"] == "Qwen3DecoderLayer"
    assert fsdp["fsdp_use_orig_params"] is True
    assert fsdp["fsdp_reshard_after_forward"] == "FULL_SHARD"
    assert fsdp["fsdp_state_dict_type"] == "SHARDED_STATE_DICT"
    assert fsdp["fsdp_cpu_ram_efficient_loading"] is True and fsdp["fsdp_sync_module_states"] is True
    readme = (path.parent / "README.txt").read_text()
    assert "FULL_STATE_DICT" in readme and "estimated as ZeRO-3" in readme
    exp = yaml.safe_load((path.parent / "experiment.yaml").read_text())
    assert "deepspeed" not in exp  # FSDP comes from accelerate, not a DeepSpeed config


@pytest.mark.parametrize("layout", ["zero2", "zero3-offload", "fsdp"])
def test_plan_reads_the_experiment_back_to_the_same_memory(
    written: dict[str, LaunchFiles], layout: str
) -> None:
    res = written[layout]
    exp_path = res.paths[-4]
    assert exp_path.name == "experiment.yaml"
    cfg = load_experiment(exp_path)
    if layout != "fsdp":
        assert cfg.deepspeed == json.loads((exp_path.parent / "deepspeed.json").read_text())
    plan = plan_experiment(cfg, with_options=False)
    memory, _, _ = plan_extras(cfg, plan, PlanExtras(overrides=res.overrides), exp_path)
    assert memory.per_device == res.memory.per_device
    assert memory.host == res.memory.host
    assert memory.setup.sharding == res.memory.setup.sharding
    assert res.memory.setup.gpus == GPUS * NODES
    total = res.memory.per_device["total"]
    assert f"{total:,}" in (exp_path.parent / "README.txt").read_text()


def test_layouts_shard_as_expected(written: dict[str, LaunchFiles]) -> None:
    z2, z3o, fsdp = (written[k].memory for k in ("zero2", "zero3-offload", "fsdp"))
    assert z2.per_device["weights"] > fsdp.per_device["weights"] > z3o.per_device["weights"] == 0
    assert z3o.host["total"] > 0 and not z2.host.get("total")
    assert z3o.per_device["total"] < fsdp.per_device["total"] < z2.per_device["total"]


def test_launch_lines(written: dict[str, LaunchFiles]) -> None:
    for layout in ("zero2", "zero3-offload"):
        text = (written[layout].paths[0].parent / "launch.sh").read_text()
        assert re.search(rf"loralab train experiment.yaml -n {GPUS} --nnodes {NODES} --node-rank", text)
        assert f"torchrun --nnodes {NODES} " in text and f"--nproc_per_node {GPUS} " in text
        sbatch = (written[layout].paths[0].parent / "slurm.sbatch").read_text()
        assert f"#SBATCH --nodes={NODES}" in sbatch and f"#SBATCH --gpus-per-node={GPUS}" in sbatch
        assert "#SBATCH --ntasks-per-node=1" in sbatch and "srun loralab train experiment.yaml" in sbatch
    text = (written["fsdp"].paths[0].parent / "launch.sh").read_text()
    assert "  --launcher accelerate --accelerate-config accelerate_config.yaml" in text
    assert f"-n {GPUS} --nnodes {NODES} --node-rank" in text
    assert f"--num_machines {NODES} --num_processes {GPUS * NODES} --machine_rank" in text  # the comment
    sbatch = (written["fsdp"].paths[0].parent / "slurm.sbatch").read_text()
    assert (
        "srun loralab train experiment.yaml --launcher accelerate "
        f"--accelerate-config accelerate_config.yaml -n {GPUS}" in sbatch
    )
    # the scripts parse (bash -n) and stop with a message when a variable they need is unset
    for lf in written.values():
        for script in ("launch.sh", "slurm.sbatch"):
            path = lf.paths[0].parent / script
            assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0, script
        run = subprocess.run(["bash", str(lf.paths[0].parent / "launch.sh")], capture_output=True, text=True,
                             env={"PATH": os.environ["PATH"]})  # fmt: skip
        assert run.returncode != 0 and "set NODE_RANK" in run.stderr
    names = [p.name for p in written["fsdp"].paths]
    assert names == ["accelerate_config.yaml", "experiment.yaml", "launch.sh", "slurm.sbatch", "README.txt"]
    assert os.access(written["fsdp"].paths[2], os.X_OK)


def test_plan_write_launch_through_the_cli(tmp_path: Path) -> None:
    """`loralab plan --gpus 8 --nodes 2 --write-launch DIR`: the files are written and --json reports
    them with the layout's memory, which the DeepSpeed default of the config (ZeRO-2) decides."""
    import json as _json

    from typer.testing import CliRunner

    from loralab.cli import app

    out = tmp_path / "launch"
    res = CliRunner().invoke(
        app,
        [
            "plan",
            str(SEED000),
            "--no-options",
            "--json",
            "--gpus",
            "8",
            "--nodes",
            "2",
            "--write-launch",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    launch = _json.loads(res.stdout)["launch"]
    assert launch["layout"] == "zero2" and launch["nodes"] == 2 and launch["gpus_per_node"] == 8
    assert sorted(Path(p).name for p in launch["files"]) == sorted(p.name for p in out.iterdir())
    # ZeRO-2 over 16 GPUs shards the optimizer states: less per device than one GPU holds alone
    one = _json.loads(CliRunner().invoke(app, ["plan", str(SEED000), "--json", "--no-options"]).stdout)
    assert 0 < launch["memory"]["per_device"]["total"] < one["memory"]["per_device"]["total"]
