"""The comparison rules of `loralab diff`: two configs, already loaded and planned, resolved to what the
run will do (DeepSpeed "auto" filled, negative layers counted back, the schedule that really runs) and
compared by meaning; each difference rated by its likely effect on the result, with the reason.

Pure: plain records in, records out (no torch, no files). `diff.py` loads, plans and renders.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from loralab.config.formats.deepspeed import ds_get
from loralab.io import flatten
from loralab.plan.recommend import steps_for

GROUPS = ("model", "LoRA", "data", "optimisation", "schedule", "batch", "precision", "distributed", "other")
IMPACTS = ("high", "medium", "low", "none")

# References cited in the reasons (one owner of each spelling).
HU = "Hu et al. 2021, LoRA"
RSLORA = "Kalajdzievski 2023, rsLoRA"
BIDERMAN = 'Biderman et al. 2024, "LoRA Learns Less and Forgets Less"'
OFFLOAD = "DeepSpeed ZeRO-Offload docs (Ren et al. 2021)"
HF_DS = "transformers DeepSpeed integration docs"


@dataclass
class Planned:
    """What `plan` resolved of one config on its model's architecture."""

    num_layers: int
    layers: list[int] | None  # resolved layers_to_transform; None: every layer
    written_layers: list[int] | None  # as the file wrote them (negative indices kept)
    target_modules: list[str] | str  # as PEFT ends up with them (defaults and all-linear expanded)
    adapted_modules: int
    lora_params: int
    trainable_params: int
    adapter_bytes: int
    modules_to_save: list[str]  # with the task's head appended, as the PeftModel does
    memory_per_device: int | None = None  # bytes, from plan's memory estimate
    host_memory: int | None = None  # bytes on the host (offloaded optimizer states)
    memory_terms: dict[str, int] = field(default_factory=dict)  # per-device terms (optimizer, activations)


@dataclass
class Facts:
    """One config as loaded: the sections as plain values, plus the plan (None: model unknown)."""

    training_args: dict[str, Any]
    deepspeed: dict[str, Any] | None
    lora: dict[str, Any]  # LoraConfig kwargs
    model: dict[str, Any]  # name_or_path, task, num_labels, torch_dtype, quantization, ...
    data: dict[str, Any]
    max_length: int | None  # data.max_length or the task's default
    ta_defaults: dict[str, Any]  # TrainingArguments defaults of the installed transformers
    gpus: int | None = None  # --gpus
    train_rows: int | None = None  # training rows after extract_ratio and the validation split
    rows_note: str = "unknown: no data.train_file"
    planned: Planned | None = None


@dataclass
class Schedule:
    set_by: str  # which component sets the learning rate
    kind: str
    text: str  # the curve in words
    decays: bool  # whether the rate falls over the run


@dataclass
class Resolved:
    """One config as the run will see it."""

    facts: Facts
    settings: dict[str, Any]  # canonical key -> value by meaning
    processes: int
    processes_source: str
    micro: int
    accum: int
    steps_per_epoch: int | None
    total_steps: int | None
    warmup_steps: int | None
    warmup_text: str
    schedule: Schedule
    scale: float
    clipping: str
    notes: list[str] = field(default_factory=list)

    @property
    def effective_batch(self) -> int:
        return self.processes * self.micro * self.accum


@dataclass
class Difference:
    key: str
    a: Any
    b: Any
    impact: str
    why: str
    group: str

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "a": self.a,
            "b": self.b,
            "impact": self.impact,
            "why": self.why,
            "group": self.group,
        }


# ---- small helpers -------------------------------------------------------------------------------


def show(v: Any) -> str:
    """A value as the tables print it: runs of integers as ranges, floats short, None as '-'."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list) and v and all(isinstance(i, int) and not isinstance(i, bool) for i in v):
        return int_ranges(v)
    if isinstance(v, list):
        return ", ".join(show(i) for i in v) or "[]"
    if isinstance(v, dict):
        return ", ".join(f"{k}={show(i)}" for k, i in v.items()) or "{}"
    return str(v)


def int_ranges(values: list[int]) -> str:
    """[28, 29, 30, 35] -> '28-30, 35' (sorted; negative indices kept as written)."""
    out: list[str] = []
    vs = sorted(values)
    start = prev = vs[0]
    for v in [*vs[1:], None]:
        if v is not None and v == prev + 1:
            prev = v
            continue
        out.append(f"{start}" if start == prev else f"{start}..{prev}" if start < 0 else f"{start}-{prev}")
        if v is not None:
            start = prev = v
    return ", ".join(out)


def ratio(a: Any, b: Any) -> float | None:
    """b / a for two positive numbers, else None."""
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool) and a > 0:
        return float(b) / float(a)
    return None


def times(a: Any, b: Any) -> str:
    r = ratio(a, b)
    return f"B is {r:.3g}x A" if r is not None else ""


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


def _num(v: Any) -> TypeGuard[int | float]:
    return isinstance(v, int | float) and not isinstance(v, bool)


# ---- resolving one config ------------------------------------------------------------------------


def arg(f: Facts, key: str) -> Any:
    """A TrainingArguments value as the Trainer sees it: the file's, else the installed default."""
    v = f.training_args.get(key)
    return v if v is not None else f.ta_defaults.get(key)


