"""The frozen-prefix activation cache (`prefix_cache: auto | on | off`) as a plan sees it.

Below the lowest layer that holds an adapter or any trainable parameter (the boundary) nothing
trains, so training may run those layers once per row, store the hidden states that enter the
boundary layer, and from then on run only the layers above (for a BART-like model with adapters only
in the decoder: the whole encoder, its last_hidden_state stored). This module decides, from the plan
alone, whether `train` will do that, and what it buys:

- boundary: the lowest layer index any LoRA module, `bias` parameter or modules_to_save copy lives
  in (an embedding, or anything named like one, counts as below layer 0; a head or final norm as
  above the last layer); for an encoder-decoder only "the whole encoder, or nothing" is modelled;
- used (the rules of `train`'s own decision, loralab.train.prefix_cache): `off` never; `auto` only
  where the cache is exact (no dropout with p > 0 in the prefix); `on` also where the prefix has
  dropout (it then runs in eval mode); neither with NEFTune (noise on the embeddings every step) or
  with batches padded on the left (a decoder-only row's positions then depend on its batch);
- bytes on disk: per split, tokens x hidden x the compute dtype's bytes + 8 bytes per row + 8;
- FLOPs: the training step replayed with and without the prefix (`activation_models.replay`, the
  same micro-batch and sequence length as the time estimate); their forward passes differ by
  exactly the prefix's forward, which is what building the cache costs per cached token.

Speedups are ratios of matmul FLOPs (so they do not depend on the GPU's rate), per token at the
plan's sequence length:
- step:  S_u / S_c, S = forward + backward + recomputed forward of one micro-batch;
- epoch: (s_u T + f_u V e) / (s_c T + f_c V e), with s = S per token, f = forward per token, T the
  training tokens, V the validation tokens and e the evaluations per epoch (1 for
  `eval_strategy: epoch`, 0 without evaluation: the epoch speedup is then the step speedup);
- run:   (E epoch_u + f_u X) / (E epoch_c + p (T + V + X) + f_c X), E epochs, X the test tokens (one
  scoring pass at the end) and p = f_u - f_c the prefix's forward per token, paid once by the build.
Not modelled: reading the cache from disk, elementwise ops, the optimizer step and data loading (the
matmul FLOPs are what the time estimate counts too), and any evaluation beyond e per epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from loralab.arch.hf import hidden_size
from loralab.arch.records import ArchRecord
from loralab.plan.estimate.activation_models import (
    BART_LIKE,
    BERT_LIKE,
    GPT2_LIKE,
    SUPPORTED,
    estimate_activations,
)
from loralab.plan.estimate.activations import DTYPE_BYTES, ActivationEstimate
from loralab.plan.estimate.memory import TrainSetup
from loralab.plan.planner import Plan

MODES = ("auto", "on", "off")
# Dropout keys that act only in a task head, after the last layer: they never touch the prefix.
HEAD_ONLY_DROPOUT = frozenset(
    {
        "classifier_dropout",
        "summary_first_dropout",
        "seq_classif_dropout",
        "qa_dropout",
        "pooler_dropout",
        "final_dropout",
    }
)
# transformers' defaults for dropout keys a config.json may leave out (the model then uses them).
DEFAULT_DROPOUT: tuple[tuple[frozenset[str], dict[str, float]], ...] = (
    (GPT2_LIKE, {"embd_pdrop": 0.1, "attn_pdrop": 0.1, "resid_pdrop": 0.1}),
    (BERT_LIKE, {"hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1}),
    (BART_LIKE, {"dropout": 0.1}),
)
OFFSET_BYTES = 8  # one int64 offset per row, plus one


@dataclass(frozen=True)
class SplitTokens:
    """One split the run caches: rows and tokens (None where unknown)."""

    rows: int | None
    tokens: int | None


@dataclass(frozen=True)
class Prefix:
    """Where the frozen prefix ends: layers [0, boundary) of `stack` (encoder: the whole encoder)."""

    stack: str
    boundary: int
    num_layers: int
    encoder: bool = False
    lowest: str = ""  # what sets the boundary, in words ("LoRA on model.layers.20.self_attn.q_proj")
    refused: str = ""  # why no prefix can be cached at all, when that is not a trainable module


@dataclass
class PrefixCacheEstimate:
    mode: str
    used: bool
    reason: str
    stack: str
    boundary_layer: int
    num_layers: int
    cached_layers: int
    dtype: str
    hidden: int
    encoder: bool = False  # seq2seq: the whole encoder is the prefix
    bytes_on_disk: int | None = None
    build_flops: int | None = None
    flops_per_step_uncached: int | None = None
    flops_per_step_cached: int | None = None
    speedup_step: float | None = None
    speedup_epoch: float | None = None
    speedup_run: float | None = None
    epochs: float = 1.0
    evals_per_epoch: float | None = 0.0
    splits: dict[str, SplitTokens] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The keys are an API (`loralab plan --json`); the numbers are what the cache would give
        whenever there is a prefix, `used` says whether training takes it; unknown ones are null."""
        return {
            "mode": self.mode,
            "used": self.used,
            "reason": self.reason,
            "stack": self.stack,
            "boundary_layer": self.boundary_layer,
            "num_layers": self.num_layers,
            "cached_layers": self.cached_layers,
            "dtype": self.dtype,
            "hidden": self.hidden,
            "encoder": self.encoder,
            "bytes_on_disk": self.bytes_on_disk,
            "build_flops": self.build_flops,
            "flops_per_step_uncached": self.flops_per_step_uncached,
            "flops_per_step_cached": self.flops_per_step_cached,
            "speedup_step": self.speedup_step,
            "speedup_epoch": self.speedup_epoch,
            "speedup_run": self.speedup_run,
            "epochs": self.epochs,
            "evals_per_epoch": self.evals_per_epoch,
            "splits": {k: {"rows": v.rows, "tokens": v.tokens} for k, v in self.splits.items()},
            "notes": list(self.notes),
        }

    @property
    def layers_text(self) -> str:
        """What is cached, in words: "layers 0-19" / "layer 0" / "the encoder (12 layers)"."""
        if self.encoder:
            return f"the encoder ({self.cached_layers} layers)"
        if self.cached_layers == 1:
            return "layer 0"
        return f"layers 0-{self.cached_layers - 1}"


