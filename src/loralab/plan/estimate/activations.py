"""Activations a LoRA training step keeps for backward: a torch-free replay of the forward pass.

Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models",
arXiv:2205.05198, §4) count the bytes a transformer layer saves for backward op by op: every op
keeps what its backward formula needs (a matmul keeps its inputs, softmax its output, dropout its
mask). Their total (34sbh + 5as^2b per layer) assumes every weight trains. LoRA changes it: a
frozen weight's matmul only needs the weight to pass the gradient on (`dX = dY W`), so it keeps
no activation; only the adapters keep their inputs; and below the lowest layer that trains nothing
keeps anything, because no gradient flows there (seed 000 adapts layers 25-35 only).

So instead of one closed formula this module replays each family's forward pass on symbolic tensors
(`Act`: element count, dtype, requires-grad) with the shapes from the arch record, applying
PyTorch's autograd rules for what each op saves (tools/autograd/derivatives.yaml: `mul` keeps
`other` only if `self` needs a gradient, and so on) and counting each kept storage once.
`loralab plan --measure` checks the result against `saved_tensors_hooks` on a real twin.

Device semantics differ and are modelled: CUDA's dropout keeps a 1-byte bool mask
(`native_dropout`) where the CPU kernel keeps a mask in the input dtype; CUDA sdpa runs fused
kernels (flash/memory-efficient, which keep q, k, v, output and the log-sum-exp) even with dropout
where the CPU falls back to the math path (it materialises the score matrix) once dropout > 0; and
CUDA autocast runs softmax/layer_norm/log_softmax in float32.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from loralab.arch.records import ArchRecord, ModuleRecord

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "float64": 8, "int64": 8, "bool": 1}
# Activation functions by transformers' ACT2FN name -> tensors of the input's size they keep.
# gelu_new is a Python expression (transformers.activations.NewGELUActivation): pow keeps x, tanh
# keeps its output, and the final product keeps both factors (0.5*x and 1+tanh): four tensors.
# QuickGELU (x * sigmoid(1.702 x)) keeps x and the sigmoid's output.
ACT_SAVES = {
    "silu": 1,
    "swish": 1,
    "gelu": 1,
    "relu": 1,
    "gelu_pytorch_tanh": 1,
    "gelu_new": 4,
    "quick_gelu": 2,
    "tanh": 1,
}


@dataclass(frozen=True)
class ActivationSetup:
    """What decides the saved activations besides the architecture and the LoRA config."""

    micro_batch: int
    seq_len: int
    dtype: str = "bfloat16"  # activations' dtype: the load dtype (4-bit: the compute dtype)
    autocast: str | None = None  # "bfloat16"/"float16" when training_args bf16/fp16 turn on autocast
    attn_implementation: str = "sdpa"  # eager | sdpa | flash_attention_2 (transformers' names)
    gradient_checkpointing: bool = False
    device: str = "cuda"  # cuda | cpu: kernels keep different tensors (module docstring)
    padded: bool = True  # batches carry padding, so attention gets a mask
    decoder_len: int | None = None  # seq2seq: label length (default: seq_len)
    adapter_dtype: str = "float32"  # PEFT's autocast_adapter_dtype=True keeps LoRA weights in fp32
    input_requires_grad: bool = False  # enable_input_require_grads(): gradient flows to the bottom
    # prefix_cache: the embedding and the first k layers of the (single) stack ran once, ahead of
    # training; the step starts from their stored output, a tensor that needs no gradient
    cached_prefix_layers: int = 0
    cached_encoder: bool = False  # seq2seq: the whole encoder is cached, the decoder reads its output


@dataclass
class Act:
    """A symbolic tensor: `key` identifies its storage (views share it)."""

    key: int
    numel: int
    dtype: str
    rg: bool  # requires grad
    storage: int = 0  # elements of the underlying storage (a view keeps the whole storage alive)

    def __post_init__(self) -> None:
        self.storage = self.storage or self.numel

    def view(self, numel: int) -> Act:
        return Act(self.key, numel, self.dtype, self.rg, self.storage)


@dataclass
class ActivationEstimate:
    total: int  # bytes kept for backward during the step (what saved_tensors_hooks sees)
    by_part: dict[str, int] = field(default_factory=dict)  # "layers 25-35", "head", ...
    per_layer: dict[str, int] = field(default_factory=dict)  # "model.layers.25" -> bytes
    # The largest layer's own saved bytes: under checkpointing it is rebuilt during backward.
    largest_layer: int = 0
    notes: list[str] = field(default_factory=list)
    # Matmul FLOPs of the step (what torch.utils.flop_counter counts): forward, backward, and the
    # forward again of checkpointed layers under gradient checkpointing.
    flops_forward: int = 0
    flops_backward: int = 0
    flops_recompute: int = 0


@dataclass(frozen=True)
class Site:
    r: int
    dropout: float
    dora: bool = False  # LoraConfig(use_dora=True): PEFT's DoraLinearLayer / DoraEmbeddingLayer


class Tape:
    """Replays ops on `Act`s and records what autograd would keep for backward."""

    def __init__(self, setup: ActivationSetup, sites: dict[str, Site], arch: ArchRecord) -> None:
        self.s = setup
        self.sites = sites
        self.modules = {m.name: m for m in arch.modules}
        self.saved: dict[int, int] = {}
        self.part = "other"
        self.by_part: dict[str, int] = {}
        self._keys = itertools.count(1)
        self.shared: dict[str, Act] = {}
        self.layer_bytes: dict[str, int] = {}
        self.fwd = 0
        self.bwd = 0
        self.recompute = 0

    def shared_keys(self) -> set[int]:
        return {a.key for a in self.shared.values()}

    # ---- bookkeeping ------------------------------------------------------------------------------
    def new(self, numel: int, dtype: str, rg: bool) -> Act:
        return Act(next(self._keys), numel, dtype, rg)

    def save(self, *acts: Act) -> None:
        for a in acts:
            if a.key not in self.saved:
                nbytes = a.storage * DTYPE_BYTES[a.dtype]
                self.saved[a.key] = nbytes
                self.by_part[self.part] = self.by_part.get(self.part, 0) + nbytes

    def total(self) -> int:
        return sum(self.saved.values())

    def global_tensor(self, name: str, numel: int, dtype: str) -> Act:
        """A tensor computed once and shared by every layer (rotary cos/sin, the attention mask)."""
        if name not in self.shared:
            self.shared[name] = self.new(numel, dtype, False)
        return self.shared[name]

    # ---- dtype rules ------------------------------------------------------------------------------
    def cast(self, a: Act, dtype: str) -> Act:
        """`.to(dtype)`: a new storage unless the dtype already matches; keeps nothing."""
        return a if a.dtype == dtype else self.new(a.numel, dtype, a.rg)

    def low(self, a: Act) -> Act:
        """Autocast's lower-precision ops (linear, matmul, sdpa) cast their inputs first."""
        return self.cast(a, self.s.autocast) if self.s.autocast else a

    def fp32_op(self, a: Act) -> Act:
        """CUDA autocast runs softmax/log_softmax/layer_norm in float32 (autocast_mode.cpp fp32 list);
        the CPU autocast list leaves them in the input dtype."""
        if self.s.autocast and self.s.device == "cuda":
            return self.cast(a, "float32")
        return a

    def out_dtype(self, a: Act) -> str:
        return self.s.autocast if self.s.autocast else a.dtype

    # ---- ops --------------------------------------------------------------------------------------
    def dropout(self, x: Act, p: float) -> Act:
        if p <= 0:
            return x  # F.dropout(p=0) returns its input
        out = self.new(x.numel, x.dtype, x.rg)
        if x.rg:  # no autograd node (and no mask kept) when nothing needs a gradient
            mask_dtype = "bool" if self.s.device == "cuda" else x.dtype
            self.save(self.new(x.numel, mask_dtype, False))
        return out

    def linear(self, x: Act, name: str) -> Act:
        """A frozen Linear/Conv1D (keeps only its weight, a parameter) plus its LoRA branch if adapted."""
        m = self.modules[name]
        tokens = max(1, x.numel // int(m.in_features or 1))
        out_features = int(m.out_features or 0)
        site = self.sites.get(name)
        in_features = int(m.in_features or 0)
        # Under autocast a weight in another dtype is cast on every call and the copy is what the
        # backward multiplies by: kept when the input needs a gradient (autocast caches casts only
        # for trainable leaves, autocast_mode.cpp `can_try_cache`, but those are kept the same way).
        self.weight_copy(self.s.dtype, in_features * out_features, x.rg)
        # a matmul costs 2 FLOPs per multiply-add; a frozen weight's backward computes only dX
        mm = 2 * tokens * in_features * out_features
        self.fwd += mm
        self.bwd += mm if x.rg else 0
        base = self.new(tokens * out_features, self.out_dtype(x), x.rg)
        if site is None:
            return base
        # PEFT's Linear.forward: x.to(lora_A.weight.dtype), dropout, lora_A, lora_B, * scaling.
        xa = self.cast(x, self.s.adapter_dtype)
        xd = self.dropout(xa, site.dropout)
        self.save(self.low(xd))  # lora_A keeps its input (its weight trains)
        self.weight_copy(self.s.adapter_dtype, site.r * in_features, xd.rg)
        a_mm, b_mm = 2 * tokens * in_features * site.r, 2 * tokens * site.r * out_features
        # forward A and B; backward dB, d(h) through B, dA, and dX through A when x needs it
        self.fwd += a_mm + b_mm
        self.bwd += 2 * b_mm + a_mm + (a_mm if x.rg else 0)
        h = self.new(tokens * site.r, self.out_dtype(xd), True)
        self.save(self.low(h))  # lora_B keeps its input
        self.weight_copy(self.s.adapter_dtype, site.r * out_features, True)
        if site.dora:
            lora_out = self.new(tokens * out_features, self.out_dtype(h), True)
            self.dora_linear(name, site, xd, base, lora_out)
        return self.new(tokens * out_features, self.out_dtype(x), True)

    def dora_linear(self, name: str, site: Site, xd: Act, base: Act, lora_out: Act) -> None:
        """What PEFT's DoRA (Liu et al. 2024, arXiv:2402.09353) keeps on top of LoRA's A and B inputs.

        DoraLinearLayer.forward (peft 0.21, tuners/lora/dora.py) returns
        `(m / ||W + s*BA||_c - 1) * base + (m / ||W + s*BA||_c) * lora_B(lora_A(x)) * s`, with the
        norm detached as the paper's §4.3 proposes, so the norm's own graph is dropped once the
        forward returns (measured as `transient`, see loralab.plan.measure.saved) and what stays is:
        - the norm, (out,) in the adapter dtype: `magnitude / norm` keeps its divisor;
        - `base`, (tokens, out): `(scale - 1) * base` keeps it because the scale trains;
        - `scale - 1`, (out,), when `base` needs a gradient too;
        - `scale`, (out,), and the LoRA branch's output, (tokens, out): their product keeps both.
        """
        m = self.modules[name]
        n_in, n_out, a = int(m.in_features or 0), int(m.out_features or 0), self.s.adapter_dtype
        tokens = max(1, xd.numel // max(1, n_in))
        # get_lora_weight runs lora_B(lora_A(eye(in))) on every call: two matmuls in the forward
        # pass, and no backward, as only a detached copy of the product is used
        self.fwd += 2 * n_in * n_in * site.r + 2 * n_in * site.r * n_out
        self.save(self.new(n_out, a, False))  # the norm
        if site.dropout > 0:
            # DoraLinearVariant.forward: with dropout the base output is not x's but dropout(x)'s, so
            # PEFT recomputes F.linear(dropout(x), W.to(x.dtype)) (x is in the adapter dtype by then)
            base = self.dora_base(m, xd, tokens)
        elif m.has_bias:
            # the base layer's output minus its bias (a new tensor, in the promoted dtype)
            base = self.add(base, self.new(n_out, self.s.dtype, False))
        self.save(base)
        if base.rg:
            self.save(self.new(n_out, a, True))  # scale - 1
        self.save(self.new(n_out, a, True), lora_out)  # scale and the LoRA branch's output

    def dora_base(self, m: ModuleRecord, xd: Act, tokens: int) -> Act:
        """DoRA's F.linear(dropout(x), transpose(W.to(x.dtype), fan_in_fan_out)) for lora_dropout > 0."""
        n_in, n_out, a = int(m.in_features or 0), int(m.out_features or 0), self.s.adapter_dtype
        # W.to(x.dtype) is the frozen parameter itself when the model is loaded in the adapter dtype,
        # and a fresh copy otherwise; for Conv1D (fan_in_fan_out) PEFT's `transpose` wraps a
        # parameter's .T in a new nn.Parameter, which requires grad: the matmul then keeps its input
        # and computes a weight gradient nobody reads
        is_param = self.s.dtype == a
        w_rg = m.cls == "Conv1D" and is_param
        if w_rg:
            self.save(self.low(xd))
        if xd.rg:  # the weight, for dX: autocast's lower-precision copy, or the fresh copy
            if self.s.autocast and a != self.s.autocast:
                self.save(self.new(n_in * n_out, self.s.autocast, False))
            elif not is_param:
                self.save(self.new(n_in * n_out, a, False))
        mm = 2 * tokens * n_in * n_out
        self.fwd += mm
        self.bwd += mm * (int(xd.rg) + int(w_rg))
        return self.new(tokens * n_out, self.out_dtype(xd), xd.rg or w_rg)

    def weight_copy(self, weight_dtype: str, numel: int, needed: bool) -> None:
        if self.s.autocast and weight_dtype != self.s.autocast and needed:
            self.save(self.new(numel, self.s.autocast, False))

    def rmsnorm(self, x: Act, width: int) -> Act:
        """transformers' RMSNorm: x.float(), pow, mean, rsqrt, x * rsqrt, weight * h (frozen)."""
        if not x.rg:
            return self.new(x.numel, x.dtype, False)
        x32 = self.cast(x, "float32")
        self.save(x32, self.new(x.numel // width, "float32", False))
        return self.new(x.numel, x.dtype, True)

    def gemma_rmsnorm(self, x: Act, width: int) -> Act:
        """Gemma2RMSNorm: like Llama's in float32, then `* (1.0 + weight.float())`: a fresh float32
        tensor (not a parameter) that the multiplication keeps, one per call."""
        if not x.rg:
            return self.new(x.numel, x.dtype, False)
        self.save(self.cast(x, "float32"), self.new(x.numel // width, "float32", False))
        self.save(self.new(width, "float32", False))
        return self.new(x.numel, x.dtype, True)

    def layernorm(self, x: Act, width: int) -> Act:
        """native_layer_norm keeps its input, mean and rstd."""
        xin = self.fp32_op(x)
        if not x.rg:
            return self.new(x.numel, xin.dtype, False)
        # CUDA keeps mean/rstd in the accumulation type (float32 for half inputs); the CPU kernel
        # keeps them in the input dtype (measured on torch 2.13)
        half = xin.dtype in ("bfloat16", "float16")
        stat = "float32" if half and self.s.device == "cuda" else xin.dtype
        self.save(xin, self.new(x.numel // width, stat, False), self.new(x.numel // width, stat, False))
        return self.new(x.numel, xin.dtype, True)

    def act(self, x: Act, fn: str) -> Act:
        out = self.new(x.numel, x.dtype, x.rg)
        if x.rg:
            n = ACT_SAVES.get(fn, 1)
            self.save(out if fn in ("relu", "tanh") else x)  # relu and tanh keep their output
            for _ in range(n - 1):
                self.save(self.new(x.numel, x.dtype, False))
        return out

    def mul(self, a: Act, b: Act) -> Act:
        if b.rg:
            self.save(a)
        if a.rg:
            self.save(b)
        return self.new(max(a.numel, b.numel), a.dtype, a.rg or b.rg)

    def add(self, a: Act, b: Act) -> Act:
        dtype = "float32" if "float32" in (a.dtype, b.dtype) else a.dtype
        return self.new(max(a.numel, b.numel), dtype, a.rg or b.rg)

    def rope(self, x: Act, seq: int, head_dim: int) -> Act:
        """q * cos + rotate_half(q) * sin: the muls keep cos and sin (shared by all layers)."""
        if not x.rg:
            return self.new(x.numel, x.dtype, False)
        cos = self.global_tensor("cos", seq * head_dim, self.s.dtype)
        sin = self.global_tensor("sin", seq * head_dim, self.s.dtype)
        self.save(cos, sin)
        return self.new(x.numel, x.dtype, True)

    def attention(
        self,
        q: Act,
        k: Act,
        v: Act,
        *,
        b: int,
        heads: int,
        kv_heads: int,
        sq: int,
        sk: int,
        d: int,
        p: float,
        eager_fp32_softmax: bool = True,
        causal: bool = True,
        softcap: bool = False,
    ) -> Act:
        """Attention core: the kernel transformers' attn_implementation selects."""
        rg = q.rg or k.rg or v.rg
        out_numel = b * sq * heads * d
        unit = 2 * b * heads * sq * sk * d  # one of the attention matmuls (QK^T or PV)
        if not rg:
            self.fwd += 2 * unit
            return self.new(out_numel, self.out_dtype(q), False)
        impl = self.s.attn_implementation
        q, k, v = self.low(q), self.low(k), self.low(v)
        if impl in ("sdpa", "flash_attention_2") and (self.s.device == "cuda" or p == 0):
            # QK^T and PV forward; the fused backward recomputes QK^T and runs four more matmuls
            # (Dao 2023, FlashAttention-2 §3.1.2; torch.utils.flop_counter sdpa_backward_flop_count)
            self.fwd += 2 * unit
            self.bwd += 5 * unit
            if kv_heads != heads and self.s.padded and impl == "sdpa":
                # transformers repeats k/v for GQA when a mask is present (use_gqa_in_sdpa)
                k, v = (
                    self.new(b * sk * heads * d, k.dtype, True),
                    self.new(b * sk * heads * d, v.dtype, True),
                )
            out = self.new(out_numel, q.dtype, True)
            # flash / memory-efficient / CPU flash kernels keep q, k, v, out and the log-sum-exp; a
            # q/k/v that is a slice of a fused projection (GPT-NeoX's chunked qkv) is kept as the
            # kernel's contiguous copy, not as the whole fused storage
            q, k, v = (a if a.storage == a.numel else self.new(a.numel, a.dtype, True) for a in (q, k, v))
            self.save(q, k, v, out, self.new(b * heads * sq, "float32", False))
            if self.s.padded and impl == "sdpa":
                self.save(self.global_tensor("mask", b * sq * sk, "bool"))
            return out
        scores = b * heads * sq * sk
        dtype_in = q.dtype
        if kv_heads != heads:  # repeat_kv copies before the matmuls
            k, v = self.new(b * sk * heads * d, k.dtype, k.rg), self.new(b * sk * heads * d, v.dtype, v.rg)
        if impl != "eager":
            # sdpa's math fallback (aten _scaled_dot_product_attention_math) scales copies of q and
            # k, and reshapes the transposed (non-contiguous) v to 3-D: a copy as well
            # (on the CPU in float32 for half inputs: the math kernel upcasts them)
            mdt = "float32" if self.s.device == "cpu" and q.dtype in ("bfloat16", "float16") else q.dtype
            q, k = self.new(q.numel, mdt, q.rg), self.new(k.numel, mdt, k.rg)
            v = self.new(v.numel, mdt, v.rg)
        logits = self.matmul(q, k, scores, d, autocast=impl == "eager")
        if softcap and logits.rg:  # Gemma-2's cap * tanh(scores / cap): tanh keeps its output
            logits = self.new(logits.numel, logits.dtype, True)
            self.save(logits)
        if impl == "eager" and (causal or self.s.padded):
            # + the additive float mask, built in the model's dtype: promotes bf16 scores under autocast
            logits = self.add(logits, self.global_tensor("float_mask", sq * sk, self.s.dtype))
        if impl == "eager":
            # Llama-like eager_attention_forward: softmax in float32, then .to(q.dtype); GPT-2, BERT
            # and BART take the softmax in the scores' dtype (CUDA autocast: float32)
            sm = "float32" if eager_fp32_softmax else self.fp32_op(logits).dtype
            probs = self.cast(self.softmax(logits, sm), q.dtype)
        else:
            probs = self.softmax(logits, self.fp32_op(logits).dtype)
        out = self.matmul(self.dropout(probs, p), v, out_numel, sk, autocast=impl == "eager")
        if self.s.padded and impl != "eager":
            self.save(self.global_tensor("mask", b * sq * sk, "bool"))
        # transpose + reshape: a copy, in the inputs' dtype (the CPU math kernel casts back)
        return self.new(out.numel, dtype_in, out.rg)

    def matmul(self, a: Act, b: Act, numel: int, inner: int, *, autocast: bool = True) -> Act:
        """`matmul` keeps each operand only if the other one needs a gradient. It runs as bmm on
        3-D reshapes, so an operand that is a slice of a larger storage (GPT-NeoX's chunked qkv)
        is kept as its contiguous copy, not as the whole storage."""
        a, b = (x if x.storage == x.numel else self.new(x.numel, x.dtype, x.rg) for x in (a, b))
        mm = 2 * numel * inner  # `inner`: the contracted dimension
        self.fwd += mm
        self.bwd += mm * (int(a.rg) + int(b.rg))
        if autocast:  # a matmul under autocast (not one inside the sdpa kernel)
            a, b = self.low(a), self.low(b)
        if b.rg:
            self.save(a)
        if a.rg:
            self.save(b)
        return self.new(numel, a.dtype, a.rg or b.rg)

    def softmax(self, x: Act, dtype: str) -> Act:
        out = self.new(x.numel, dtype, x.rg)
        if x.rg:
            self.save(out)  # softmax's backward needs its output
        return out

    def cross_entropy(self, logits: Act, rows: int, classes: int, *, upcast: bool = True) -> None:
        """F.cross_entropy = log_softmax (keeps its output; transformers' LM losses call .float()
        first) + nll_loss (keeps the int64 target and the total weight)."""
        if not logits.rg:
            return
        # autocast runs cross_entropy/log_softmax in float32 on both CUDA and CPU (measured on the CPU:
        # BART's bf16 logits under CPU autocast keep a float32 log_softmax)
        dtype = "float32" if upcast or self.s.autocast else logits.dtype
        self.save(self.new(rows * classes, dtype, False))
        self.save(self.new(rows, "int64", False), self.new(1, "float32", False))