def processes_of(f: Facts, micro: int, accum: int) -> tuple[int, str, list[str]]:
    """Data-parallel processes: --gpus; else DeepSpeed's explicit train_batch_size / (micro x accum),
    which DeepSpeed requires to equal world size x micro x accumulation; else 1, said in a note."""
    if f.gpus:
        return f.gpus, "--gpus", []
    tbs = ds_get(f.deepspeed, "train_batch_size")
    if _num(tbs) and tbs > 0 and tbs % (micro * accum) == 0:
        n = int(tbs) // (micro * accum)
        return n, f"DeepSpeed train_batch_size {tbs} / ({micro} x {accum})", []
    note = "1 process assumed (no --gpus, no DeepSpeed train_batch_size): pass --gpus N for a multi-GPU run"
    return 1, "assumed (pass --gpus)", [note]


def steps(f: Facts, micro: int, accum: int, procs: int) -> tuple[int | None, int | None]:
    """(optimizer steps per epoch, in total) as the Trainer counts them; None without the row count."""
    max_steps = arg(f, "max_steps")
    if f.train_rows is None:
        return None, (int(max_steps) if _num(max_steps) and max_steps > 0 else None)
    per_epoch = steps_for(f.train_rows, micro, accum, procs, 1)
    if _num(max_steps) and max_steps > 0:
        return per_epoch, int(max_steps)
    # Trainer: max_steps = ceil(num_train_epochs x num_update_steps_per_epoch)
    return per_epoch, math.ceil(float(arg(f, "num_train_epochs") or 3.0) * per_epoch)


def trainer_warmup(f: Facts, total: int | None) -> tuple[int | None, str]:
    """TrainingArguments.get_warmup_steps: an integer count, or a fraction (< 1) of the total steps
    (transformers 5 folds warmup_ratio into warmup_steps; the loader maps the old key)."""
    w = arg(f, "warmup_steps") or 0
    if w >= 1:
        return int(w), f"{int(w)} steps (warmup_steps {int(w)})"
    if w <= 0:
        return 0, "0 steps (warmup_steps not set: 0)" if not f.training_args.get(
            "warmup_steps"
        ) else "0 steps"
    if total is None:
        return None, f"{w:.0%} of the optimizer steps (warmup_steps {w:g})"
    n = math.ceil(total * w)
    return n, f"{n} steps ({w:.0%} of {total}: warmup_steps {w:g})"


# DeepSpeed's scheduler defaults (deepspeed/runtime/lr_schedules.py) for the keys a config may omit.
_WARMUP_LR = {"warmup_min_lr": 0.0, "warmup_max_lr": 0.001, "warmup_num_steps": 1000, "warmup_type": "log"}
DS_SCHED_DEFAULTS: dict[str, dict[str, Any]] = {
    "WarmupLR": _WARMUP_LR,
    "WarmupDecayLR": _WARMUP_LR,
    "WarmupCosineLR": {
        "warmup_min_ratio": 0.0,
        "warmup_num_steps": 1000,
        "cos_min_ratio": 1e-4,
        "warmup_type": "log",
    },
}


