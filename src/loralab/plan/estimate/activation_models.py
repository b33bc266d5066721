"""Per-family forward passes replayed on a `Tape`: which ops run, in which order, on what shapes.

Each function mirrors the transformers modeling code of its family (names in comments are
transformers' module names, the keys PEFT matches). Families share a program where the forward is
the same: Llama, Mistral, Qwen2/3 and EXAONE are one pre-norm RMSNorm + rotary + gated-MLP layer;
BERT-like encoders, GPT-2, BART-like encoder-decoders and GPT-NeoX each have their own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loralab.arch.records import ArchRecord
from loralab.plan.estimate.activations import Act, ActivationEstimate, ActivationSetup, Site, Tape

LLAMA_LIKE = frozenset({"llama", "mistral", "qwen2", "qwen3", "exaone", "olmo2", "granite", "phi3"})
BERT_LIKE = frozenset({"bert", "roberta", "xlm-roberta", "electra", "camembert"})
BART_LIKE = frozenset({"bart", "mbart"})
GPT2_LIKE = frozenset({"gpt2"})
NEOX_LIKE = frozenset({"gpt_neox"})
GEMMA2_LIKE = frozenset({"gemma2"})
SUPPORTED = LLAMA_LIKE | BERT_LIKE | BART_LIKE | GPT2_LIKE | NEOX_LIKE | GEMMA2_LIKE


class UnsupportedFamily(ValueError):
    """The family's forward pass has no replay here, so activations and FLOPs are not estimated."""


@dataclass(frozen=True)
class Dims:
    b: int
    s: int  # tokens per sequence in this stack
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    act: str


def _get(cfg: dict[str, Any], *keys: str, default: Any = None) -> Any:
    for k in keys:
        if cfg.get(k) is not None:
            return cfg[k]
    return default


