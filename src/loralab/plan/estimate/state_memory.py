"""Model states per device: frozen weights, trainable parameters, their gradients, optimizer states.

Pure arithmetic over the plan's records (no torch). Sources of each layout:
- PEFT casts adapter weights to float32 on a half-precision base (`autocast_adapter_dtype=True`,
  peft.tuners.tuners_utils `_cast_adapter_dtype`); `modules_to_save` copies and biases keep the
  load dtype. Seed 000 §2.4 counted 10 bytes per LoRA parameter; it is 4 + 4 + 8.
- torch.optim.AdamW keeps `exp_avg` and `exp_avg_sq` in the parameter's dtype and a float32 `step`
  tensor per parameter (torch/optim/adam.py `_init_group`); Trainer's "sgd" has no momentum, so no
  state; transformers' Adafactor (relative_step=False) keeps factored float32 second moments: one row
  and one column vector per matrix, the full tensor for vectors, and a float32 `RMS` scalar
  (transformers/optimization.py).
- bitsandbytes: 8-bit Adam keeps uint8 states with one float32 absmax per 256-element block for
  tensors of at least 4096 elements (`min_8bit_size`), 32-bit states below that; Linear4bit packs two
  4-bit values per byte with a float32 absmax per 64-element block, and with double quantization the
  absmaxes are themselves quantized to uint8 with a float32 scale per 256 of them plus an offset
  (bitsandbytes/functional.py `quantize_4bit`, QuantState); Linear8bitLt stores int8 weights with a
  float32 scale per output row (`SCB`). transformers keeps the output embedding / last module
  (the classification head) unquantized (`get_keys_to_not_convert`).
- DeepSpeed ZeRO (Rajbhandari et al. 2020, arXiv:1910.02054, §5): mixed-precision Adam holds 2 bytes
  of half weights, 2 of half gradients and K = 12 of fp32 master weights + momentum + variance per
  trained parameter; stage 1 shards the K bytes over the N ranks, stage 2 also the gradients, stage 3
  also the weights (frozen ones too). Here only the trainable parameters carry the K bytes: the
  optimizer only sees `requires_grad` parameters (Trainer.create_optimizer). CPU offload
  (ZeRO-Offload, Ren et al. 2021) moves the fp32 states and fp32 gradient partitions to host RAM.
- DDP without DeepSpeed: each rank keeps everything, and its gradient buckets are a second copy of
  the gradients (`gradient_as_bucket_view=False`, PyTorch's default, which Trainer keeps).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from loralab.plan.estimate.activations import DTYPE_BYTES

ADAM_STEP_BYTES = 4  # torch's `step` state: a float32 scalar tensor per parameter
BNB_8BIT_BLOCK = 256
BNB_8BIT_MIN_SIZE = 4096
BNB_4BIT_BLOCK = 64
BNB_NESTED_BLOCK = 256
ADAM_8BIT = ("adamw_8bit", "adamw_bnb_8bit", "paged_adamw_8bit", "adam8bit")
ADAM_32BIT = ("adamw_torch", "adamw_torch_fused", "adamw_hf", "adamw_torch_xla", "paged_adamw_32bit")
ZERO_K = 12  # fp32 master weights + Adam momentum + variance, bytes per trained parameter


@dataclass(frozen=True)
class Quantization:
    """bitsandbytes loading (`BitsAndBytesConfig` fields)."""

    bits: int  # 4 or 8
    quant_type: str = "nf4"
    double_quant: bool = False
    compute_dtype: str | None = None
    skip_modules: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, q: dict[str, Any]) -> Quantization | None:
        """From `model.quantization` (from_pretrained / BitsAndBytesConfig keys)."""
        if q.get("load_in_4bit"):
            return cls(
                bits=4,
                quant_type=str(q.get("bnb_4bit_quant_type") or "fp4"),  # BitsAndBytesConfig's default
                double_quant=bool(q.get("bnb_4bit_use_double_quant")),
                compute_dtype=_dtype_name(q.get("bnb_4bit_compute_dtype")) or "float32",
                skip_modules=tuple(q.get("llm_int8_skip_modules") or ()),
            )
        if q.get("load_in_8bit"):
            return cls(bits=8, skip_modules=tuple(q.get("llm_int8_skip_modules") or ()))
        return None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _dtype_name(v: Any) -> str | None:
    if v is None:
        return None
    s = str(v).replace("torch.", "")
    return {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "float": "float32"}.get(s, s)


@dataclass(frozen=True)
class Sharding:
    """How states are spread over devices: plain DDP (zero_stage None) or DeepSpeed ZeRO."""

    gpus: int = 1
    zero_stage: int | None = None
    offload_optimizer: str | None = None  # "cpu" / "nvme" / None
    offload_param: str | None = None
    mixed_precision: str | None = None  # DeepSpeed bf16/fp16 -> "bfloat16"/"float16"

    @classmethod
    def from_deepspeed(cls, ds: dict[str, Any], training_args: dict[str, Any], gpus: int) -> Sharding:
        """From a DeepSpeed config; "auto" values resolve the way transformers' HfTrainerDeepSpeedConfig
        fills them (from training_args bf16/fp16)."""
        zo = ds.get("zero_optimization") or {}
        stage = int(zo.get("stage", 0) or 0)

        def dev(block: Any) -> str | None:
            d = (block or {}).get("device") if isinstance(block, dict) else None
            return None if d in (None, "none") else str(d)

        def enabled(key: str, arg: str) -> bool:
            v = (ds.get(key) or {}).get("enabled", False)
            return bool(training_args.get(arg)) if v == "auto" else bool(v)

        half = "bfloat16" if enabled("bf16", "bf16") else "float16" if enabled("fp16", "fp16") else None
        return cls(
            gpus=gpus,
            zero_stage=stage,
            offload_optimizer=dev(zo.get("offload_optimizer")),
            offload_param=dev(zo.get("offload_param")) if stage == 3 else None,
            mixed_precision=half,
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Tensor:
    """One trainable tensor as the optimizer sees it."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * DTYPE_BYTES[self.dtype]