def ds_schedule(f: Facts, total: int | None, lr: float) -> tuple[Schedule, int | None, str, dict[str, Any]]:
    """The DeepSpeed scheduler block as the run fills it: transformers' trainer_config_process /
    trainer_config_finalize fill warmup_max_lr <- learning_rate, warmup_min_lr <- 0, total_num_steps
    <- the step count and warmup_num_steps <- max(1, the Trainer's warmup steps) where they are "auto"."""
    block = (f.deepspeed or {})["scheduler"]
    kind = str(block.get("type", "?"))
    params = {**DS_SCHED_DEFAULTS.get(kind, {}), **dict(block.get("params") or {})}
    t_steps, t_text = trainer_warmup(f, total)
    if params.get("warmup_num_steps") == "auto":
        params["warmup_num_steps"] = max(1, t_steps) if t_steps is not None else None
        w_text = f"max(1, {t_text}): DeepSpeed warmup_num_steps auto"
        if t_steps is not None:
            n = params["warmup_num_steps"]
            plural = "s" if n != 1 else ""
            w_text = f"{n} step{plural}: DeepSpeed warmup_num_steps auto = max(1, the Trainer's {t_text})"
    else:
        w_text = f"{params.get('warmup_num_steps')} steps: DeepSpeed warmup_num_steps"
    for key, value in (("warmup_max_lr", lr), ("warmup_min_lr", 0.0), ("total_num_steps", total)):
        if params.get(key) == "auto":
            params[key] = value
    w = params.get("warmup_num_steps")
    over = f"over {w} step(s)" if w is not None else "over the warmup"
    wt = params.get("warmup_type", "log")
    if kind == "WarmupCosineLR":
        lo, end = float(params["warmup_min_ratio"]), float(params["cos_min_ratio"])
        text = (
            f"{wt} warmup {lo * lr:g} -> {lr:g} {over}, then cosine decay to {end * lr:g} "
            f"({end:g}x) at the last step"
        )
        decays = True
    elif kind in ("WarmupLR", "WarmupDecayLR"):
        peak = params.get("warmup_max_lr")
        text = f"{wt} warmup {params.get('warmup_min_lr')} -> {peak} {over}, then " + (
            "constant" if kind == "WarmupLR" else "linear decay to 0 at the last step"
        )
        decays = kind == "WarmupDecayLR"
    else:
        text, decays = f"DeepSpeed {kind} with {show(params)}", True
    sched = Schedule("DeepSpeed scheduler block (replaces lr_scheduler_type)", kind, text, decays)
    return sched, (int(w) if _num(w) else None), w_text, params


TRAINER_CURVES = {
    "linear": ("then linear decay to 0", True),
    "cosine": ("then cosine decay to 0", True),
    "cosine_with_restarts": ("then cosine decay with hard restarts", True),
    "polynomial": ("then polynomial decay", True),
    "constant_with_warmup": ("then constant", False),
    "inverse_sqrt": ("then inverse square-root decay", True),
    "cosine_with_min_lr": ("then cosine decay to the min_lr", True),
    "warmup_stable_decay": ("then stable, then decay", True),
}


def trainer_schedule(f: Facts, warmup: str, lr: float) -> Schedule:
    """transformers' get_scheduler for lr_scheduler_type (default "linear": decay to 0, not constant)."""
    kind = str(arg(f, "lr_scheduler_type") or "linear")
    given = f.training_args.get("lr_scheduler_type") is not None
    by = "Trainer lr_scheduler_type" if given else "Trainer lr_scheduler_type default (linear)"
    if kind == "constant":
        return Schedule(by, kind, f"constant {lr:g} (no warmup)", False)
    curve, decays = TRAINER_CURVES.get(kind, (f"then {kind}", True))
    return Schedule(by, kind, f"linear warmup 0 -> {lr:g} over {warmup}, {curve}", decays)


def scale_of(lora: dict[str, Any]) -> float:
    """The factor PEFT multiplies B·A by: alpha/r (Hu et al. 2021), alpha/sqrt(r) with use_rslora."""
    r, alpha = float(lora.get("r", 8)), float(lora.get("lora_alpha", 8))
    return alpha / math.sqrt(r) if lora.get("use_rslora") else alpha / r


def clipping_of(f: Facts) -> str:
    """Under DeepSpeed the Trainer's max_grad_norm only reads the norm (accelerate's clip_grad_norm_
    returns DeepSpeed's global norm): clipping is DeepSpeed's gradient_clipping, 0 (off) when absent."""
    if f.deepspeed is None:
        g = arg(f, "max_grad_norm")
        return f"max_grad_norm {g:g}" if _num(g) and g > 0 else "off"
    g = f.deepspeed.get("gradient_clipping")
    if g == "auto":
        g = arg(f, "max_grad_norm")
        return f"{g:g} (DeepSpeed gradient_clipping auto <- max_grad_norm)" if _num(g) and g > 0 else "off"
    if _num(g) and g > 0:
        return f"{g:g} (DeepSpeed gradient_clipping)"
    return "off (DeepSpeed gradient_clipping absent or 0; max_grad_norm is not applied under DeepSpeed)"


