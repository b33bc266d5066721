"""`loralab recommend`: a LoRA setup that fits the memory budget, each choice with its reason.

The rules follow published evidence where seed 002's rules of thumb disagree with it:
- targets: every linear layer of the blocks, not q,v only. Hu et al. 2021 (arXiv:2106.09685) adapted
  q,v; QLoRA (Dettmers et al. 2023, arXiv:2305.14314, §4) found all linear layers necessary to match
  full fine-tuning, and Schulman et al. 2025 ("LoRA Without Regret", Thinking Machines) found
  attention-only LoRA underperforms even at matched parameter count, the MLP layers mattering most.
- rank: set by the amount of training data, not the model size ("LoRA Without Regret": capacity
  matters only once the dataset outgrows it; Hu et al. Table 6: r=1-8 already works for GPT-3);
  seed 002's "bigger model, bigger rank" is not supported.
- rsLoRA (Kalajdzievski 2023, arXiv:2312.03732) for r >= 32: scaling alpha/sqrt(r) keeps the
  update size stable as the rank grows, where alpha/r shrinks it.
- learning rate: about 10x a full fine-tune's ("LoRA Without Regret"); 2e-4 up to 13B parameters
  and 1e-4 above, the values QLoRA used.
- batch: LoRA tolerates large batches worse than full fine-tuning ("LoRA Without Regret"), so the
  effective batch is kept at 32 (classification) or 16 (generation).
Memory decides the rest, in order: gradient checkpointing, a smaller micro-batch with more
accumulation, ZeRO-3 sharding across GPUs, 4-bit NF4 weights (QLoRA), and only then fewer layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from loralab.config.models import TASK_TO_TASK_TYPE, Task
from loralab.errors import ConfigError, Problem
from loralab.plan.estimate.memory import MemoryEstimate, TrainSetup, estimate_memory
from loralab.plan.estimate.state_memory import Quantization, Sharding
from loralab.plan.planner import Plan, build_plan


@dataclass
class Request:
    model: str
    task: Task
    num_labels: int | None
    rows: int
    gpu_mem: int  # bytes per GPU
    gpus: int = 1
    seq_len: int = 512
    bf16: bool = True  # Ampere or newer


@dataclass
class Choice:
    key: str  # where it goes in the YAML (e.g. "lora.config.r")
    value: Any
    reason: str


@dataclass
class Recommendation:
    choices: list[Choice]
    plan: Plan
    memory: MemoryEstimate
    setup: TrainSetup
    lora: dict[str, Any]
    config: dict[str, Any]  # the ready-to-run experiment YAML mapping
    notes: list[str] = field(default_factory=list)


def rank_for(rows: int) -> tuple[int, str]:
    if rows < 10_000:
        return 8, f"{rows:,} rows: r=8 holds what a small dataset can teach (Hu et al. 2021 Table 6)"
    if rows < 200_000:
        return 16, f"{rows:,} rows: r=16; rank follows the data, not the model size (LoRA Without Regret)"
    return 64, f"{rows:,} rows: r=64 so capacity does not cap a large dataset (LoRA Without Regret)"


def block_linear_targets(arch: Any) -> list[str]:
    """Distinct last-name components of the linear modules inside numbered blocks."""
    names = sorted({m.name.rsplit(".", 1)[-1] for m in arch.modules if m.linear and m.layer is not None})
    return names


def recommend(req: Request, arch: Any, hf_cfg: dict[str, Any]) -> Recommendation:
    """Choose every setting, checking each candidate against the memory model."""
    choices: list[Choice] = []
    r, why_r = rank_for(req.rows)
    rslora = r >= 32
    # scaling 2 either way: alpha/r = 2, or with rsLoRA alpha/sqrt(r) = 2
    alpha = 2 * r if not rslora else 2 * math.isqrt(r)
    targets = block_linear_targets(arch)
    lora: dict[str, Any] = {
        "task_type": TASK_TO_TASK_TYPE[req.task],
        "r": r,
        "lora_alpha": alpha,
        "lora_dropout": 0.1 if req.rows < 10_000 else 0.05,
        "target_modules": targets,
        "use_rslora": rslora,
    }
    billions = arch.total_params / 1e9
    lr = 2e-4 if billions <= 13 else 1e-4
    effective = 32 if req.task == "seq-cls" else 16
    half = "bfloat16" if req.bf16 else "float16"
    base = TrainSetup(
        micro_batch=min(effective, 8),
        seq_len=req.seq_len,
        load_dtype=half,
        autocast=half,
        optim="adamw_torch_fused",
        sharding=Sharding(gpus=req.gpus),
    )
    plan = build_plan(arch, dict(lora), load_dtype=half, with_options=False)
    setup, memory, how = _fit(plan, hf_cfg, base, req, Quantization)
    if memory is None or not memory.fits:
        plan, lora, setup, memory, how = _fewer_layers(arch, lora, hf_cfg, setup, req, Quantization, how)
    assert memory is not None
    accum = max(1, math.ceil(effective / (setup.micro_batch * req.gpus)))
    choices += [
        Choice("lora.config.r", r, why_r),
        Choice(
            "lora.config.lora_alpha",
            lora["lora_alpha"],
            "alpha = 2r: scaling 2, PEFT's common default"
            if not rslora
            else f"rsLoRA scaling alpha/sqrt(r) = {lora['lora_alpha'] / math.sqrt(r):.1f} "
            "(Kalajdzievski 2023)",
        ),
        Choice(
            "lora.config.use_rslora",
            rslora,
            "r >= 32: rsLoRA keeps high-rank updates stable"
            if rslora
            else "r < 32: plain alpha/r scaling is stable",
        ),
        Choice(
            "lora.config.lora_dropout",
            lora["lora_dropout"],
            "small dataset: 0.1 regularises (QLoRA used 0.1 for models up to 13B)"
            if req.rows < 10_000
            else "0.05, QLoRA's value; LoRA Without Regret trains without it at scale",
        ),
        Choice(
            "lora.config.target_modules",
            lora["target_modules"],
            "every linear layer in the blocks: MLP targets beat doubling the rank on q,v "
            "(QLoRA §4; LoRA Without Regret; seed 002's q,v-only rule is outdated)",
        ),
        Choice("lora.config.layers_to_transform", lora.get("layers_to_transform", "all"), how["layers"]),
        Choice("training_args.per_device_train_batch_size", setup.micro_batch, how["micro_batch"]),
        Choice(
            "training_args.gradient_accumulation_steps",
            accum,
            f"effective batch {setup.micro_batch} x {accum} x {req.gpus} GPU(s) = "
            f"{setup.micro_batch * accum * req.gpus}: LoRA prefers batches of ~{effective} "
            "(LoRA Without Regret)",
        ),
        Choice(
            "training_args.learning_rate", lr, f"~10x full fine-tuning; QLoRA used {lr:g} at {billions:.1f}B"
        ),
        Choice("training_args.lr_scheduler_type", "cosine", "cosine decay with 3% warmup: no tuning needed"),
        Choice(
            "training_args.warmup_ratio", 0.03, "a short warmup protects the freshly initialised head/B=0"
        ),
        Choice(
            "precision",
            "bf16" if req.bf16 else "fp16",
            "bf16 on Ampere or newer (no GradScaler); "
            "fp16 with a GradScaler otherwise" + (" — weights in 4-bit NF4" if setup.quantization else ""),
        ),
        Choice("training_args.gradient_checkpointing", setup.gradient_checkpointing, how["gc"]),
    ]
    if setup.quantization is not None:
        choices.append(Choice("model.quantization", "4-bit NF4 + double quant", how["quant"]))
    if getattr(setup.sharding, "zero_stage", None) is not None:
        choices.append(Choice("deepspeed", f"ZeRO-{setup.sharding.zero_stage}", how["zero"]))
    config = _yaml_config(req, lora, setup, lr, accum)
    return Recommendation(choices=choices, plan=plan, memory=memory, setup=setup, lora=lora, config=config)


def _fit(
    plan: Plan, cfg: dict[str, Any], base: TrainSetup, req: Request, quant_cls: Any
) -> tuple[TrainSetup, MemoryEstimate | None, dict[str, str]]:
    """The first candidate that fits, in the docstring's order of concessions."""
    how = {
        "layers": "all layers: restricting layers costs accuracy and memory allowed them all",
        "gc": "not needed: the step fits without recomputation (saves ~1/3 of the step time)",
        "quant": "",
        "zero": "",
        "micro_batch": f"{base.micro_batch}: fits with room",
    }
    candidates: list[tuple[TrainSetup, dict[str, str]]] = []
    # A micro-batch under 4 leaves a GPU's matmuls too small to fill it, which costs more than the
    # ~1/3 extra forward of checkpointing; so checkpointing comes before micro-batches of 2 and 1.
    for gc, mb in (
        (False, 8),
        (False, 4),
        (True, 8),
        (True, 4),
        (False, 2),
        (True, 2),
        (False, 1),
        (True, 1),
    ):
        candidates.append((replace(base, gradient_checkpointing=gc, micro_batch=mb), {}))
    if req.gpus > 1:
        z3 = Sharding(gpus=req.gpus, zero_stage=3, mixed_precision=base.autocast)
        for mb in (8, 4, 2, 1):
            candidates.append(
                (replace(base, gradient_checkpointing=True, micro_batch=mb, sharding=z3), {"zero": "zero3"})
            )
    q4 = quant_cls(bits=4, quant_type="nf4", double_quant=True, compute_dtype=base.load_dtype)
    for mb in (8, 4, 2, 1):
        candidates.append(
            (replace(base, gradient_checkpointing=True, micro_batch=mb, quantization=q4), {"q": "4"})
        )
    last = None
    for setup, tag in candidates:
        est = estimate_memory(plan, cfg, setup, budget=req.gpu_mem, search=False)
        last = (setup, est)
        if est.fits:
            gib = est.per_device["total"] / 2**30
            if setup.gradient_checkpointing:
                how["gc"] = (
                    f"needed: without it micro-batch {setup.micro_batch} does not fit; it keeps only each "
                    "layer's input (a micro-batch under 4 would cost more throughput than recomputing)"
                )
            how["micro_batch"] = (
                f"{setup.micro_batch}: the largest of 8/4/2/1 that fits ({gib:.1f} GiB of "
                f"{req.gpu_mem / 2**30:.1f} GiB per GPU)"
            )
            if "zero" in tag:
                how["zero"] = (
                    "the bf16 weights do not fit on one GPU next to the step; "
                    f"ZeRO-3 shards them over {req.gpus}"
                )
            if "q" in tag:
                full = plan.arch.total_params * 2 / 2**30
                how["quant"] = (
                    f"the {setup.load_dtype} weights ({full:.1f} GiB) leave no room in "
                    f"{req.gpu_mem / 2**30:.1f} GiB; NF4 + double quantization stores them in "
                    f"{est.per_device['weights'] / 2**30:.1f} GiB (QLoRA), the smallest loss of quality"
                )
            return setup, est, how
    assert last is not None
    return last[0], last[1], how