def trainable_tensors(plan: Any, *, load_dtype: str, adapter_dtype: str = "float32") -> list[Tensor]:
    """Every trainable tensor of the PEFT model, with its shape and dtype (names as PEFT's)."""
    out: list[Tensor] = []
    spec = plan.spec
    for m in plan.counts.modules:
        r, n_in, n_out = m.r, m.in_features, m.out_features
        if m.kind == "embedding":
            out.append(Tensor(f"{m.name}.lora_embedding_A", (r, n_in), adapter_dtype))
            out.append(Tensor(f"{m.name}.lora_embedding_B", (n_out, r), adapter_dtype))
        else:
            out.append(Tensor(f"{m.name}.lora_A.weight", (r, n_in), adapter_dtype))
            out.append(Tensor(f"{m.name}.lora_B.weight", (n_out, r), adapter_dtype))
            if spec.lora_bias:
                out.append(Tensor(f"{m.name}.lora_B.bias", (n_out,), adapter_dtype))
        if spec.use_dora:
            out.append(Tensor(f"{m.name}.lora_magnitude_vector", (n_out,), adapter_dtype))
    saved = list(plan.match.modules_to_save)
    for mod in plan.arch.modules:
        inside = any(mod.name == s or mod.name.startswith(s + ".") for s in saved)
        for p in mod.params:
            if inside:
                out.append(Tensor(f"{mod.name}.modules_to_save.{p.name}", tuple(p.shape), load_dtype))
    biased = {m.name for m in plan.counts.modules if m.bias_params}
    for mod in plan.arch.modules:
        if spec.bias == "all" or (spec.bias == "lora_only" and mod.name in biased):
            if any(mod.name == s or mod.name.startswith(s + ".") for s in saved):
                continue
            for p in mod.params:
                if p.name == "bias" and p.tied_to is None:
                    out.append(Tensor(f"{mod.name}.bias", tuple(p.shape), load_dtype))
    return out


def optimizer_bytes(tensors: list[Tensor], optim: str) -> int:
    """Bytes of `optimizer.state` after the first step (module docstring for each layout)."""
    o = optim.lower()
    total = 0
    for t in tensors:
        if o in ADAM_32BIT or o.startswith("adamw_torch") or o == "adamw_apex_fused":
            total += 2 * t.nbytes + ADAM_STEP_BYTES
        elif o in ADAM_8BIT or "8bit" in o:
            if t.numel >= BNB_8BIT_MIN_SIZE:
                total += 2 * (t.numel + 4 * math.ceil(t.numel / BNB_8BIT_BLOCK))
            else:
                total += 2 * 4 * t.numel
        elif o == "adafactor":
            if len(t.shape) >= 2:
                total += 4 * (math.prod(t.shape[:-1]) + math.prod(t.shape[:-2] + t.shape[-1:]))
            else:
                total += 4 * t.numel
            total += 4  # `RMS`: a float32 scalar tensor per parameter
        elif o == "sgd":
            total += 0
        else:
            raise ValueError(f"no optimizer-state model for optim={optim!r}")
    return total