def resolve(f: Facts) -> Resolved:
    micro = int(arg(f, "per_device_train_batch_size") or 8)
    accum = int(arg(f, "gradient_accumulation_steps") or 1)
    procs, source, notes = processes_of(f, micro, accum)
    per_epoch, total = steps(f, micro, accum, procs)
    lr = float(arg(f, "learning_rate") or 5e-5)
    if f.deepspeed and isinstance(f.deepspeed.get("scheduler"), dict):
        sched, w_steps, w_text, params = ds_schedule(f, total, lr)
        if f.training_args.get("lr_scheduler_type") is not None:
            notes.append(
                f"lr_scheduler_type {f.training_args['lr_scheduler_type']!r} is ignored: the "
                "DeepSpeed scheduler block sets the learning rate"
            )
    else:
        w_steps, w_text = trainer_warmup(f, total)
        sched, params = trainer_schedule(f, w_text, lr), dict(arg(f, "lr_scheduler_kwargs") or {})
    r = Resolved(
        f,
        {},
        procs,
        source,
        micro,
        accum,
        per_epoch,
        total,
        w_steps,
        w_text,
        sched,
        scale_of(f.lora),
        clipping_of(f),
        notes,
    )
    r.settings = settings_of(r, params)
    return r


# ---- canonical settings --------------------------------------------------------------------------

# Keys the settings below cover by meaning; the rest of training_args is compared as written.
_TA_COVERED = _words(
    "learning_rate weight_decay optim adam_beta1 adam_beta2 adam_epsilon max_grad_norm num_train_epochs "
    "max_steps seed lr_scheduler_type lr_scheduler_kwargs warmup_steps per_device_train_batch_size "
    "gradient_accumulation_steps activation_checkpointing bf16 fp16 tf32 train_sampling_strategy deepspeed"
)
# DeepSpeed keys resolved into the settings above (auto filled from, or checked equal to, the Trainer's).
_DS_COVERED = _words(
    "train_micro_batch_size_per_gpu gradient_accumulation_steps train_batch_size gradient_clipping bf16 fp16 "
    "scheduler zero_optimization.stage zero_optimization.offload_optimizer zero_optimization.offload_param "
    "optimizer.params steps_per_print wall_clock_breakdown"
)
# DeepSpeed's defaults for keys a config may leave out (deepspeed/runtime/zero/config.py et al.).
DS_DEFAULTS = {
    "zero_optimization.overlap_comm": False,
    "zero_optimization.contiguous_gradients": True,
    "zero_optimization.reduce_scatter": True,
    "activation_checkpointing.partition_activations": False,
    "activation_checkpointing.cpu_checkpointing": False,
    "activation_checkpointing.contiguous_memory_optimization": False,
}
# PEFT's LoraConfig defaults for the keys rated below (an omitted key equals its default).
_LORA_DEFAULTS: dict[str, Any] = dict(
    r=8, lora_alpha=8, lora_dropout=0.0, use_rslora=False, use_dora=False, bias="none", init_lora_weights=True
)


def offload(ds: dict[str, Any] | None, block: str) -> str:
    node = ds_get(ds, f"zero_optimization.{block}")
    device = node.get("device", "none") if isinstance(node, dict) else "none"
    if device in ("none", None):
        return "none"
    pinned = isinstance(node, dict) and node.get("pin_memory")
    return f"{device}" + (" (pinned)" if pinned else "")


def lora_settings(f: Facts) -> dict[str, Any]:
    lora = {**_LORA_DEFAULTS, **{k: v for k, v in f.lora.items() if v is not None}}
    lora.pop("task_type", None)  # follows model.task
    p = f.planned
    if p is not None:
        lora["target_modules"] = (
            sorted(p.target_modules) if isinstance(p.target_modules, list) else p.target_modules
        )
        lora["layers_to_transform"] = p.layers if p.layers is not None else "all"
        lora["modules_to_save"] = sorted(p.modules_to_save)
        lora.pop("layers_pattern", None) if not p.layers else None
    elif isinstance(lora.get("target_modules"), list):
        lora["target_modules"] = sorted(lora["target_modules"])
    for k in ("rank_pattern", "alpha_pattern"):
        if not lora.get(k):
            lora.pop(k, None)
    return {f"lora.{k}": v for k, v in lora.items()}