def _fewer_layers(
    arch: Any,
    lora: dict[str, Any],
    cfg: dict[str, Any],
    setup: TrainSetup,
    req: Request,
    quant_cls: Any,
    how: dict,
) -> tuple[Plan, dict[str, Any], TrainSetup, MemoryEstimate, dict[str, str]]:
    """Last resort: adapt only the top half, then the top quarter, of the layers."""
    n = arch.num_layers
    est = None
    for frac in (2, 4, 8):
        layers = list(range(n - max(1, n // frac), n))
        cand = {**lora, "layers_to_transform": layers}
        plan = build_plan(arch, dict(cand), load_dtype=setup.load_dtype, with_options=False)
        s2, est, how2 = _fit(plan, cfg, setup, req, quant_cls)
        if est is not None and est.fits:
            how2["layers"] = (
                f"top {len(layers)} of {n} layers: even 4-bit weights with checkpointing and micro-batch 1 "
                "did not fit with all layers adapted (layers below the lowest adapter keep no activations)"
            )
            return plan, cand, s2, est, how2
    raise ConfigError(
        [
            Problem(
                "--gpu-mem",
                "",
                f"nothing fits in {req.gpu_mem / 2**30:.1f} GiB: not even the top 1/8 of the layers "
                "in 4-bit with checkpointing and micro-batch 1",
                "use more or larger GPUs (--gpus), a shorter --seq-len, or a smaller model",
            )
        ]
    )


def _yaml_config(
    req: Request, lora: dict[str, Any], setup: TrainSetup, lr: float, accum: int
) -> dict[str, Any]:
    model: dict[str, Any] = {"name_or_path": req.model, "task": req.task, "torch_dtype": setup.load_dtype}
    if req.task == "seq-cls":
        model["num_labels"] = req.num_labels
    if setup.quantization is not None:
        model["quantization"] = {
            "load_in_4bit": True,
            "bnb_4bit_quant_type": "nf4",
            "bnb_4bit_use_double_quant": True,
            "bnb_4bit_compute_dtype": setup.load_dtype,
        }
    targs: dict[str, Any] = {
        "per_device_train_batch_size": setup.micro_batch,
        "gradient_accumulation_steps": accum,
        "learning_rate": lr,
        "lr_scheduler_type": "cosine",
        "warmup_ratio": 0.03,
        "num_train_epochs": 3,
        "bf16" if setup.autocast == "bfloat16" else "fp16": True,
        "gradient_checkpointing": setup.gradient_checkpointing,
        "optim": setup.optim,
    }
    out: dict[str, Any] = {
        "model": model,
        "lora": {"enable": True, "config": dict(lora)},
        "data": {"max_length": req.seq_len},
        "training_args": targs,
    }
    z = getattr(setup.sharding, "zero_stage", None)
    if z is not None:
        out["deepspeed"] = {
            "train_micro_batch_size_per_gpu": "auto",
            "gradient_accumulation_steps": "auto",
            "bf16": {"enabled": "auto"},
            "zero_optimization": {"stage": z},
        }
    return out
