"""From an experiment config (plus command-line overrides) to the `TrainSetup` memory and time use.

Every value comes from the config under the name transformers/DeepSpeed give it
(`training_args.per_device_train_batch_size`, `data.max_length`, `model.torch_dtype`,
`model.attn_implementation`, the DeepSpeed `zero_optimization` block); a flag overrides it; a value
that is nowhere gets transformers' default and a note saying so.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

from loralab.config.sections import ATTN_IMPLEMENTATIONS
from loralab.errors import ConfigError, Problem
from loralab.plan.estimate.memory import TrainSetup
from loralab.plan.estimate.state_memory import Quantization, Sharding

# Families whose transformers classes refuse sdpa (`_supports_sdpa = False`): Gemma-2's soft-capping
NO_SDPA = frozenset({"gemma2"})
DEFAULT_OPTIM = "adamw_torch_fused"  # TrainingArguments.optim default in transformers 5


@dataclass
class Overrides:
    """Command-line values that replace the config's."""

    micro_batch: int | None = None
    seq_len: int | None = None
    gradient_checkpointing: bool | None = None
    attn_implementation: str | None = None
    gpus: int | None = None
    zero_stage: int | None = None
    offload: bool | None = None
    device: str | None = None
    notes: list[str] = field(default_factory=list)


_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)


def parse_size(text: str, *, flag: str = "--gpu-mem") -> int:
    """'80GiB', '80G' (binary), '24GB' (decimal), '8' (GiB) -> bytes."""
    m = _SIZE.match(text)
    if not m:
        problem = Problem(flag, "", f"cannot read {text!r} as a size", "write e.g. 80GiB, 24GB or 8")
        raise ConfigError([problem])
    value, unit = float(m.group(1)), (m.group(2) or "g").lower()
    if value <= 0:  # a 0 budget fits nothing and reads as "none fits" rather than as the typo it is
        raise ConfigError(
            [
                Problem(
                    flag, "", f"{text!r} is 0 bytes, which nothing fits in", "give a size above 0, e.g. 24GiB"
                )
            ]
        )
    powers = {"k": 1, "m": 2, "g": 3, "t": 4}
    if unit == "b":
        return int(value)
    p = powers[unit[0]]
    decimal = unit.endswith("b") and not unit.endswith("ib")
    return int(value * (1000**p if decimal else 1024**p))


def detected_gpu_memory() -> int | None:
    """Total memory of GPU 0 from nvidia-smi (no torch import), or None without an NVIDIA GPU."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        return int(float(out.splitlines()[0])) * 2**20
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def _targs(cfg: Any, *names: str) -> Any:
    for n in names:
        if cfg.training_args.get(n) is not None:
            return cfg.training_args[n]
    return None


def check_overrides(ov: Overrides) -> None:
    """Every override out of range or unknown, reported at once and named by its flag: a 0 or a
    negative would otherwise flow into the estimate (a "ZeRO-7" plan, a division by zero GPUs)."""
    problems = []
    for flag, value, low, high in (
        ("--gpus", ov.gpus, 1, None),
        ("--micro-batch", ov.micro_batch, 1, None),
        ("--seq-len", ov.seq_len, 1, None),
        ("--zero-stage", ov.zero_stage, 0, 3),
    ):
        if value is None or (value >= low and (high is None or value <= high)):
            continue
        allowed = f"{low} to {high}" if high is not None else f"{low} or more"
        problems.append(Problem(flag, "", f"{value} is out of range", f"give {allowed}"))
    if ov.offload and ov.zero_stage == 0:
        # DeepSpeed's config docs: offload_optimizer is valid with ZeRO stage 1 (recent releases), 2 and 3.
        problems.append(
            Problem(
                "--offload", "", "optimizer offload needs ZeRO stage 1 or more, not 0", "give --zero-stage 2"
            )
        )
    attn = ov.attn_implementation
    if attn is not None and attn not in ATTN_IMPLEMENTATIONS and "/" not in attn:
        problems.append(
            Problem(
                "--attn-implementation",
                "",
                f"unknown attention implementation {attn!r}",
                "use one of: " + ", ".join(ATTN_IMPLEMENTATIONS),
            )
        )
    if problems:
        raise ConfigError(problems)


def resolve_deepspeed(ds: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The DeepSpeed config as the run will see it: an "auto" ZeRO stage becomes the stage accelerate's
    DeepSpeedPlugin fills in (ACCELERATE_DEEPSPEED_ZERO_STAGE, else 2; transformers' own
    HfTrainerDeepSpeedConfig fills no stage). The loader has refused any other non-0-3 stage."""
    zo = ds.get("zero_optimization")
    if not isinstance(zo, dict) or zo.get("stage") != "auto":
        return ds, []
    env = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "")
    stage = int(env) if env.isdigit() else 2
    out = copy.deepcopy(ds)
    out["zero_optimization"]["stage"] = stage
    why = "ACCELERATE_DEEPSPEED_ZERO_STAGE" if env.isdigit() else "accelerate's default"
    return out, [f'ZeRO stage "auto" -> {stage} ({why}, as accelerate\'s DeepSpeedPlugin fills it)']