def settings_of(r: Resolved, sched_params: dict[str, Any]) -> dict[str, Any]:
    f, s = r.facts, {}
    for k, v in f.model.items():
        if v is not None and v is not False:
            s[f"model.{k}"] = v
    s.update(lora_settings(f))
    for k, v in f.data.items():
        if v is not None:
            s[f"data.{k}"] = v
    s["data.max_length"] = f.max_length
    s["data.extract_ratio"] = f.data.get("extract_ratio") or 1.0
    s["data.train_sampling_strategy"] = arg(f, "train_sampling_strategy")
    for k in (
        "learning_rate",
        "weight_decay",
        "optim",
        "adam_beta1",
        "adam_beta2",
        "adam_epsilon",
        "num_train_epochs",
        "max_steps",
        "seed",
    ):
        s[f"optimisation.{k}"] = arg(f, k)
    s["optimisation.num_train_epochs"] = float(s["optimisation.num_train_epochs"] or 3.0)
    s["optimisation.gradient_clipping"] = r.clipping.split(" (")[0]
    s["optimisation.deepspeed_optimizer"] = ds_get(f.deepspeed, "optimizer.type")
    s["schedule.lr_schedule"] = f"{r.schedule.kind} ({r.schedule.set_by.split(' ')[0]})"
    s["schedule.warmup"] = r.warmup_steps if r.warmup_steps is not None else r.warmup_text.split(" (")[0]
    s["schedule.params"] = {k: v for k, v in sched_params.items() if k not in ("warmup_num_steps",)} or None
    s["batch.per_device_train_batch_size"] = r.micro
    s["batch.gradient_accumulation_steps"] = r.accum
    s["batch.processes"] = r.processes
    s["batch.activation_checkpointing"] = bool(arg(f, "activation_checkpointing"))
    for k in ("bf16", "fp16", "tf32"):
        s[f"precision.{k}"] = bool(arg(f, k))
    stage = ds_get(f.deepspeed, "zero_optimization.stage")
    s["distributed.deepspeed"] = f"ZeRO-{stage}" if f.deepspeed is not None else "none"
    s["distributed.offload_optimizer"] = offload(f.deepspeed, "offload_optimizer")
    s["distributed.offload_param"] = offload(f.deepspeed, "offload_param")
    if f.deepspeed is not None:
        for k, v in flatten(f.deepspeed).items():
            if not any(k == c or k.startswith(c + ".") for c in _DS_COVERED):
                s[f"distributed.{k}"] = v
    for k, v in f.training_args.items():
        if k not in _TA_COVERED:
            s[f"other.{k}"] = v
    return s


# ---- comparing -----------------------------------------------------------------------------------


def compare(a: Resolved, b: Resolved) -> list[Difference]:
    """Every canonical setting whose value differs, rated; a key one side lacks takes its default."""
    out: list[Difference] = []
    keys = list(dict.fromkeys([*a.settings, *b.settings]))
    for key in keys:
        va, vb = a.settings.get(key, _default(a, key)), b.settings.get(key, _default(b, key))
        if _same(va, vb):
            continue
        group_key = key.partition(".")[0]
        group = "LoRA" if group_key == "lora" else group_key
        impact, why = rate(key, a, b, va, vb)
        out.append(Difference(display_key(key), va, vb, impact, why, group))
    order = {g: i for i, g in enumerate(GROUPS)}
    return sorted(out, key=lambda d: order.get(d.group, len(order)))


# Canonical keys shown under the name a user writes (or, for resolved quantities, what they are).
_SHOWN = {
    "data.train_sampling_strategy": "training_args.train_sampling_strategy",
    "optimisation.gradient_clipping": "gradient clipping (resolved)",
    "optimisation.deepspeed_optimizer": "deepspeed.optimizer.type",
    "schedule.lr_schedule": "learning-rate schedule (resolved)",
    "schedule.warmup": "warmup steps (resolved)",
    "schedule.params": "scheduler parameters (resolved)",
    "batch.processes": "processes",
    "distributed.deepspeed": "deepspeed.zero_optimization.stage",
    "distributed.offload_optimizer": "deepspeed.zero_optimization.offload_optimizer",
    "distributed.offload_param": "deepspeed.zero_optimization.offload_param",
}


def display_key(key: str) -> str:
    group, _, name = key.partition(".")
    if key in _SHOWN:
        return _SHOWN[key]
    if group in ("optimisation", "batch", "precision", "other"):
        return f"training_args.{name}"
    return f"deepspeed.{name}" if group == "distributed" else key