def dims(cfg: dict[str, Any], b: int, s: int, *, prefix: str = "") -> Dims:
    hidden = int(_get(cfg, "hidden_size", "n_embd", "d_model"))
    heads = int(_get(cfg, f"{prefix}attention_heads", "num_attention_heads", "n_head"))
    kv = int(_get(cfg, "num_key_value_heads", default=heads))
    head_dim = int(_get(cfg, "head_dim", default=hidden // heads))
    act = str(_get(cfg, "hidden_act", "activation_function", "hidden_activation", default="gelu"))
    return Dims(b, s, hidden, heads, kv, head_dim, act)


# ---- layers --------------------------------------------------------------------------------------


def _rotary_attention(
    t: Tape, p: str, n: Act, d: Dims, cfg: dict[str, Any], norm: Callable[..., Act] | None
) -> Act:
    """q/k/v projections, optional per-head q/k norms (Qwen3), rotary, attention, o_proj."""
    q, k, v = (t.linear(n, p + f"self_attn.{m}_proj") for m in "qkv")
    if norm is not None and p + "self_attn.q_norm" in t.modules:
        q, k = norm(q, d.head_dim), norm(k, d.head_dim)
    q, k = t.rope(q, d.s, d.head_dim), t.rope(k, d.s, d.head_dim)
    a = t.attention(
        q,
        k,
        v,
        b=d.b,
        heads=d.heads,
        kv_heads=d.kv_heads,
        sq=d.s,
        sk=d.s,
        d=d.head_dim,
        p=float(cfg.get("attention_dropout") or 0.0),
        softcap=cfg.get("attn_logit_softcapping") is not None,  # Gemma-2: cap * tanh(scores / cap)
    )
    return t.linear(a, p + "self_attn.o_proj")


def _gated_mlp(t: Tape, p: str, n: Act, d: Dims) -> Act:
    g, u = t.linear(n, p + "mlp.gate_proj"), t.linear(n, p + "mlp.up_proj")
    return t.linear(t.mul(t.act(g, d.act), u), p + "mlp.down_proj")


def llama_layer(t: Tape, p: str, x: Act, d: Dims, cfg: dict[str, Any]) -> Act:
    """LlamaDecoderLayer (Qwen3 adds q_norm/k_norm over head_dim before rotary)."""
    x = t.add(x, _rotary_attention(t, p, t.rmsnorm(x, d.hidden), d, cfg, t.rmsnorm))  # input_layernorm
    return t.add(x, _gated_mlp(t, p, t.rmsnorm(x, d.hidden), d))  # post_attention_layernorm


def gemma2_layer(t: Tape, p: str, x: Act, d: Dims, cfg: dict[str, Any]) -> Act:
    """Gemma2DecoderLayer: Llama's layer with a norm after attention and after the MLP too, and
    tanh soft-capping of the attention scores (eager; transformers has no sdpa path for it)."""
    norm = t.gemma_rmsnorm
    # input_layernorm, then post_attention_layernorm on the attention output
    x = t.add(x, norm(_rotary_attention(t, p, norm(x, d.hidden), d, cfg, None), d.hidden))
    # pre_feedforward_layernorm, then post_feedforward_layernorm on the MLP output
    return t.add(x, norm(_gated_mlp(t, p, norm(x, d.hidden), d), d.hidden))


def gpt2_layer(t: Tape, p: str, x: Act, d: Dims, cfg: dict[str, Any]) -> Act:
    """GPT2Block: ln_1, fused c_attn (q, k, v are views of one storage), c_proj, ln_2, MLP."""
    resid_p = float(cfg.get("resid_pdrop") or 0.0)
    qkv = t.linear(t.layernorm(x, d.hidden), p + "attn.c_attn")
    q = k = v = qkv.view(qkv.numel // 3)
    a = t.attention(
        q,
        k,
        v,
        b=d.b,
        heads=d.heads,
        kv_heads=d.heads,
        sq=d.s,
        sk=d.s,
        d=d.head_dim,
        p=float(cfg.get("attn_pdrop") or 0.0),
        eager_fp32_softmax=False,
    )
    x = t.add(x, t.dropout(t.linear(a, p + "attn.c_proj"), resid_p))
    f = t.act(t.linear(t.layernorm(x, d.hidden), p + "mlp.c_fc"), d.act)
    return t.add(x, t.dropout(t.linear(f, p + "mlp.c_proj"), resid_p))


def bert_layer(t: Tape, p: str, x: Act, d: Dims, cfg: dict[str, Any]) -> Act:
    """BertLayer: post-norm self-attention and MLP, dropout before each residual LayerNorm."""
    drop = float(cfg.get("hidden_dropout_prob") or 0.0)
    q, k, v = (t.linear(x, p + f"attention.self.{m}") for m in ("query", "key", "value"))
    a = t.attention(
        q,
        k,
        v,
        b=d.b,
        heads=d.heads,
        kv_heads=d.heads,
        sq=d.s,
        sk=d.s,
        d=d.head_dim,
        p=float(cfg.get("attention_probs_dropout_prob") or 0.0),
        eager_fp32_softmax=False,
        causal=False,
    )
    o = t.dropout(t.linear(a, p + "attention.output.dense"), drop)
    x = t.layernorm(t.add(o, x), d.hidden)
    i = t.act(t.linear(x, p + "intermediate.dense"), d.act)
    o = t.dropout(t.linear(i, p + "output.dense"), drop)
    return t.layernorm(t.add(o, x), d.hidden)


def bart_layer(t: Tape, p: str, x: Act, d: Dims, cfg: dict[str, Any], enc: Act | None, s_enc: int) -> Act:
    """BartEncoderLayer / BartDecoderLayer (post-norm; the decoder adds cross-attention)."""
    drop = float(cfg.get("dropout") or 0.0)
    attn_p = float(cfg.get("attention_dropout") or 0.0)
    q, k, v = (t.linear(x, p + f"self_attn.{m}_proj") for m in "qkv")
    a = t.attention(
        q,
        k,
        v,
        b=d.b,
        heads=d.heads,
        kv_heads=d.heads,
        sq=d.s,
        sk=d.s,
        d=d.head_dim,
        p=attn_p,
        eager_fp32_softmax=False,
        causal=enc is not None,  # the decoder's self-attention
    )
    x = t.layernorm(t.add(x, t.dropout(t.linear(a, p + "self_attn.out_proj"), drop)), d.hidden)
    if enc is not None:  # encoder_attn: queries from the decoder, keys/values from the encoder
        q = t.linear(x, p + "encoder_attn.q_proj")
        k, v = t.linear(enc, p + "encoder_attn.k_proj"), t.linear(enc, p + "encoder_attn.v_proj")
        a = t.attention(
            q,
            k,
            v,
            b=d.b,
            heads=d.heads,
            kv_heads=d.heads,
            sq=d.s,
            sk=s_enc,
            d=d.head_dim,
            p=attn_p,
            eager_fp32_softmax=False,
            causal=False,
        )
        x = t.layernorm(t.add(x, t.dropout(t.linear(a, p + "encoder_attn.out_proj"), drop)), d.hidden)
    f = t.dropout(t.act(t.linear(x, p + "fc1"), d.act), float(cfg.get("activation_dropout") or 0.0))
    return t.layernorm(t.add(x, t.dropout(t.linear(f, p + "fc2"), drop)), d.hidden)


def neox_layer(t: Tape, p: str, x: Act, d: Dims, cfg: dict[str, Any]) -> Act:
    """GPTNeoXLayer with parallel residual (x + attn(ln1(x)) + mlp(ln2(x))), partial rotary."""
    drop = float(cfg.get("hidden_dropout") or 0.0)
    qkv = t.linear(t.layernorm(x, d.hidden), p + "attention.query_key_value")
    third = qkv.view(qkv.numel // 3)
    # transformers 5 keeps the factor in rope_parameters; older configs name it rotary_pct
    rope = cfg.get("rope_parameters") or {}
    pct = rope.get("partial_rotary_factor", cfg.get("rotary_pct", cfg.get("partial_rotary_factor", 1.0)))
    rot = int(d.head_dim * float(pct or 1.0))
    # rotary on the first `rot` dims of q and k, then cat with the rest: new q and k tensors
    q, k = t.rope(third, d.s, rot), t.rope(third, d.s, rot)
    a = t.attention(
        q,
        k,
        third,
        b=d.b,
        heads=d.heads,
        kv_heads=d.heads,
        sq=d.s,
        sk=d.s,
        d=d.head_dim,
        p=float(cfg.get("attention_dropout") or 0.0),
    )
    if t.s.device == "cpu" and a.storage == a.numel:
        # q comes out of torch.cat contiguous in (b, heads, s, d), the CPU kernel's output follows
        # that layout, so the transpose back to (b, s, hidden) copies (CUDA's kernels write (b, s, ...))
        a = t.new(a.numel, a.dtype, a.rg)
    o = t.dropout(t.linear(a, p + "attention.dense"), drop)
    f = t.act(t.linear(t.layernorm(x, d.hidden), p + "mlp.dense_h_to_4h"), d.act)
    f = t.dropout(t.linear(f, p + "mlp.dense_4h_to_h"), drop)
    return t.add(t.add(x, o), f)


# ---- whole models ---------------------------------------------------------------------------------

LayerFn = Callable[[Tape, str, Act, Dims, dict[str, Any]], Act]


def run_stack(
    t: Tape,
    prefix: str,
    n_layers: int,
    x: Act,
    fn: LayerFn,
    d: Dims,
    cfg: dict[str, Any],
    kwargs: tuple[Act, ...] = (),
    start: int = 0,
) -> Act:
    """Each layer from `start` on in turn (the layers below it are a cached prefix and do not run);
    under gradient checkpointing a layer keeps only its inputs, and its own activations come back for
    one layer at a time during backward (ActivationEstimate.largest_layer)."""
    for i in range(start, n_layers):
        name = f"{prefix}.{i}"
        t.part = name
        before = dict(t.saved)
        fwd0 = t.fwd
        out = fn(t, name + ".", x, d, cfg)
        if t.s.gradient_checkpointing and out.rg:  # backward first reruns the layer's forward
            t.recompute += t.fwd - fwd0
        own = {k: v for k, v in t.saved.items() if k not in before}
        t.layer_bytes[name] = sum(own.values())
        if t.s.gradient_checkpointing:
            for k in own:  # the checkpoint drops them; globals (cos/sin, mask) stay as kwargs
                if k not in t.shared_keys():
                    del t.saved[k]
            t.by_part[name] = 0
            if out.rg:  # the checkpoint holds the layer's inputs for the recomputation
                t.save(x, *kwargs)
            t.by_part[name] = sum(v for k, v in t.saved.items() if k not in before)
        x = out
    return x


def embed(t: Tape, arch: ArchRecord, b: int, s: int, hidden: int) -> Act:
    """Embedding output: no gradient unless an embedding trains (LoRA on it) or the inputs are made
    to require grad (enable_input_require_grads)."""
    t.part = "embeddings"
    name = arch.input_embedding
    site = t.sites.get(name or "")
    # transformers' gradient_checkpointing_enable() calls enable_input_require_grads() for models fed
    # input_ids (modeling_utils._activation_checkpointing_enable), so the gradient then reaches every
    # layer, even those below the lowest adapter.
    rg = t.s.input_requires_grad or t.s.gradient_checkpointing
    if site is not None:  # PEFT's Embedding: F.embedding(ids, lora_embedding_A.T) @ B
        # the lookup keeps the ids; the matmul keeps the looked-up rows (autocast: its lower-precision
        # copy of them and of B; the float32 rows themselves are then not kept)
        after_a = t.new(b * s * site.r, t.s.adapter_dtype, True)
        t.save(t.new(b * s, "int64", False), t.low(after_a))
        t.weight_copy(t.s.adapter_dtype, site.r * hidden, True)
        t.fwd += 2 * b * s * site.r * hidden  # the lookup is no matmul; @ lora_embedding_B is
        # dB, and the rows' gradient for A's (the lookup's own backward is a scatter-add)
        t.bwd += 2 * 2 * b * s * site.r * hidden
        if site.dora:
            # DoraEmbeddingLayer (peft tuners/lora/dora.py; DoRA, arXiv:2402.09353): `(A @ B).T` for the
            # detached weight norm (a forward matmul, no backward), then
            # `scale * base + scale * (rows @ B) * s` with scale = magnitude / norm: `magnitude / norm`
            # keeps the norm, the products keep the scale, the LoRA product and the base lookup
            vocab = int(t.modules[name or ""].in_features or 0)
            t.fwd += 2 * vocab * site.r * hidden
            a = t.s.adapter_dtype
            lora_out = t.new(b * s * hidden, t.out_dtype(after_a), True)
            t.save(t.new(hidden, a, False), t.new(hidden, a, True), lora_out)
            t.save(t.new(b * s * hidden, t.s.dtype, False))  # the base embedding output
        rg = True
    return t.new(b * s * hidden, t.s.dtype, rg)


def head_loss(t: Tape, arch: ArchRecord, x: Act, d: Dims, cfg: dict[str, Any], *, rows: int) -> None:
    """Final projection and loss for the task."""
    t.part = "head"
    if arch.task == "seq-cls" and arch.seq_cls_head:
        labels = int(arch.num_labels or 2)
        head = arch.seq_cls_head
        if arch.model_type in BERT_LIKE:  # BertPooler on the first token, dropout, classifier
            first = x.view(d.b * d.hidden)
            pooled = t.act(
                t.linear(first, "bert.pooler.dense" if "bert.pooler.dense" in t.modules else head), "tanh"
            )
            drop = cfg.get("classifier_dropout")
            pooled = t.dropout(
                pooled, float(drop if drop is not None else cfg.get("hidden_dropout_prob") or 0.0)
            )
            logits = _trained_linear(t, pooled, head, labels)
        else:  # score over every position, then the last non-pad token is gathered
            logits = _trained_linear(t, x, head, labels)
            if logits.rg:
                t.save(t.new(d.b, "int64", False), t.new(d.b, "int64", False))
            logits = t.new(d.b * labels, logits.dtype, logits.rg)
        t.cross_entropy(logits, d.b, labels, upcast=False)
        return
    out = arch.output_embedding or "lm_head"
    vocab = int(t.modules[out].out_features or 0) if out in t.modules else int(cfg.get("vocab_size") or 0)
    logits = t.linear(x, out) if out in t.modules else t.new(rows * vocab, x.dtype, x.rg)
    if arch.model_type in BART_LIKE:  # + final_logits_bias (a buffer in the load dtype)
        logits = t.add(logits, t.new(vocab, t.s.dtype, False))
    if cfg.get("final_logit_softcapping") is not None and logits.rg:  # Gemma-2: tanh keeps its output
        logits = t.new(logits.numel, logits.dtype, True)
        t.save(logits)
    t.cross_entropy(logits, rows, vocab, upcast=arch.model_type not in BART_LIKE)


def _trained_linear(t: Tape, x: Act, name: str, out_features: int) -> Act:
    """A modules_to_save copy: its weight trains, so it keeps its input."""
    if name in t.sites:
        return t.linear(x, name)
    t.save(t.low(x))
    n_in = max(1, int(t.modules[name].in_features or 1))
    mm = 2 * (x.numel // n_in) * n_in * out_features
    t.fwd += mm
    t.bwd += mm * (2 if x.rg else 1)  # dW, and dX when the input needs a gradient
    return t.new(x.numel // n_in * out_features, t.out_dtype(x), True)


def final_norm(t: Tape, arch: ArchRecord, x: Act, d: Dims) -> Act:
    t.part = "head"
    if arch.model_type in LLAMA_LIKE:
        return t.rmsnorm(x, d.hidden)
    if arch.model_type in GEMMA2_LIKE:
        return t.gemma_rmsnorm(x, d.hidden)
    if arch.model_type in (GPT2_LIKE | NEOX_LIKE):
        return t.layernorm(x, d.hidden)
    return x  # BERT and BART end on a LayerNorm inside their last layer


def eager_masks(t: Tape, mt: str, cfg: dict[str, Any], b: int, s: int) -> tuple[Act, ...]:
    """Eager attention gets a materialised (b, 1, s, s) additive mask in the model's dtype even for an
    unpadded batch (transformers' create_causal_mask); Gemma-2 builds a second, sliding-window one."""
    masks: tuple[Act, ...] = (t.global_tensor("eager_mask", b * s * s, t.s.dtype),)
    if mt in GEMMA2_LIKE and cfg.get("sliding_window"):
        masks += (t.global_tensor("eager_mask_sliding", b * s * s, t.s.dtype),)
    return masks


def replay(
    arch: ArchRecord, cfg: dict[str, Any], sites: dict[str, Site], setup: ActivationSetup
) -> ActivationEstimate:
    """Replay one training forward pass of `arch` and total what it keeps for backward."""
    t = Tape(setup, sites, arch)
    b, s = setup.micro_batch, setup.seq_len
    mt = arch.model_type
    if mt in BART_LIKE:
        s_dec = setup.decoder_len or s
        de, dd = dims(cfg, b, s, prefix="encoder_"), dims(cfg, b, s_dec, prefix="decoder_")
        if setup.cached_encoder:  # the stored last_hidden_state: the encoder does not run
            enc = t.new(b * s * de.hidden, setup.dtype, False)
        else:
            x = t.layernorm(embed(t, arch, b, s, de.hidden), de.hidden)  # layernorm_embedding
            x = t.dropout(x, float(cfg.get("dropout") or 0.0))
            enc = run_stack(
                t,
                "model.encoder.layers",
                arch.layers_per_stack["model.encoder.layers"],
                x,
                lambda tt, p, xx, d, c: bart_layer(tt, p, xx, d, c, None, s),
                de,
                cfg,
            )
        dec_masks: tuple[Act, ...] = ()
        if setup.gradient_checkpointing and setup.attn_implementation == "eager":  # the causal mask
            dec_masks = (t.global_tensor("eager_mask", b * s_dec * s_dec, setup.dtype),)
        y = t.layernorm(embed(t, arch, b, s_dec, dd.hidden), dd.hidden)
        y = t.dropout(y, float(cfg.get("dropout") or 0.0))
        y = run_stack(
            t,
            "model.decoder.layers",
            arch.layers_per_stack["model.decoder.layers"],
            y,
            lambda tt, p, xx, d, c: bart_layer(tt, p, xx, d, c, enc, s),
            dd,
            cfg,
            (enc, *dec_masks),
        )
        head_loss(t, arch, y, dd, cfg, rows=b * s_dec)
    else:
        d = dims(cfg, b, s)
        fn: LayerFn = {
            **dict.fromkeys(LLAMA_LIKE, llama_layer),
            **dict.fromkeys(GPT2_LIKE, gpt2_layer),
            **dict.fromkeys(BERT_LIKE, bert_layer),
            **dict.fromkeys(NEOX_LIKE, neox_layer),
            **dict.fromkeys(GEMMA2_LIKE, gemma2_layer),
        }[mt]
        ((prefix, n),) = arch.layers_per_stack.items()
        first = min(setup.cached_prefix_layers, n)
        if first:
            # the boundary layer's input read from the cache: a plain tensor, so the gradient stops
            # there even where enable_input_require_grads would carry it to the embedding
            x = t.new(b * s * d.hidden, setup.dtype, False)
        else:
            x = embed(t, arch, b, s, d.hidden)
            if mt in BERT_LIKE:  # embeddings' LayerNorm and dropout
                x = t.dropout(t.layernorm(x, d.hidden), float(cfg.get("hidden_dropout_prob") or 0.0))
            elif mt in GPT2_LIKE:
                x = t.dropout(x, float(cfg.get("embd_pdrop") or 0.0))
        kwargs: tuple[Act, ...] = ()
        if setup.gradient_checkpointing:  # tensors passed to every layer, held by each checkpoint
            if mt not in BERT_LIKE:
                kwargs += (t.global_tensor("position_ids", s, "int64"),)
            if setup.attn_implementation == "eager" and mt not in BERT_LIKE:
                kwargs += eager_masks(t, mt, cfg, b, s)
        x = run_stack(t, prefix, n, x, fn, d, cfg, kwargs, start=first)
        head_loss(t, arch, final_norm(t, arch, x, d), d, cfg, rows=b * s)
    return ActivationEstimate(
        total=t.total(),
        by_part=dict(t.by_part),
        per_layer=dict(t.layer_bytes),
        largest_layer=max(t.layer_bytes.values(), default=0),
        flops_forward=t.fwd,
        flops_backward=t.bwd,
        flops_recompute=t.recompute,
    )


def estimate_activations(plan: Any, cfg: dict[str, Any], setup: ActivationSetup) -> ActivationEstimate:
    """Saved activations of one micro-batch for a `Plan` (its arch record and matched modules)."""
    arch: ArchRecord = plan.arch
    if arch.model_type not in SUPPORTED:
        raise UnsupportedFamily(
            f"no activation model for model_type '{arch.model_type}' "
            f"(modelled: {', '.join(sorted(SUPPORTED))})"
        )
    dropout = float(plan.spec.lora_dropout or 0.0)
    dora = bool(plan.spec.use_dora)
    sites = {m.name: Site(r=m.r, dropout=dropout, dora=dora) for m in plan.counts.modules}
    return replay(arch, cfg, sites, setup)
