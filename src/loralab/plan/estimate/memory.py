"""Memory per device for one LoRA training step: every term separately, and a verdict.

Terms (bytes):
- weights / trainable / gradients / optimizer: the model states (`loralab.plan.estimate.state_memory`), with
  the load dtype, bitsandbytes layouts, PEFT's fp32 adapters, and ZeRO sharding or CPU offload;
- activations: what the step keeps for backward (`loralab.plan.estimate.activation_models`, a replay of the
  family's forward checked against saved_tensors_hooks);
- transient: the largest short-lived allocation on top of those: the loss over the vocabulary
  (logits, their float32 copy, and the gradients of log-softmax and logits in backward), or a
  layer's backward buffers (plus, under gradient checkpointing, the layer's recomputed activations);
- overhead: an allowance outside `max_memory_allocated`: the CUDA context and cuBLAS workspace
  (PyTorch's CUDA semantics notes: a few hundred MB up to ~1 GB depending on GPU and CUDA version;
  we take 1 GiB) plus 5% of the rest for the caching allocator's fragmentation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from loralab.arch.hf import hidden_size, max_positions
from loralab.plan.estimate.activation_models import UnsupportedFamily, estimate_activations
from loralab.plan.estimate.activations import DTYPE_BYTES, ActivationEstimate, ActivationSetup
from loralab.plan.estimate.state_memory import state_memory

GIB = 2**30
CONTEXT_ALLOWANCE = GIB
FRAGMENTATION = 0.05
DEVICE_TERMS = ("weights", "trainable", "gradients", "optimizer", "activations", "transient", "overhead")
HOST_TERMS = ("weights", "trainable", "gradients", "optimizer")


@dataclass(frozen=True)
class TrainSetup:
    """What decides memory besides the architecture and the LoRA config."""

    micro_batch: int = 8
    seq_len: int = 512
    gradient_accumulation_steps: int = 1
    gradient_checkpointing: bool = False
    attn_implementation: str = "sdpa"
    load_dtype: str = "bfloat16"
    autocast: str | None = None  # training_args bf16/fp16 outside DeepSpeed
    optim: str = "adamw_torch_fused"
    optim_args: str | None = None
    quantization: Any = None  # loralab.plan.estimate.state_memory.Quantization
    sharding: Any = None  # loralab.plan.estimate.state_memory.Sharding (None: one device, no DeepSpeed)
    device: str = "cuda"
    padded: bool = True
    decoder_len: int | None = None

    @property
    def gpus(self) -> int:
        return int(getattr(self.sharding, "gpus", 1) or 1)

    def activation_setup(self) -> ActivationSetup:
        dtype = self.load_dtype
        if self.quantization is not None:  # bitsandbytes layers compute in the compute dtype
            dtype = str(getattr(self.quantization, "compute_dtype", None) or "float32")
        adapter_dtype, autocast = "float32", self.autocast
        if ds_half(self.sharding):
            # DeepSpeed's engine casts the whole module (adapters included) to bf16/fp16 and runs
            # no torch autocast (runtime/engine.py `_configure_distributed_model`)
            dtype = adapter_dtype = ds_half(self.sharding) or dtype
            autocast = None
        return ActivationSetup(
            micro_batch=self.micro_batch,
            seq_len=self.seq_len,
            dtype=dtype,
            autocast=autocast,
            attn_implementation=self.attn_implementation,
            gradient_checkpointing=self.gradient_checkpointing,
            device=self.device,
            padded=self.padded,
            decoder_len=self.decoder_len,
            adapter_dtype=adapter_dtype,
        )


def ds_half(sharding: Any) -> str | None:
    """The half dtype DeepSpeed trains in, or None outside DeepSpeed / in fp32."""
    if sharding is None or getattr(sharding, "zero_stage", None) is None:
        return None
    return getattr(sharding, "mixed_precision", None) or None


@dataclass
class MemoryEstimate:
    per_device: dict[str, int]
    host: dict[str, int]
    activations: ActivationEstimate
    setup: TrainSetup
    budget: int | None = None
    fits: bool | None = None
    max_micro_batch: int | None = None
    max_seq_len: int | None = None
    notes: list[str] = field(default_factory=list)
    modelled: bool = True  # False: the family has no activation model; the total is a lower bound

    def to_json(self) -> dict[str, Any]:
        setup = asdict(self.setup)
        for k in ("quantization", "sharding"):
            v = getattr(self.setup, k)
            setup[k] = v.to_json() if hasattr(v, "to_json") else (asdict(v) if v is not None else None)
        return {
            "per_device": dict(self.per_device),
            "host": dict(self.host),
            "gpus": self.setup.gpus,
            "activations_by_part": dict(self.activations.by_part),
            "budget": self.budget,
            "fits": self.fits,
            "max_micro_batch": self.max_micro_batch,
            "max_seq_len": self.max_seq_len,
            "activations_modelled": self.modelled,
            "setup": setup,
            "notes": list(self.notes),
        }


def _vocab(plan: Any, cfg: dict[str, Any]) -> int:
    arch = plan.arch
    out = arch.output_embedding
    for m in arch.modules:
        if m.name == out:
            return int(m.out_features or 0)
    return int(cfg.get("vocab_size") or 0)


def transient_bytes(plan: Any, cfg: dict[str, Any], setup: TrainSetup, act: ActivationEstimate) -> int:
    """The largest temporary on top of the kept activations (module docstring)."""
    a = setup.activation_setup()
    dt = DTYPE_BYTES[a.autocast or a.dtype]
    b, s = setup.micro_batch, setup.seq_len
    head = 0
    if plan.arch.task != "seq-cls":
        rows = b * (setup.decoder_len or s if plan.arch.is_encoder_decoder else s)
        v = _vocab(plan, cfg)
        # forward: logits + their .float() copy; backward: d(log_softmax) and d(logits) in float32
        # plus the cast back to the logits' dtype
        head = max(rows * v * (dt + (4 if dt != 4 else 0)), rows * v * (8 + dt))
    in_layers = [m for m in plan.arch.modules if m.linear and m.layer is not None]
    widest = max((int(m.out_features or 0) for m in in_layers), default=0)
    hidden = hidden_size(cfg)
    # a layer's backward holds the incoming and outgoing hidden-state gradients and the gradient of
    # its widest intermediate; checkpointing also rebuilds the layer's own activations first
    layer = b * s * (2 * hidden + 2 * widest)
    layer *= dt
    if setup.gradient_checkpointing:
        layer += act.largest_layer
    return max(head, layer)


def estimate_memory(
    plan: Any, cfg: dict[str, Any], setup: TrainSetup, *, budget: int | None = None, search: bool = True
) -> MemoryEstimate:
    """Every memory term per device (and on the host) for `plan` trained with `setup`."""
    states = state_memory(
        plan,
        load_dtype=setup.load_dtype,
        quant=setup.quantization,
        optim=setup.optim,
        optim_args=setup.optim_args,
        sharding=setup.sharding,
    )
    modelled = True
    try:
        act = estimate_activations(plan, cfg, setup.activation_setup())
    except UnsupportedFamily as e:
        act, modelled = ActivationEstimate(total=0, notes=[str(e)]), False
    per = {k: int(states.per_device.get(k, 0)) for k in HOST_TERMS}
    per["activations"] = act.total
    per["transient"] = transient_bytes(plan, cfg, setup, act) if modelled else 0
    subtotal = sum(per.values())
    per["overhead"] = CONTEXT_ALLOWANCE + int(FRAGMENTATION * subtotal)
    per["total"] = sum(per[k] for k in DEVICE_TERMS)
    host = {k: int(states.host.get(k, 0)) for k in HOST_TERMS}
    host["total"] = sum(host.values())
    est = MemoryEstimate(per_device=per, host=host, activations=act, setup=setup, budget=budget)
    est.notes.extend(getattr(states, "notes", []) or [])
    est.modelled = modelled
    if not modelled:
        est.notes.append(
            f"{act.notes[0]}: activations and the transient peak are not estimated, so the total is a "
            "lower bound (model states and the allowance only)"
        )
    if budget is not None:
        est.fits = per["total"] <= budget
        if not modelled:  # a lower bound can only tell that it does not fit
            est.fits = False if not est.fits else None
            return est
        if search:
            est.max_micro_batch = largest_fitting(plan, cfg, setup, budget, "micro_batch")
            est.max_seq_len = largest_fitting(plan, cfg, setup, budget, "seq_len")
    return est


def largest_fitting(plan: Any, cfg: dict[str, Any], setup: TrainSetup, budget: int, what: str) -> int:
    """The largest micro-batch (or sequence length, in steps of 64) whose total fits `budget`; 0 if
    none does. Totals grow monotonically in both, so doubling then bisection finds it."""
    step = 1 if what == "micro_batch" else 64
    # A length past a hard position table (GPT-2's n_positions, RoBERTa's offset) cannot run at all.
    limit = (
        4096
        if what == "micro_batch"
        else max_positions(cfg) or int(cfg.get("max_position_embeddings") or 131072)
    )

    def fits(n: int) -> bool:
        s = replace(setup, micro_batch=n) if what == "micro_batch" else replace(setup, seq_len=n * step)
        return estimate_memory(plan, cfg, s, budget=None, search=False).per_device["total"] <= budget

    if not fits(1):
        return 0
    lo, hi = 1, 2
    while hi * step <= limit and fits(hi):
        lo, hi = hi, hi * 2
    hi = min(hi, limit // step + 1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo * step