def _default(r: Resolved, key: str) -> Any:
    group, _, name = key.partition(".")
    if group == "other":
        return r.facts.ta_defaults.get(name)
    if group == "distributed" and r.facts.deepspeed is not None:
        return DS_DEFAULTS.get(name)
    return None


def _same(a: Any, b: Any) -> bool:
    if _num(a) and _num(b):
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    return bool(a == b)


# ---- impact ratings ------------------------------------------------------------------------------


def rate(key: str, a: Resolved, b: Resolved, va: Any, vb: Any) -> tuple[str, str]:
    """(impact, one sentence why) of one difference; the rule by key, else by its group."""
    group, _, name = key.partition(".")
    rule = _RULES.get(key) or (rate_other(name) if group == "other" else _GROUP_RULES.get(group))
    if rule is not None:
        return rule(a, b, va, vb)
    return "low", f"{name}: no rule rates this key; check its documentation"


def _lora_r(a: Resolved, b: Resolved, va: Any, vb: Any) -> tuple[str, str]:
    pa, pb = a.facts.planned, b.facts.planned
    more = f"; LoRA parameters {times(pa.lora_params, pb.lora_params)}" if pa and pb else ""
    if _same(a.scale, b.scale):
        return "medium", (
            f"rank {show(va)} -> {show(vb)} changes capacity{more}; the scale PEFT applies "
            f"({scale_name(a)}) is {a.scale:g} in both, so the update size is unchanged ({HU})"
        )
    return "high", (
        f"rank {show(va)} -> {show(vb)} changes capacity{more} and the scale "
        f"{a.scale:g} -> {b.scale:g} ({HU}; {RSLORA})"
    )


def scale_name(r: Resolved) -> str:
    return "alpha/sqrt(r)" if r.facts.lora.get("use_rslora") else "alpha/r"


def _lora_alpha(a: Resolved, b: Resolved, va: Any, vb: Any) -> tuple[str, str]:
    if _same(a.scale, b.scale):
        return "none", (
            f"alpha enters only through the scale {scale_name(a)}, which is {a.scale:g} in "
            f"both: {show(va)} -> {show(vb)} just follows the rank ({HU})"
        )
    return "high", (
        f"the scale {scale_name(a)} goes {a.scale:g} -> {b.scale:g}: it multiplies every "
        f"adapter update like a learning rate on B·A ({HU}; {RSLORA})"
    )


def _rslora(a: Resolved, b: Resolved, va: Any, vb: Any) -> tuple[str, str]:
    return (
        "high",
        f"the scale becomes alpha/sqrt(r) instead of alpha/r: {a.scale:g} -> {b.scale:g} ({RSLORA})",
    )


def _layers(a: Resolved, b: Resolved, va: Any, vb: Any) -> tuple[str, str]:
    def n(v: Any) -> str:
        return f"{len(v)} layers ({show(v)})" if isinstance(v, list) else f"{show(v)} layers"

    only = ""
    if isinstance(va, list) and isinstance(vb, list):
        ao, bo = sorted(set(va) - set(vb)), sorted(set(vb) - set(va))
        only = "; " + "; ".join(
            x
            for x in (f"only A adapts {show(ao)}" if ao else "", f"only B adapts {show(bo)}" if bo else "")
            if x
        )
    return (
        "medium",
        f"adapters on {n(va)} vs {n(vb)}{only}: which depths adapt changes what the model can learn",
    )


def _targets(a: Resolved, b: Resolved, va: Any, vb: Any) -> tuple[str, str]:
    return "high", (
        f"different modules get adapters; adapting the MLP as well as attention learns more "
        f"than attention alone ({BIDERMAN})"
    )


def _lr(a: Resolved, b: Resolved, va: Any, vb: Any) -> tuple[str, str]:
    return "high", f"the peak learning rate sets the size of every update: {times(va, vb)}"


def _epochs(a: Resolved, b: Resolved, va: Any, vb: Any) -> tuple[str, str]:
    r = ratio(va, vb)
    big = r is not None and (r >= 1.5 or r <= 1 / 1.5)
    tot = ""
    if a.total_steps and b.total_steps:
        tot = f" ({a.total_steps:,} vs {b.total_steps:,} optimizer steps)"
    return ("high" if big else "medium"), (
        f"{show(va)} vs {show(vb)} passes over the data{tot}: more passes fit the training set closer, "
        "with more risk of over-fitting"
    )