def setup_from_config(cfg: Any, arch: Any, ov: Overrides) -> tuple[TrainSetup, list[str]]:
    """The TrainSetup of experiment `cfg` on `arch`, with `ov` applied; plus notes on defaults."""
    check_overrides(ov)
    notes: list[str] = []
    b = ov.micro_batch if ov.micro_batch is not None else _targs(cfg, "per_device_train_batch_size")
    if b is None:
        b = 8
        notes.append(
            "micro-batch 8: training_args.per_device_train_batch_size is not set (transformers' default)"
        )
    s = ov.seq_len if ov.seq_len is not None else cfg.max_length
    if not ov.seq_len and cfg.data.max_length is None:
        notes.append(
            f"sequence length {s}: data.max_length is not set, and {s} is what `train` uses for "
            f"{cfg.model.task} (pass --seq-len to plan another)"
        )
    gc = ov.gradient_checkpointing
    if gc is None:
        gc = bool(_targs(cfg, "activation_checkpointing", "gradient_checkpointing"))
    load = cfg.model.torch_dtype
    if load in (None, "auto"):
        load = arch.config_dtype or "float32"
    autocast = "bfloat16" if _targs(cfg, "bf16") else "float16" if _targs(cfg, "fp16") else None
    quant = Quantization.from_config(cfg.model.quantization) if cfg.model.quantization else None
    gpus = ov.gpus if ov.gpus is not None else 1
    if ov.zero_stage is not None or ov.offload:
        sharding = Sharding(
            gpus=gpus,
            zero_stage=ov.zero_stage if ov.zero_stage is not None else 2,
            offload_optimizer="cpu" if ov.offload else None,
            mixed_precision=autocast,
        )
    elif cfg.deepspeed:
        ds, ds_notes = resolve_deepspeed(cfg.deepspeed)
        notes.extend(ds_notes)
        sharding = Sharding.from_deepspeed(ds, cfg.training_args, gpus)
        if ov.offload is False:
            sharding = Sharding(**{**sharding.__dict__, "offload_optimizer": None, "offload_param": None})
    else:
        sharding = Sharding(gpus=gpus)
    attn = ov.attn_implementation or cfg.model.attn_implementation
    if attn is None:
        attn = "eager" if arch.model_type in NO_SDPA else "sdpa"
        if attn == "eager":
            notes.append(
                f"attention: eager, transformers' default for {arch.model_type} (it has no sdpa path)"
            )
    setup = TrainSetup(
        micro_batch=int(b),
        seq_len=int(s),
        gradient_accumulation_steps=int(_targs(cfg, "gradient_accumulation_steps") or 1),
        gradient_checkpointing=gc,
        attn_implementation=attn,
        load_dtype=str(load),
        autocast=autocast,
        optim=str(_targs(cfg, "optim") or DEFAULT_OPTIM),
        optim_args=_targs(cfg, "optim_args"),
        quantization=quant,
        sharding=sharding,
        # use_cpu (transformers' own flag) trains on the host even where a GPU exists
        device=ov.device or ("cpu" if _targs(cfg, "use_cpu") else "cuda"),
    )
    return setup, notes