def quantized_weight_bytes(numel: int, q: Quantization, out_features: int) -> int:
    """Bytes bitsandbytes stores for one quantized weight of `numel` elements."""
    if q.bits == 8:
        return numel + 4 * out_features  # int8 weight + SCB
    blocks = math.ceil(numel / BNB_4BIT_BLOCK)
    packed = math.ceil(numel / 2)
    if not q.double_quant:
        return packed + 4 * blocks + 4 * 16  # absmax per block + the 16-entry code
    nested = math.ceil(blocks / BNB_NESTED_BLOCK)
    # uint8 absmax + fp32 nested absmax + fp32 offset + 256-entry nested code + 16-entry code
    return packed + blocks + 4 * nested + 4 + 4 * 256 + 4 * 16


def base_weight_bytes(plan: Any, dtype: str, q: Quantization | None) -> tuple[int, int]:
    """(bytes of the frozen base weights, parameters made trainable from the base: biases)."""
    db = DTYPE_BYTES[dtype]
    trainable_base = plan.counts.bias_params
    if q is None:
        return (plan.arch.total_params - trainable_base) * db, trainable_base
    keep = {plan.arch.output_embedding, plan.arch.seq_cls_head, *q.skip_modules}
    total = 0
    for m in plan.arch.modules:
        for p in m.params:
            if p.tied_to is not None:
                continue
            kept = any(k and (m.name == k or m.name.startswith(k + ".")) for k in keep)
            if m.linear and p.name == "weight" and not kept:
                total += quantized_weight_bytes(p.numel, q, int(m.out_features or 0))
            else:
                total += p.numel * db
    return total - trainable_base * db, trainable_base


@dataclass
class StateMemory:
    per_device: dict[str, int]
    host: dict[str, int]
    trainable_params: int
    notes: list[str] = field(default_factory=list)


def state_memory(
    plan: Any,
    *,
    load_dtype: str,
    quant: Quantization | None = None,
    optim: str = "adamw_torch_fused",
    optim_args: str | None = None,
    sharding: Sharding | None = None,
) -> StateMemory:
    """Weights, trainable, gradients and optimizer bytes per device and in host RAM per process."""
    sh = sharding or Sharding()
    n = max(1, sh.gpus)
    notes: list[str] = []
    base_dtype = (quant.compute_dtype or "float32") if quant is not None else load_dtype
    half = sh.mixed_precision if sh.zero_stage is not None else None
    if half:
        # DeepSpeed's engine casts the whole module to its half dtype (adapters included)
        tensors = trainable_tensors(plan, load_dtype=half, adapter_dtype=half)
        weights, _ = base_weight_bytes(plan, half, quant)
    else:
        tensors = trainable_tensors(plan, load_dtype=base_dtype)
        weights, _ = base_weight_bytes(plan, base_dtype, quant)
    t_params = sum(t.numel for t in tensors)
    t_bytes = sum(t.nbytes for t in tensors)
    per = {"weights": weights, "trainable": t_bytes, "gradients": t_bytes, "optimizer": 0}
    host = {"weights": 0, "trainable": 0, "gradients": 0, "optimizer": 0}
    if sh.zero_stage is None:
        per["optimizer"] = optimizer_bytes(tensors, optim)
        if n > 1:
            per["gradients"] *= 2
            notes.append(
                "DDP: gradient buckets are a second copy of the gradients (gradient_as_bucket_view=False)"
            )
        return StateMemory(per, host, t_params, notes)

    stage = sh.zero_stage
    if half is None:
        # fp32 DeepSpeed: the optimizer works on the parameters themselves
        k = optimizer_bytes(tensors, optim)
    else:
        k = ZERO_K * t_params if _is_adam(optim) else optimizer_bytes(tensors, optim) + 4 * t_params
    states = k // n if stage >= 1 else k
    grads = t_bytes // n if stage >= 2 else t_bytes
    if stage >= 3:
        per["weights"] = weights // n
        per["trainable"] = t_bytes // n
    per["gradients"] = grads
    per["optimizer"] = states
    sharded = ("nothing", "optimizer states", "optimizer states and gradients")
    what = sharded[stage] if stage < 3 else "optimizer states, gradients and weights"
    notes.append(f"ZeRO-{stage} over {n} GPU(s): {what} sharded")
    # host RAM per process (rank): each rank offloads its own partition
    if sh.offload_optimizer:
        host["optimizer"] = states
        # the CPU optimizer steps on fp32 gradient partitions kept in host RAM
        host["gradients"] = 4 * t_params // n if stage >= 2 else 4 * t_params
        per["optimizer"] = 0
        notes.append(f"optimizer offload to {sh.offload_optimizer}: fp32 states and gradients in host RAM")
    if sh.offload_param and stage >= 3:
        host["weights"], host["trainable"] = per["weights"], per["trainable"]
        per["weights"] = per["trainable"] = 0
        notes.append(f"parameter offload to {sh.offload_param}: weights fetched per layer from host RAM")
    return StateMemory(per, host, t_params, notes)


def _is_adam(optim: str) -> bool:
    o = optim.lower()
    return "adam" in o