# ---- the boundary ---------------------------------------------------------------------------------


def _below_layers(arch: ArchRecord, name: str) -> bool:
    """An embedding (BERT's embeddings.LayerNorm, BART's layernorm_embedding too) runs before layer 0;
    the output embedding is the head, even when tied to the input one."""
    if name == arch.output_embedding:
        return False
    m = arch.module(name)
    return name == arch.input_embedding or (m is not None and m.is_embedding) or "embed" in name.lower()


def _location(arch: ArchRecord, name: str, stack: str, n: int) -> int:
    """The layer of `stack` a trainable module sits in: 0 below the layers, n above them."""
    if name.startswith(stack + "."):
        head = name[len(stack) + 1 :].split(".", 1)[0]
        return int(head) if head.isdigit() else 0
    if name == stack or stack.startswith(name + "."):
        return 0  # the stack itself, or a module holding it (and the embeddings with it)
    return 0 if _below_layers(arch, name) else n


def _trainable(plan: Plan) -> list[tuple[str, str]]:
    """(module name, what trains there) for every trainable parameter the config makes."""
    arch = plan.arch
    out = [(m.name, f"LoRA on {m.name}") for m in plan.counts.modules]
    saved = plan.match.modules_to_save
    for name in saved:
        for m in arch.subtree(name):
            if m.params:
                out.append((m.name, f"modules_to_save includes {name}"))
    if plan.spec.bias == "all":  # every bias outside the modules_to_save copies trains
        for m in arch.modules:
            inside = any(m.name == s or m.name.startswith(s + ".") for s in saved)
            if not inside and any(p.name == "bias" and p.tied_to is None for p in m.params):
                out.append((m.name, f"bias: all trains {m.name}.bias"))
    return out


NO_LAYER_TRAINS = "no layer trains (only modules after the layers): nothing is cached"