def _weight_decay(a: Resolved, b: Resolved, va: Any, vb: Any) -> tuple[str, str]:
    lra, lrb = (
        float(a.settings["optimisation.learning_rate"]),
        float(b.settings["optimisation.learning_rate"]),
    )
    sa, sb = lra * float(va or 0), lrb * float(vb or 0)
    impact = "low" if max(sa, sb) < 1e-5 else "medium"
    return impact, (
        f"AdamW's decoupled decay shrinks the adapter weights by lr x weight_decay per step: "
        f"{sa:.2g} vs {sb:.2g} (Loshchilov & Hutter 2019)"
    )


def _batch(a: Resolved, b: Resolved, va: Any, vb: Any) -> tuple[str, str]:
    ea, eb = a.effective_batch, b.effective_batch
    if ea == eb:
        return "low", (
            f"the effective batch is {ea} in both (processes x micro-batch x accumulation): the "
            "gradient averaged per update is the same; memory and speed per step change"
        )
    return "high", (
        f"the effective batch goes {ea} -> {eb}: gradient noise and steps per epoch change, "
        "and the learning rate is usually scaled with it (Goyal et al. 2017)"
    )


def _checkpointing(a: Resolved, b: Resolved, va: Any, vb: Any) -> tuple[str, str]:
    return "low", (
        "activation (gradient) checkpointing recomputes each layer's forward in backward: the same "
        "result, less activation memory, ~30% slower steps; DeepSpeed's activation_checkpointing "
        f"block does not turn it on for HF models ({HF_DS})"
    )


def _schedule(a: Resolved, b: Resolved, va: Any, vb: Any) -> tuple[str, str]:
    sa, sb = a.schedule, b.schedule
    impact = "medium" if sa.decays == sb.decays else "high"
    return impact, (
        f"A: {sa.kind}, from the {sa.set_by}; B: {sb.kind}, from the {sb.set_by}. A DeepSpeed scheduler "
        "block replaces the Trainer's lr_scheduler_type, whose default 'linear' decays to 0 (not a constant "
        f"rate) ({HF_DS}; transformers get_scheduler)"
    )


def _warmup(a: Resolved, b: Resolved, va: Any, vb: Any) -> tuple[str, str]:
    return "medium", (
        f"A: {a.warmup_text}; B: {b.warmup_text}. Warmup keeps the first updates of fresh adapters "
        "and a fresh head small"
    )


def _offload(a: Resolved, b: Resolved, va: Any, vb: Any) -> tuple[str, str]:
    return "low", (
        f"optimizer states and the optimizer step move to the CPU: less GPU memory per device, "
        f"slower steps (PCIe transfers, CPU Adam); the maths is the same ({OFFLOAD})"
    )


def _stage(a: Resolved, b: Resolved, va: Any, vb: Any) -> tuple[str, str]:
    return "low", (
        "ZeRO shards optimizer states, gradients (and parameters at stage 3) across processes: "
        "same maths, different memory per device and communication (Rajbhandari et al. 2020)"
    )


def _ds_generic(a: Resolved, b: Resolved, va: Any, vb: Any) -> tuple[str, str]:
    return "none", "a DeepSpeed tuning knob: speed and memory, not the maths of training"


def _ds_activation(a: Resolved, b: Resolved, va: Any, vb: Any) -> tuple[str, str]:
    return "none", (
        f"HF models ignore DeepSpeed's activation_checkpointing block ({HF_DS}); gradient "
        "checkpointing is training_args.activation_checkpointing"
    )


def _max_length(a: Resolved, b: Resolved, va: Any, vb: Any) -> tuple[str, str]:
    r = ratio(va, vb)
    impact = "medium" if r is not None and (r >= 1.5 or r <= 1 / 1.5) else "low"
    lo = min(va, vb) if _num(va) and _num(vb) else va
    return impact, (
        f"rows longer than {show(lo)} tokens are cut shorter on one side; shorter rows are the "
        "same (batches pad to their longest row); memory per step grows with the limit"
    )


def _fixed(impact: str, why: str) -> Any:
    def rule(a: Resolved, b: Resolved, va: Any, vb: Any) -> tuple[str, str]:
        return impact, why

    return rule


