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
- learning rate: LoRA's best rate is about 10x the full fine-tuning rate of the same model and nearly
  independent of the rank ("LoRA Without Regret"); the full fine-tuning rate falls with the width.
  Thinking Machines published the fit they use (tinker-cookbook `hyperparam_utils.get_lr`):
  LR = 10 x 5e-5 x (2000 / hidden_size) ** P, with P = 0.781 fitted on Llama models and 0.0775 on
  Qwen. A family with no published fit gets the geometric mean of the two fits, and the span between
  them is the range the evidence allows (`--validate` measures where in it the model lies). One
  constant (QLoRA's 2e-4, fine for 7B decoders) is 5x too low for a 22M-parameter encoder (issue 12).
- batch: LoRA tolerates large batches worse than full fine-tuning ("LoRA Without Regret"), so the
  effective batch is 32 (classification) or 16 (generation), halved down to 8 while the run would
  take fewer than MIN_STEPS optimizer steps: a small dataset needs steps more than it needs batch.
- warmup: transformers 5's fractional `warmup_steps` (its `warmup_ratio` was removed): 3% of the
  steps, at least ~10 steps and at most 10%.
Memory decides the rest, in order: gradient checkpointing, a smaller micro-batch with more
accumulation, ZeRO-3 sharding across GPUs, 4-bit NF4 weights (QLoRA), and only then fewer layers;
those leave the layers below them frozen, and where that prefix is dropout-free `train` caches its
output (prefix_cache: auto), so the recommendation says what that is predicted to save.
On a CPU host (no --gpu-mem, no GPU) the budget is the host's RAM, weights stay fp32 and the
micro-batch is the whole effective batch (accumulation saves memory, never time, on a CPU).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from loralab.arch.hf import hidden_size
from loralab.config.models import TASK_TO_TASK_TYPE, Task, lm_validation_rows
from loralab.errors import ConfigError, Problem
from loralab.plan.estimate.memory import MemoryEstimate, TrainSetup, estimate_memory
from loralab.plan.estimate.prefix_cache import SplitTokens, estimate_prefix_cache
from loralab.plan.estimate.state_memory import Quantization, Sharding
from loralab.plan.planner import Plan, build_plan, kind_warnings

# tinker-cookbook hyperparam_utils.get_lr: full fine-tuning LR at width 2000, LoRA's multiple of it,
# and the width exponents fitted per family (model_type -> family name, exponent).
FULL_FT_LR_AT_2000 = 5e-5
LORA_LR_MULTIPLIER = 10
LLAMA_EXPONENT, QWEN_EXPONENT = 0.781, 0.0775
FITTED_EXPONENT = {
    "llama": ("Llama", LLAMA_EXPONENT),
    "qwen2": ("Qwen", QWEN_EXPONENT),
    "qwen3": ("Qwen", QWEN_EXPONENT),
    "qwen2_moe": ("Qwen", QWEN_EXPONENT),
    "qwen3_moe": ("Qwen", QWEN_EXPONENT),
}
# Fewer optimizer steps than this and a run ends before the adapters (B starts at 0) and a new head
# have moved far; the effective batch is halved (down to MIN_EFFECTIVE) and then epochs are added.
MIN_STEPS = 100
MIN_EFFECTIVE = 8
MAX_AUTO_EPOCHS = 10
DEFAULT_EPOCHS = 3
MICRO_BATCHES = (32, 16, 8, 4, 2, 1)


@dataclass
class Request:
    model: str
    task: Task
    num_labels: int | None
    rows: int
    gpu_mem: int  # bytes per device: GPU memory, or the host RAM budget when device == "cpu"
    gpus: int = 1
    seq_len: int = 512
    bf16: bool = True  # Ampere or newer
    device: str = "cuda"  # "cpu": train on this host (fp32, no accumulation, no 4-bit, no ZeRO)
    epochs: int | None = None  # None: DEFAULT_EPOCHS, more for a small dataset


@dataclass
class Choice:
    key: str  # where it goes in the YAML (e.g. "lora.config.r")
    value: Any
    reason: str


@dataclass(frozen=True)
class LearningRate:
    value: float  # rounded to 1, 2, 3 or 5 x 10^k
    low: float  # the range the published fits give at this width
    high: float
    reason: str


@dataclass(frozen=True)
class Steps:
    """The optimizer-step budget of the recommended run (transformers' own arithmetic)."""

    rows: int
    micro_batch: int
    accumulation: int
    devices: int
    epochs: int
    per_epoch: int
    total: int
    warmup: float  # fractional warmup_steps
    warmup_steps: int  # what transformers makes of it: ceil(total * warmup)


@dataclass
class Recommendation:
    choices: list[Choice]
    plan: Plan
    memory: MemoryEstimate
    setup: TrainSetup
    lora: dict[str, Any]
    config: dict[str, Any]  # the ready-to-run experiment YAML mapping
    steps: Steps
    learning_rate: LearningRate
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    validation: Any = None  # set by `recommend --validate` (experiments.tune.Validation)
    validation_table: list[str] = field(default_factory=list)  # its table, for the output and the YAML


def rank_for(rows: int) -> tuple[int, str]:
    if rows < 10_000:
        return 8, f"{rows:,} rows: r=8 holds what a small dataset can teach (Hu et al. 2021 Table 6)"
    if rows < 200_000:
        return 16, f"{rows:,} rows: r=16; rank follows the data, not the model size (LoRA Without Regret)"
    return 64, f"{rows:,} rows: r=64 so capacity does not cap a large dataset (LoRA Without Regret)"


def nice_number(x: float) -> float:
    """x rounded on a log scale to 1, 2, 3 or 5 x 10^k (the values people sweep)."""
    k = math.floor(math.log10(x))
    best = min(
        (m * 10.0**e for e in (k - 1, k, k + 1) for m in (1, 2, 3, 5)),
        key=lambda v: abs(math.log(v / x)),
    )
    return float(f"{best:.0e}")


def learning_rate_for(model_type: str, hidden: int) -> LearningRate:
    """LoRA Without Regret's rule with Thinking Machines' published width fit (module docstring)."""
    base = LORA_LR_MULTIPLIER * FULL_FT_LR_AT_2000
    ratio = 2000 / hidden
    low, high = sorted(base * ratio**e for e in (LLAMA_EXPONENT, QWEN_EXPONENT))
    formula = f"10 x 5e-5 x (2000/{hidden})^P"
    fitted = FITTED_EXPONENT.get(model_type)
    if fitted is not None:
        family, p = fitted
        raw = base * ratio**p
        why = f"P = {p} fitted on {family} models"
    else:
        raw = math.sqrt(low * high)
        why = (
            f"no published fit for {model_type}: the geometric mean of the Llama (P=0.781) and Qwen "
            f"(P=0.0775) fits, {low:.1e}-{high:.1e}; --validate measures where this model lies"
        )
    value = nice_number(raw)
    reason = (
        f"LoRA's best rate is ~10x full fine-tuning's and nearly independent of rank (LoRA Without "
        f"Regret); {formula} = {raw:.2e} ({why}; tinker-cookbook get_lr). A new head (modules_to_save) "
        "trains at the same rate"
    )
    return LearningRate(value=value, low=low, high=high, reason=reason)


def steps_for(rows: int, micro: int, accum: int, devices: int, epochs: int) -> int:
    """Optimizer steps per epoch as transformers counts them: batches per device, then whole and
    partial accumulation windows (Trainer `num_update_steps_per_epoch`)."""
    batches = math.ceil(math.ceil(rows / devices) / micro)
    return max(1, math.ceil(batches / accum)) * epochs


def batch_and_epochs(rows: int, task: str, epochs: int | None) -> tuple[int, int, str]:
    """The effective batch and epochs (see the module docstring), with the reason."""
    effective = 32 if task == "seq-cls" else 16
    start = effective
    n_epochs = epochs or DEFAULT_EPOCHS
    while effective > MIN_EFFECTIVE and math.ceil(rows / effective) * n_epochs < MIN_STEPS:
        effective //= 2
    why = f"LoRA prefers batches of ~{start} (LoRA Without Regret)"
    if effective < start:
        why = f"{why}; halved to {effective} so {rows:,} rows give >= {MIN_STEPS} optimizer steps"
    if epochs is None:
        while math.ceil(rows / effective) * n_epochs < MIN_STEPS and n_epochs < MAX_AUTO_EPOCHS:
            n_epochs += 1
    return effective, n_epochs, why


def warmup_for(total_steps: int) -> float:
    """3% of the steps, at least ~10 steps, at most 10% (a fraction: transformers 5 warmup_steps)."""
    return round(min(0.1, max(0.03, 10 / max(1, total_steps))), 3)


def step_budget(rows: int, micro: int, accum: int, devices: int, epochs: int) -> Steps:
    total = steps_for(rows, micro, accum, devices, epochs)
    warmup = warmup_for(total)
    return Steps(
        rows=rows,
        micro_batch=micro,
        accumulation=accum,
        devices=devices,
        epochs=epochs,
        per_epoch=total // epochs,
        total=total,
        warmup=warmup,
        warmup_steps=math.ceil(total * warmup),
    )


def step_warnings(steps: Steps) -> list[str]:
    """Too few optimizer steps for the data, or for the warmup, each with its fix."""
    out = []
    if steps.total < MIN_STEPS:
        out.append(
            f"only {steps.total} optimizer steps ({steps.rows:,} rows, effective batch "
            f"{steps.micro_batch * steps.accumulation * steps.devices}, {steps.epochs} epochs): fewer "
            f"than {MIN_STEPS} leave the adapters near their start; raise --epochs or add data"
        )
    if steps.warmup_steps < 3:
        out.append(
            f"warmup of {steps.warmup_steps} step(s) is too short to protect the new head; "
            "raise --epochs or add data"
        )
    return out


def recommend(req: Request, arch: Any, hf_cfg: dict[str, Any]) -> Recommendation:
    """Choose every setting, checking each candidate against the memory model."""
    r, why_r = rank_for(req.rows)
    rslora = r >= 32
    # scaling 2 either way: alpha/r = 2, or with rsLoRA alpha/sqrt(r) = 2
    alpha = 2 * r if not rslora else 2 * math.isqrt(r)
    lora: dict[str, Any] = {
        "task_type": TASK_TO_TASK_TYPE[req.task],
        "r": r,
        "lora_alpha": alpha,
        "lora_dropout": dropout_for(req),
        "target_modules": block_linear_targets(arch),
        "use_rslora": rslora,
    }
    hidden = hidden_size(hf_cfg)
    if not hidden:
        raise ConfigError([Problem("config.json", "hidden_size", "the model config has no width", "")])
    lr = learning_rate_for(arch.model_type, hidden)
    # An LM run without a validation file trains on what its validation split leaves.
    trained = req.rows if req.task == "seq-cls" else req.rows - lm_validation_rows(req.rows)
    effective, epochs, why_batch = batch_and_epochs(trained, req.task, req.epochs)
    base = _base_setup(req, effective)
    plan = build_plan(arch, dict(lora), load_dtype=base.load_dtype, with_options=False)
    setup, memory, how = _fit(plan, hf_cfg, base, req, effective)
    if memory is None or not memory.fits:
        plan, lora, setup, memory, how = _fewer_layers(arch, lora, hf_cfg, setup, req, effective, how)
    assert memory is not None
    # every linear layer is meant: a name matching attention and MLP (GPT-2's c_proj) is no accident
    intended = set(kind_warnings(plan.match))
    plan.warnings = [w for w in plan.warnings if w not in intended]
    devices = req.gpus if req.device != "cpu" else 1
    accum = max(1, math.ceil(effective / (setup.micro_batch * devices)))
    steps = step_budget(trained, setup.micro_batch, accum, devices, epochs)
    choices = [
        *_lora_choices(lora, r, why_r, rslora, req),
        Choice("lora.config.layers_to_transform", lora.get("layers_to_transform", "all"), how["layers"]),
        Choice("training_args.per_device_train_batch_size", setup.micro_batch, how["micro_batch"]),
        Choice(
            "training_args.gradient_accumulation_steps",
            accum,
            f"effective batch {setup.micro_batch} x {accum} x {devices} device(s) = "
            f"{setup.micro_batch * accum * devices}: {why_batch}",
        ),
        Choice("training_args.learning_rate", lr.value, lr.reason),
        Choice("training_args.num_train_epochs", epochs, _epochs_reason(req, steps)),
        Choice("training_args.lr_scheduler_type", "cosine", "cosine decay: no tuning needed"),
        Choice(
            "training_args.warmup_steps",
            steps.warmup,
            f"{steps.warmup:g} of {steps.total} steps = {steps.warmup_steps} warmup steps: protects the "
            "new head and B=0 (a fraction is transformers 5's form; warmup_ratio was removed)",
        ),
        _precision_choice(req, setup),
        Choice("training_args.activation_checkpointing", setup.gradient_checkpointing, how["gc"]),
    ]
    if setup.quantization is not None:
        choices.append(Choice("model.quantization", "4-bit NF4 + double quant", how["quant"]))
    if getattr(setup.sharding, "zero_stage", None) is not None:
        choices.append(Choice("deepspeed", f"ZeRO-{setup.sharding.zero_stage}", how["zero"]))
    config = _yaml_config(req, lora, setup, lr.value, accum, steps)
    cache = _prefix_cache_choice(plan, hf_cfg, setup, req, trained, epochs)
    if cache is not None:
        choices.append(cache)
        config["prefix_cache"] = cache.value
    return Recommendation(
        choices=choices,
        plan=plan,
        memory=memory,
        setup=setup,
        lora=lora,
        config=config,
        steps=steps,
        learning_rate=lr,
        warnings=step_warnings(steps),
    )


def _prefix_cache_choice(
    plan: Plan, cfg: dict[str, Any], setup: TrainSetup, req: Request, rows: int, epochs: int
) -> Choice | None:
    """Where the chosen layers leave a frozen, dropout-free prefix, `train` caches it (prefix_cache:
    auto); elsewhere nothing is said. Only the training split is known here, so its token count
    cancels out of the speedups (rows x seq_len stands in for it)."""
    pc = estimate_prefix_cache(
        plan,
        cfg,
        setup,
        padding_side=None if req.task == "seq-cls" else "right",
        splits={"train": SplitTokens(rows, rows * req.seq_len)},
        epochs=epochs,
    )
    if not pc.used or pc.speedup_step is None or pc.speedup_run is None:
        return None
    side = " (when the tokenizer pads on the right)" if req.task == "seq-cls" else ""
    return Choice(
        "prefix_cache",
        "auto",
        f"{pc.layers_text} stay frozen and dropout-free, so `train` runs them once per row and caches "
        f"their output{side}: predicted {pc.speedup_step:.2f}x fewer FLOPs per step, "
        f"{pc.speedup_run:.2f}x over the {epochs}-epoch run with the one-off build",
    )


def block_linear_targets(arch: Any) -> list[str]:
    """Distinct last-name components of the linear modules inside numbered blocks."""
    names = sorted({m.name.rsplit(".", 1)[-1] for m in arch.modules if m.linear and m.layer is not None})
    return names


def _base_setup(req: Request, effective: int) -> TrainSetup:
    if req.device == "cpu":
        return TrainSetup(
            micro_batch=effective,
            seq_len=req.seq_len,
            load_dtype="float32",
            autocast=None,
            optim="adamw_torch",
            device="cpu",
        )
    half = "bfloat16" if req.bf16 else "float16"
    return TrainSetup(
        micro_batch=min(effective, 8),
        seq_len=req.seq_len,
        load_dtype=half,
        autocast=half,
        optim="adamw_torch_fused",
        sharding=Sharding(gpus=req.gpus),
    )


def dropout_for(req: Request) -> float:
    """0.1 on small data and 0.05 otherwise (QLoRA's values) on a GPU; none on a CPU, where PEFT's
    lora_dropout draws a fresh random mask over every adapted module's input each step: on the 2-core
    CI host a MiniLM step ran 1.4x slower with 0.05 (2.45 against 3.44 steps/s, measured by
    benchmarks/bench_recommend.py), and LoRA Without Regret trains without dropout."""
    if req.device == "cpu":
        return 0.0
    return 0.1 if req.rows < 10_000 else 0.05


def _dropout_reason(req: Request) -> str:
    if req.device == "cpu":
        return (
            "none on a CPU: its random masks made a MiniLM step 1.4x slower on a 2-core CPU (measured, "
            "benchmarks/bench_recommend.py); LoRA Without Regret trains without dropout"
        )
    if req.rows < 10_000:
        return "small dataset: 0.1 regularises (QLoRA used 0.1 for models up to 13B)"
    return "0.05, QLoRA's value; LoRA Without Regret trains without it at scale"


def _lora_choices(lora: dict[str, Any], r: int, why_r: str, rslora: bool, req: Request) -> list[Choice]:
    return [
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
            _dropout_reason(req),
        ),
        Choice(
            "lora.config.target_modules",
            lora["target_modules"],
            "every linear layer in the blocks: MLP targets beat doubling the rank on q,v "
            "(QLoRA §4; LoRA Without Regret; seed 002's q,v-only rule is outdated)",
        ),
    ]