def find_prefix(plan: Plan) -> Prefix:
    """The frozen prefix of `plan` (boundary 0: none)."""
    arch = plan.arch
    stacks = arch.layers_per_stack
    trainable = _trainable(plan)
    if len(stacks) == 1:
        ((stack, n),) = stacks.items()
        boundary, lowest = n, "no layer trains"
        for name, what in trainable:
            loc = _location(arch, name, stack, n)
            if loc < boundary:
                boundary, lowest = loc, what
        if boundary == n:  # as train's decide: the cache ends at a layer's input, never at the head's
            return Prefix(stack, 0, n, refused=NO_LAYER_TRAINS)
        return Prefix(stack, boundary, n, lowest=lowest)
    encoders = [s for s in stacks if ".encoder." in f".{s}."]
    if arch.is_encoder_decoder and len(encoders) == 1:
        enc = encoders[0]
        side = enc.rsplit(".", 1)[0]  # "model.encoder": its embeddings, layers and norms
        shared = {arch.input_embedding or "", "model.shared", "shared"}
        for name, what in trainable:
            if name.startswith(side + ".") or name in shared or side.startswith(name + "."):
                return Prefix(enc, 0, stacks[enc], encoder=True, lowest=what)
        return Prefix(enc, stacks[enc], stacks[enc], encoder=True, lowest="no encoder module trains")
    stack, n = next(iter(stacks.items()), ("", arch.num_layers))
    why = f"{len(stacks)} layer stacks ({', '.join(stacks)}): only one stack or an encoder is cached"
    return Prefix(stack, 0, n, refused=why)


def prefix_dropout(arch: ArchRecord, cfg: dict[str, Any], *, encoder: bool) -> list[tuple[str, float]]:
    """Dropout keys (p > 0) of the model config that act in the prefix: in the embeddings or the
    layers (head-only keys excluded; for a cached encoder, the decoder's keys too)."""
    defaults = next((d for family, d in DEFAULT_DROPOUT if arch.model_type in family), {})
    merged = {**defaults, **cfg}
    out = []
    for key, value in merged.items():
        k = key.lower()
        if not ("dropout" in k or k.endswith("pdrop") or k.endswith("layerdrop")):
            continue
        if k in HEAD_ONLY_DROPOUT or (encoder and k.startswith("decoder_")):
            continue
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            out.append((key, float(value)))
    return out


# ---- the decision ---------------------------------------------------------------------------------


def _decide(
    mode: str,
    prefix: Prefix,
    layers: str,
    dropout: list[tuple[str, float]],
    neftune: float | None,
    padding_side: str | None,
) -> tuple[bool, str]:
    """`train`'s decision (loralab.train.prefix_cache.decide) foreseen from the plan: `train` probes
    the loaded model, this reads the records; the rules are the same."""
    if prefix.refused:
        return False, prefix.refused
    if prefix.boundary == 0 and prefix.encoder:
        return False, f"{prefix.lowest}: a seq2seq cache needs the whole encoder frozen"
    if prefix.boundary == 0:
        return False, f"{prefix.lowest}: nothing below the adapters is frozen"
    one = prefix.encoder or prefix.boundary == 1
    are, run = ("is", "runs") if one else ("are", "run")
    if mode == "off":
        return False, f"prefix_cache: off: {layers} {run} in every step"
    if padding_side == "left" and not prefix.encoder:
        # a left-padded row's positions shift with its batch's padding: its states are not its own
        return False, (
            "the batches are padded on the left (the tokenizer's padding_side), which shifts each row's "
            "positions by its batch's padding: not cached"
        )
    if neftune:  # noise on the embeddings every step: even `on` would train on other inputs
        return (
            False,
            f"training_args.neftune_noise_alpha {neftune:g} adds noise to the embeddings: not cached",
        )
    if not dropout:
        return True, f"{layers} {are} frozen and dropout-free: cached"
    what = "the prefix has dropout (" + ", ".join(f"{k} {v:g}" for k, v in dropout) + ")"
    if mode == "on":
        return True, f"{what}: prefix_cache: on caches {layers} with the prefix in eval mode (dropout off)"
    return False, f"{what}: not exact; prefix_cache: on caches it with the prefix in eval mode"