_BOOKKEEPING_PREFIXES = _words(
    "output_dir logging_ save_ eval_ report_to run_name push_to_hub hub_ dataloader_ disable_tqdm project "
    "per_device_eval_batch_size trackio_ include_ metric_for_best_model greater_is_better"
    # the Trainer never reads these: example scripts (and LLaMA-Factory) use them to pick the steps to run
    " do_train do_eval do_predict"
)


def _other(a: Resolved, b: Resolved, va: Any, vb: Any) -> tuple[str, str]:
    """A TrainingArguments key without its own rule: bookkeeping, or an option to check by hand."""
    return "medium", "a TrainingArguments option that changes training; check its documentation"


def rate_other(name: str) -> Any:
    if name.startswith(_BOOKKEEPING_PREFIXES):
        return _fixed("none", "bookkeeping: where and when results are written, logged or evaluated")
    return _other


_RULES: dict[str, Any] = {
    "model.name_or_path": _fixed("high", "a different base model"),
    "model.task": _fixed("high", "a different task (head and loss)"),
    "model.num_labels": _fixed("high", "a different classification head"),
    "model.torch_dtype": _fixed("medium", "the base weights load in a different precision"),
    "model.quantization": _fixed(
        "high",
        "a quantized base changes the frozen weights the adapters correct (Dettmers et al. 2023, QLoRA)",
    ),
    "model.attn_implementation": _fixed("low", "the same attention, another kernel: speed and memory"),
    "lora.r": _lora_r,
    "lora.lora_alpha": _lora_alpha,
    "lora.use_rslora": _rslora,
    "lora.use_dora": _fixed("medium", "DoRA adds a trained magnitude vector (Liu et al. 2024)"),
    "lora.lora_dropout": _fixed("low", "dropout on the adapters' input: a regulariser"),
    "lora.target_modules": _targets,
    "lora.layers_to_transform": _layers,
    "lora.modules_to_save": _fixed("high", "different modules train in full (a head trained or not)"),
    "lora.init_lora_weights": _fixed("medium", "a different adapter initialisation (PiSSA, OLoRA, ...)"),
    "lora.bias": _fixed("low", "base biases train or not"),
    "data.max_length": _max_length,
    "data.extract_ratio": _fixed("high", "a different share of the training rows"),
    "data.train_sampling_strategy": _fixed(
        "low", "the order batches are drawn in (group_by_length groups similar lengths for speed)"
    ),
    "data.class_weights": _fixed("medium", "a different loss weighting of the classes"),
    "optimisation.learning_rate": _lr,
    "optimisation.weight_decay": _weight_decay,
    "optimisation.num_train_epochs": _epochs,
    "optimisation.max_steps": _epochs,
    "optimisation.optim": _fixed("medium", "a different optimizer"),
    "optimisation.deepspeed_optimizer": _fixed(
        "medium", "DeepSpeed's optimizer replaces the Trainer's optim"
    ),
    "optimisation.gradient_clipping": _fixed("medium", "clipping bounds an update after a gradient spike"),
    "optimisation.seed": _fixed("low", "run-to-run noise (initialisation and data order)"),
    "schedule.lr_schedule": _schedule,
    "schedule.warmup": _warmup,
    "schedule.params": _fixed("medium", "the learning-rate curve's parameters differ"),
    "batch.per_device_train_batch_size": _batch,
    "batch.gradient_accumulation_steps": _batch,
    "batch.processes": _batch,
    "batch.activation_checkpointing": _checkpointing,
    "precision.bf16": _fixed("medium", "mixed precision on or off changes the numerics"),
    "precision.fp16": _fixed("medium", "fp16 needs loss scaling; its range is narrower than bf16's"),
    "precision.tf32": _fixed("low", "TF32 matmuls: faster, slightly less precise"),
    "distributed.deepspeed": _stage,
    "distributed.offload_optimizer": _offload,
    "distributed.offload_param": _offload,
    "other.eval_strategy": _fixed(
        "low", "evaluation only; it changes the result only with load_best_model_at_end"
    ),
}
_GROUP_RULES: dict[str, Any] = {
    "model": _fixed("medium", "a different model loading option"),
    "lora": _fixed("medium", "a different LoraConfig option"),
    "data": _fixed("high", "different training data or fields"),
    "distributed": _ds_generic,
}
for _k in (
    "partition_activations",
    "cpu_checkpointing",
    "contiguous_memory_optimization",
    "number_checkpoints",
    "synchronize_checkpoint_boundary",
    "profile",
):
    _RULES[f"distributed.activation_checkpointing.{_k}"] = _ds_activation