def _epochs_reason(req: Request, steps: Steps) -> str:
    head = f"{steps.total:,} optimizer steps ({steps.per_epoch:,} per epoch)"
    if req.epochs is not None:
        return f"{head}: as asked (--epochs)"
    if steps.epochs > DEFAULT_EPOCHS:
        return f"{head}: {DEFAULT_EPOCHS} epochs of {steps.rows:,} rows gave fewer than {MIN_STEPS} steps"
    return f"{head}: {DEFAULT_EPOCHS} epochs, the common LoRA fine-tuning length (QLoRA, Alpaca-LoRA)"


def _precision_choice(req: Request, setup: TrainSetup) -> Choice:
    if req.device == "cpu":
        return Choice(
            "precision",
            "fp32",
            "CPU: fp32 weights and compute (bf16 autocast pays off only on CPUs with AMX; "
            "fp16 has no CPU loss scaling)",
        )
    return Choice(
        "precision",
        "bf16" if req.bf16 else "fp16",
        "bf16 on Ampere or newer (no GradScaler); "
        "fp16 with a GradScaler otherwise" + (" — weights in 4-bit NF4" if setup.quantization else ""),
    )


def _candidates(base: TrainSetup, req: Request, effective: int) -> list[tuple[TrainSetup, str]]:
    """Setups in the docstring's order of concessions, each tagged with what it gave up."""
    per_device = effective if req.device == "cpu" else max(1, effective // max(1, req.gpus))
    big = [m for m in MICRO_BATCHES if 4 <= m <= per_device] or [min(per_device, 4)]
    small = [m for m in (2, 1) if m < min(big)]
    # A micro-batch under 4 leaves a GPU's matmuls too small to fill it, which costs more than the
    # ~1/3 extra forward of checkpointing; so checkpointing comes before micro-batches of 2 and 1.
    order = [(False, m) for m in big] + [(True, m) for m in big]
    for m in small:
        order += [(False, m), (True, m)]
    out = [(replace(base, gradient_checkpointing=gc, micro_batch=mb), "") for gc, mb in order]
    if req.device == "cpu":
        return out  # no ZeRO and no bitsandbytes 4-bit training on a CPU host
    if req.gpus > 1:
        z3 = Sharding(gpus=req.gpus, zero_stage=3, mixed_precision=base.autocast)
        for mb in (8, 4, 2, 1):
            out.append((replace(base, gradient_checkpointing=True, micro_batch=mb, sharding=z3), "zero"))
    q4 = Quantization(bits=4, quant_type="nf4", double_quant=True, compute_dtype=base.load_dtype)
    for mb in (8, 4, 2, 1):
        out.append((replace(base, gradient_checkpointing=True, micro_batch=mb, quantization=q4), "q"))
    return out


def _fit(
    plan: Plan, cfg: dict[str, Any], base: TrainSetup, req: Request, effective: int
) -> tuple[TrainSetup, MemoryEstimate | None, dict[str, str]]:
    """The first candidate that fits."""
    where = "of host RAM" if req.device == "cpu" else "per GPU"
    how = {
        "layers": "all layers: restricting layers costs accuracy and memory allowed them all",
        "gc": "not needed: the step fits without recomputation (saves ~1/3 of the step time)",
        "quant": "",
        "zero": "",
        "micro_batch": f"{base.micro_batch}: fits with room",
    }
    last = None
    for setup, tag in _candidates(base, req, effective):
        est = estimate_memory(plan, cfg, setup, budget=req.gpu_mem, search=False)
        last = (setup, est)
        if not est.fits:
            continue
        gib = est.per_device["total"] / 2**30
        if setup.gradient_checkpointing:
            how["gc"] = (
                f"needed: without it micro-batch {setup.micro_batch} does not fit; it keeps only each "
                "layer's input (a micro-batch under 4 would cost more throughput than recomputing)"
            )
        sizes = "/".join(str(m) for m in MICRO_BATCHES if m <= max(base.micro_batch, effective))
        how["micro_batch"] = (
            f"{setup.micro_batch}: the largest of {sizes} that fits ({gib:.1f} GiB of "
            f"{req.gpu_mem / 2**30:.1f} GiB {where})"
        )
        if req.device == "cpu":
            how["micro_batch"] += "; on a CPU the whole effective batch in one pass is fastest"
        if tag == "zero":
            how["zero"] = (
                f"the bf16 weights do not fit on one GPU next to the step; ZeRO-3 shards them over {req.gpus}"
            )
        if tag == "q":
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
    effective: int,
    how: dict[str, str],
) -> tuple[Plan, dict[str, Any], TrainSetup, MemoryEstimate, dict[str, str]]:
    """Last resort: adapt only the top half, then the top quarter, of the layers."""
    n = arch.num_layers
    for frac in (2, 4, 8):
        layers = list(range(n - max(1, n // frac), n))
        cand = {**lora, "layers_to_transform": layers}
        plan = build_plan(arch, dict(cand), load_dtype=setup.load_dtype, with_options=False)
        s2, est, how2 = _fit(plan, cfg, setup, req, effective)
        if est is not None and est.fits:
            how2["layers"] = (
                f"top {len(layers)} of {n} layers: even the smallest setup did not fit with all "
                "layers adapted (layers below the lowest adapter keep no activations)"
            )
            return plan, cand, s2, est, how2
    flag = "--gpu-mem" if req.device != "cpu" else "host RAM"
    fix = (
        "use more or larger GPUs (--gpus), a shorter --seq-len, or a smaller model"
        if req.device != "cpu"
        else "pass --gpu-mem for a GPU, a shorter --seq-len, or a smaller model"
    )
    raise ConfigError(
        [
            Problem(
                flag,
                "",
                f"nothing fits in {req.gpu_mem / 2**30:.1f} GiB: not even the top 1/8 of the layers "
                "with checkpointing and micro-batch 1",
                fix,
            )
        ]
    )


def _yaml_config(
    req: Request, lora: dict[str, Any], setup: TrainSetup, lr: float, accum: int, steps: Steps
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
        "warmup_steps": steps.warmup,
        "num_train_epochs": steps.epochs,
    }
    if req.device == "cpu":
        targs["use_cpu"] = True
    else:
        targs["bf16" if setup.autocast == "bfloat16" else "fp16"] = True
    targs["activation_checkpointing"] = setup.gradient_checkpointing
    targs["optim"] = setup.optim
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