def estimate_prefix_cache(
    plan: Plan,
    cfg: dict[str, Any],
    setup: TrainSetup,
    *,
    mode: str = "auto",
    neftune_alpha: float | None = None,
    padding_side: str | None = "right",
    splits: dict[str, SplitTokens] | None = None,
    epochs: float = 1.0,
    evals_per_epoch: float | None = 0.0,
) -> PrefixCacheEstimate:
    """The cache of `plan` trained with `setup` (a memory.TrainSetup): `cfg` is the model's config.json,
    `splits` the cached splits ("train", "validation", "test") with their token counts (absent: the
    run has no such split), `evals_per_epoch` the validation passes per epoch (None: unknown),
    `padding_side` the training collator's (None: unknown)."""
    arch = plan.arch
    prefix = find_prefix(plan)
    act = setup.activation_setup()
    hidden = hidden_size(cfg)
    est = PrefixCacheEstimate(
        mode=mode,
        used=False,
        reason="",
        stack=prefix.stack,
        boundary_layer=prefix.boundary,
        num_layers=prefix.num_layers,
        cached_layers=prefix.boundary,
        dtype=act.dtype,
        hidden=hidden,
        encoder=prefix.encoder,
        epochs=epochs,
        evals_per_epoch=evals_per_epoch,
        splits=dict(splits or {}),
    )
    dropout = prefix_dropout(arch, cfg, encoder=prefix.encoder)
    est.used, est.reason = _decide(mode, prefix, est.layers_text, dropout, neftune_alpha, padding_side)
    if padding_side is None and not prefix.encoder and est.used:
        est.notes.append("the tokenizer's padding side is unknown: `train` caches only right-padded batches")
    if prefix.boundary == 0:
        return est
    est.bytes_on_disk = _bytes(est, DTYPE_BYTES[act.dtype])
    if arch.model_type not in SUPPORTED:
        est.notes.append(f"no FLOP replay for model_type '{arch.model_type}': no FLOPs or speedups")
        return est
    cached = (
        replace(act, cached_encoder=True)
        if prefix.encoder
        else replace(act, cached_prefix_layers=prefix.boundary)
    )
    full, top = estimate_activations(plan, cfg, act), estimate_activations(plan, cfg, cached)
    _speedups(est, full, top, act.micro_batch * act.seq_len)
    return est


def _bytes(est: PrefixCacheEstimate, dtype_bytes: int) -> int | None:
    """Every split's hidden states plus its row offsets; None while a split's tokens are unknown."""
    total = 0
    for name, sp in est.splits.items():
        if sp.tokens is None:
            return None
        total += sp.tokens * est.hidden * dtype_bytes
        if sp.rows is None:
            est.notes.append(f"{name}: row count unknown, its {OFFSET_BYTES}-byte row offsets not counted")
        else:
            total += OFFSET_BYTES * (sp.rows + 1)
    return total if est.splits else None


def _speedups(
    est: PrefixCacheEstimate, full: ActivationEstimate, top: ActivationEstimate, step_tokens: int
) -> None:
    """The module docstring's formulas, each left None where a token count it needs is unknown."""
    step_u = full.flops_forward + full.flops_backward + full.flops_recompute
    step_c = top.flops_forward + top.flops_backward + top.flops_recompute
    est.flops_per_step_uncached, est.flops_per_step_cached = step_u, step_c
    if not step_c:
        return
    est.speedup_step = step_u / step_c
    s_u, s_c = step_u / step_tokens, step_c / step_tokens
    f_u, f_c = full.flops_forward / step_tokens, top.flops_forward / step_tokens
    prefix_fwd = f_u - f_c
    tok = {k: v.tokens for k, v in est.splits.items()}
    known = all(t is not None for t in tok.values())
    if known and est.splits:
        est.build_flops = round(prefix_fwd * sum(t or 0 for t in tok.values()))
    evals = est.evals_per_epoch
    train, val, test = tok.get("train"), tok.get("validation") or 0, tok.get("test") or 0
    if evals == 0:
        est.speedup_epoch = est.speedup_step  # training steps only: the tokens cancel
    elif evals is not None and train is not None and tok.get("validation") is not None:
        est.speedup_epoch = (s_u * train + f_u * val * evals) / (s_c * train + f_c * val * evals)
    if evals is None or train is None or not known:
        return
    run_u = est.epochs * (s_u * train + f_u * val * evals) + f_u * test
    run_c = est.epochs * (s_c * train + f_c * val * evals) + prefix_fwd * (train + val + test) + f_c * test
    est.speedup_run = run_u / run_c if run_c else None
