"""Frozen-prefix activation cache: the layers below the lowest trainable one run once per row, not once
per step (issue 13).

With LoRA on layers 20-29 of a 30-layer model, layers 0-19 get the same input every epoch and, with
no dropout and no trainable parameter among them, return the same output: two thirds of each forward
pass is repeated work. AutoFreeze (Liu et al. 2021, arXiv:2102.01386) and PipeTransformer (He et al.
2021, arXiv:2102.03161) cache those activations in research code; here it is a run option.

How it stays exact and model-agnostic:
- The boundary is found on the loaded PEFT model, not from names: a probe forward records which
  module with a trainable parameter runs first; the prefix is every layer of the stack before it.
  The same probe, run twice in train mode, tells whether the prefix is random (dropout, functional
  attention dropout, anything): `auto` then leaves the cache off.
- The cache holds, per row, the hidden states entering the boundary layer (seq2seq: the encoder's
  output), computed in inference mode with right padding. With right padding a real token's output
  does not depend on the rest of the batch: positions start at 0 and padded keys are masked out, so
  a row's states can be re-padded into any training batch. (Left padding shifts the positions of
  decoder-only models by the batch's padding, so it is not cached under `auto`.)
- In a cached batch the collator adds `prefix_states`; a pre-hook on the model pops it; the prefix
  layers then return their input unchanged except the last one, which returns the cached states. The
  model still embeds the tokens and builds its masks and rotary tables itself (cheap), so nothing of
  the family's forward is rewritten. The cached tensor enters the boundary layer as an ordinary
  input that needs no gradient, so backward (and gradient checkpointing's recomputation, which is
  switched off for prefix layers) never reaches the prefix.
- Rows are looked up by their token ids, so the evaluation and scoring loops use the cache with no
  change; a batch with a row not in the cache (generation) runs the whole model.
Storage: per split a flat [tokens, hidden] array (numpy memmap, the hidden states' dtype; bfloat16
as its 16-bit pattern) and row offsets, with a manifest written last that holds the key, sizes and
the data's sha256: a partial or damaged cache is rebuilt with a warning, never read.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from transformers import TrainerCallback
from transformers.modeling_outputs import BaseModelOutput

from loralab.config.models import ExperimentConfig
from loralab.errors import LoralabError
from loralab.train.batching import Examples

FORMAT = 1
STACK_NAMES = ("layers", "layer", "h", "blocks", "block")
MODES = ("auto", "on", "off")
# Weight files up to this size are hashed whole for the cache key; larger ones by name, size and
# modification time (hashing 16 GB at every run start costs more than it saves).
HASH_WEIGHTS_UP_TO = 2 * 1024**3
# Tokens per batch of the build pass (inference-mode forward of the prefix only). On 2 CPU cores
# 1,024 built SmolLM2-135M's 20-layer prefix at 1,060 tokens/s, 16,384 at 470 (attention and
# activations then leave the caches): measured in benchmarks/bench_prefix_cache.py's setting.
BUILD_TOKENS = {"cpu": 1024, "cuda": 32768}
HEARTBEAT = "building.json"  # rewritten by the building rank as it goes; waiters watch its mtime
WAIT_POLL_SECONDS = 1.0
_STORED = {torch.float32: np.float32, torch.float16: np.float16, torch.bfloat16: np.int16}


class PrefixCacheError(LoralabError):
    """The cache cannot be used as the config asks."""


class _Stop(Exception):
    def __init__(self, states: torch.Tensor):
        self.states = states


# ---- where the prefix ends --------------------------------------------------------------------------


@dataclass
class PrefixDecision:
    mode: str
    used: bool
    reason: str
    boundary: int = 0  # first layer that runs in training; == num_layers for a seq2seq encoder prefix
    num_layers: int = 0
    stack: str = ""  # the layer stack's module name in the base model
    encoder: bool = False  # seq2seq: the whole encoder is the prefix (cached: encoder outputs)
    eval_mode_note: str | None = None  # `on` over a random prefix: what changes in the training

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> PrefixDecision:
        """A run's decision as record.json holds it (a reloaded adapter trains nothing, so the probe
        cannot find the boundary again)."""
        return cls(
            mode=str(data.get("mode", "auto")),
            used=bool(data.get("used")),
            reason=str(data.get("reason", "")),
            boundary=int(data.get("boundary_layer") or 0),
            num_layers=int(data.get("num_layers") or 0),
            stack=str(data.get("stack") or ""),
            encoder=bool(data.get("encoder_outputs")),
            eval_mode_note=data.get("note"),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "used": self.used,
            "reason": self.reason,
            "boundary_layer": self.boundary if self.used else None,
            "num_layers": self.num_layers or None,
            "stack": self.stack or None,
            "encoder_outputs": self.encoder,
            "note": self.eval_mode_note,
        }


def layer_stacks(base: Any) -> dict[str, Any]:
    """The model's transformer layer lists by module name (decoder-only: one; seq2seq: two)."""
    out: dict[str, Any] = {}
    for name, mod in base.named_modules():
        is_stack = isinstance(mod, torch.nn.ModuleList) and len(mod) and name.split(".")[-1] in STACK_NAMES
        if is_stack and not any(name.startswith(o + ".") for o in out):  # not a list inside a layer
            out[name] = mod
    return out


def _probe_inputs(model: Any, ids: list[int], token_type: bool) -> dict[str, torch.Tensor]:
    device = next(model.parameters()).device
    x = torch.tensor([ids], dtype=torch.long, device=device)
    batch = {"input_ids": x, "attention_mask": torch.ones_like(x)}
    if token_type:
        batch["token_type_ids"] = torch.zeros_like(x)
    if getattr(model.config, "is_encoder_decoder", False):
        start = model.config.decoder_start_token_id or 0
        batch["decoder_input_ids"] = torch.full((1, 2), int(start), dtype=torch.long, device=device)
    return batch


@dataclass
class _Probe:
    first_trainable: str | None  # module name in the base model
    order: list[str] = field(default_factory=list)
    dropouts: list[str] = field(default_factory=list)  # nn.Dropout with p > 0 run before the first trainable


def _probe(base: Any, model: Any, inputs: dict[str, torch.Tensor], encoder_name: str | None) -> _Probe:
    """One eval-mode forward that records which modules run, in order, until the end of the model."""
    order: list[str] = []
    handles = []
    trainable = {n for n, m in base.named_modules() if any(p.requires_grad for p in m.parameters(False))}

    def pre(name: str) -> Callable[..., None]:
        return lambda *_: order.append(name)

    for name, mod in base.named_modules():
        if name in trainable or isinstance(mod, torch.nn.Dropout) or name.split(".")[-1].isdigit():
            handles.append(mod.register_forward_pre_hook(pre(name)))
    if encoder_name is not None:
        enc = base.get_submodule(encoder_name)
        handles.append(enc.register_forward_hook(lambda *_: order.append("<encoder end>")))
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    first = next((n for n in order if n in trainable), None)
    upto = order[: order.index(first)] if first else order
    mods = dict(base.named_modules())
    dropouts = [n for n in upto if isinstance(mods.get(n), torch.nn.Dropout) and mods[n].p > 0]
    return _Probe(first, order, dropouts)


def _is_random(run: Callable[[], torch.Tensor], model: Any) -> bool:
    """Two train-mode passes through the prefix that differ mean something in it draws random numbers."""
    was = model.training
    model.train()
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(1)
            a = run()
            torch.manual_seed(2)
            b = run()
    finally:
        model.train(was)
    return not torch.equal(a, b)


def config_dropouts(config: Any) -> list[str]:
    """Dropout settings of the backbone's config that are above 0 (the head's own are not the prefix's)."""
    head_only = {"classifier_dropout", "summary_first_dropout", "final_dropout", "cls_dropout"}
    out = []
    for k, v in sorted(config.to_dict().items()):
        if ("dropout" in k or "pdrop" in k) and k not in head_only and isinstance(v, int | float) and v > 0:
            out.append(f"{k} {v:g}")
    return out


def decide(
    model: Any, cfg: ExperimentConfig, *, mode: str, padding_side: str, probe_ids: list[int], token_type: bool
) -> PrefixDecision:
    """Whether and where to cache, for the loaded PEFT `model` under `mode` (auto | on | off)."""
    if mode == "off":
        return PrefixDecision(mode, False, "prefix_cache: off")
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    stacks = layer_stacks(base)
    enc_dec = bool(getattr(base.config, "is_encoder_decoder", False))
    if not stacks:
        return PrefixDecision(mode, False, "no transformer layer list found in the model: nothing to cache")
    stack_name = next(iter(stacks))  # decoder-only: the one stack; seq2seq: the encoder's (it runs first)
    stack = stacks[stack_name]
    encoder_name = stack_name.rsplit(".", 1)[0] if enc_dec and "." in stack_name else None
    inputs = _probe_inputs(model, probe_ids[:8] or [1, 2], token_type)
    with torch.random.fork_rng(devices=[]):
        pr = _probe(base, model, inputs, encoder_name)
    n = len(stack)
    d = PrefixDecision(mode, False, "", num_layers=n, stack=stack_name)
    if pr.first_trainable is None:
        d.reason = "nothing in the model trains: nothing to cache"
        return d
    if enc_dec:
        if "<encoder end>" not in pr.order or pr.order.index("<encoder end>") > pr.order.index(
            pr.first_trainable
        ):
            d.reason = (
                f"{pr.first_trainable} trains inside the encoder: only a wholly frozen encoder is cached "
                "for seq2seq (adapt the decoder only to cache it)"
            )
            return d
        d.boundary, d.encoder = n, True
        what = "the encoder"
    else:
        parts = pr.first_trainable.split(".")
        prefix = stack_name.split(".")
        inside = parts[: len(prefix)] == prefix and len(parts) > len(prefix) and parts[len(prefix)].isdigit()
        if not inside:
            first_layer = f"{stack_name}.0"
            after = first_layer in pr.order and pr.order.index(first_layer) < pr.order.index(
                pr.first_trainable
            )
            d.reason = (
                "no layer trains (only modules after the layers): nothing is cached"
                if after
                else f"{pr.first_trainable} trains and runs before the layers: no frozen prefix"
            )
            return d
        d.boundary = int(parts[len(prefix)])
        if d.boundary == 0:
            d.reason = f"layer 0 trains ({pr.first_trainable}): no frozen prefix"
            return d
        what = f"layers 0-{d.boundary - 1}"
    if padding_side == "left" and not enc_dec:
        d.reason = (
            "the batches are padded on the left, which shifts each row's positions by its batch's padding: "
            "the prefix's output is not a function of the row, so it is not cached"
        )
        return d
    random_parts = pr.dropouts + [f"config {k}" for k in config_dropouts(base.config) if k]
    neftune = cfg.training_args.get("neftune_noise_alpha")
    run = _prefix_runner(model, base, stack, d, inputs, encoder_name)
    is_random = _is_random(run, model)
    if neftune:
        d.reason = (
            f"training_args.neftune_noise_alpha {neftune} adds noise to the embeddings: not exact, not cached"
        )
        return d
    if is_random:
        named = ", ".join(random_parts[:4]) or "random ops in the forward pass"
        if mode == "auto":
            d.reason = (
                f"{what} are frozen but not deterministic in training ({named}): not exact, so not cached; "
                "prefix_cache: on caches them with the prefix in eval mode"
            )
            return d
        d.eval_mode_note = (
            f"prefix_cache: on: {what} run in eval mode (their dropout, {named}, is off); this changes "
            "what is trained compared with an uncached run"
        )
    d.used = True
    d.reason = (
        f"{what} of {n} are frozen{' and deterministic' if not is_random else ''}: computed once per row"
    )
    return d


def _prefix_runner(
    model: Any, base: Any, stack: Any, d: PrefixDecision, inputs: dict[str, Any], encoder_name: str | None
) -> Callable[[], torch.Tensor]:
    if encoder_name is not None:
        enc = base.get_submodule(encoder_name)
        enc_in = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
        return lambda: enc(**enc_in).last_hidden_state
    boundary = stack[d.boundary]
    fwd = {k: v for k, v in inputs.items() if k != "decoder_input_ids"}
    return lambda: run_to_boundary(model, boundary, fwd)


def run_to_boundary(model: Any, boundary_layer: Any, batch: dict[str, Any]) -> torch.Tensor:
    """The hidden states that enter `boundary_layer`: the model runs up to it and stops there."""

    def stop(_: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        raise _Stop(args[0] if args else kwargs["hidden_states"])

    h = boundary_layer.register_forward_pre_hook(stop, with_kwargs=True)
    try:
        model(**batch)
    except _Stop as s:
        return s.states
    finally:
        h.remove()
    raise PrefixCacheError("the model's forward pass never reached its boundary layer")


# ---- the key ------------------------------------------------------------------------------------------


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def weights_fingerprint(name_or_path: str, config: Any) -> dict[str, Any]:
    """What identifies the weights: their files' content (small models) or size and time, else the
    hub revision the config was loaded from."""
    folder = Path(name_or_path)
    if not folder.is_dir():
        return {"hub_id": name_or_path, "commit": getattr(config, "_commit_hash", None)}
    files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".pt", ".gguf"))
    total = sum(p.stat().st_size for p in files)
    out: dict[str, Any] = {}
    for p in files:
        st = p.stat()
        if total <= HASH_WEIGHTS_UP_TO:
            out[p.name] = _file_sha(p)
        else:
            out[p.name] = f"{st.st_size}:{st.st_mtime_ns}"
    return out


def model_key(
    cfg: ExperimentConfig, base: Any, d: PrefixDecision, dtype: torch.dtype, device: str
) -> dict[str, Any]:
    """Everything besides the rows that decides the cached tensors."""
    conf = base.config.to_dict()
    for k in (
        "id2label",
        "label2id",
        "num_labels",
        "problem_type",
        "architectures",
        "transformers_version",
        "_name_or_path",
        "_commit_hash",
    ):
        conf.pop(k, None)
    return {
        "format": FORMAT,
        "model": str(cfg.model.name_or_path),
        "revision": cfg.model.revision,
        "weights": weights_fingerprint(str(cfg.model.name_or_path), base.config),
        "quantization": cfg.model.quantization,
        "config_sha256": _sha(json.dumps(conf, sort_keys=True, default=str).encode()),
        "attn_implementation": getattr(base.config, "_attn_implementation", None),
        "boundary": "encoder" if d.encoder else d.boundary,
        "prefix_mode": "eval" if d.eval_mode_note else "train==eval",
        "dtype": str(dtype).replace("torch.", ""),
        "device": device,
    }


def row_key(ids: list[int], token_types: list[int] | None) -> bytes:
    data = np.asarray(ids, dtype=np.int64).tobytes()
    if token_types is not None:
        data += b"|" + np.asarray(token_types, dtype=np.int64).tobytes()
    return hashlib.blake2b(data, digest_size=16).digest()


def _rows_digest(ex: Examples) -> str:
    h = hashlib.sha256()
    for i in range(len(ex)):
        h.update(row_key(ex.input_ids[i], ex.token_type_ids[i] if ex.token_type_ids else None))
    return h.hexdigest()


# ---- the store ----------------------------------------------------------------------------------------


@dataclass
class SplitCache:
    """One split's cached states: a memmap of [tokens, hidden] and each row's start offset."""

    data: np.ndarray[Any, Any]
    offsets: np.ndarray[Any, Any]
    dtype: torch.dtype
    index: dict[bytes, int]  # row key -> row
    manifest: dict[str, Any]

    def row(self, r: int) -> torch.Tensor:
        a = np.asarray(self.data[self.offsets[r] : self.offsets[r + 1]])
        t = torch.from_numpy(a.copy())
        return t.view(torch.bfloat16) if self.dtype == torch.bfloat16 else t


def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    os.replace(tmp, path)


def _heartbeat(folder: Path, split: str, done: int, total: int, last: float) -> float:
    """What the other ranks watch while rank 0 builds (at most once a second)."""
    now = time.monotonic()
    if now - last < 1.0 and done < total:
        return last
    _write_json_atomic(folder / HEARTBEAT, {"split": split, "rows": done, "of": total, "pid": os.getpid()})
    return now


def _check(folder: Path, stem: str, key: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """The split's manifest when its files are whole and made for `key`; else (None, why not)."""
    man_path = folder / f"{stem}.json"
    if not man_path.exists():
        return None, None
    try:
        man = json.loads(man_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return None, f"{man_path} cannot be read ({e})"
    if man.get("key") != key:
        return None, f"{man_path} was made for another model key"
    data = folder / f"{stem}.bin"
    try:
        size = data.stat().st_size
    except OSError:
        return None, f"{data} is missing"
    if size != man.get("bytes"):
        return None, f"{data} is damaged ({size:,} bytes, {man.get('bytes'):,} expected)"
    if _file_sha(data) != man.get("sha256"):
        return None, f"{data} is damaged (its sha256 differs from the manifest's)"
    return man, None


class PrefixCache:
    """The cached prefix of one run: its decision, the split stores and the hooks on the model."""

    def __init__(self, decision: PrefixDecision, root: Path | None = None):
        self.decision = decision
        self.root = root
        self.splits: dict[str, SplitCache] = {}
        self.events: list[str] = []  # built / reused / rebuilt, one line each, for the record
        self.build_seconds = 0.0
        self.bytes = 0
        self.active: torch.Tensor | None = None  # the current batch's cached states
        self._handles: list[Any] = []
        self.folder: Path | None = None

    @property
    def used(self) -> bool:
        return self.decision.used

    # ---- build / load ---------------------------------------------------------------------------
    def prepare(
        self,
        cfg: ExperimentConfig,
        model: Any,
        splits: dict[str, Examples],
        console: Console,
        *,
        build: bool = True,
        wait_seconds: float | None = None,
    ) -> None:
        """Load each split's cache when a whole one for this key exists, else build it (`build=False`:
        leave that split uncached, as scoring a reloaded run does: one pass gains nothing from a build).

        `wait_seconds` (the other ranks of a distributed run): rank 0 builds, this process waits for
        each split's manifest instead of building the same files. It waits as long as the builder's
        heartbeat moves, so a long build meets no fixed timeout, and gives up `wait_seconds` after the
        heartbeat last moved (a builder that died). Nothing here is a collective: the process group
        starts after the cache, so NCCL/gloo timeouts never see the build."""
        assert self.root is not None and self.decision.used
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        device = next(model.parameters()).device
        dtype = self._states_dtype(model, base, splits)
        key = model_key(cfg, base, self.decision, dtype, device.type)
        self.folder = folder = self.root / _sha(json.dumps(key, sort_keys=True, default=str).encode())[:16]
        if build and wait_seconds is None:  # a waiting rank writes nothing: rank 0 owns the folder
            folder.mkdir(parents=True, exist_ok=True)
            _write_json_atomic(folder / "key.json", key)
        for name, ex in splits.items():
            if not len(ex):
                continue  # an empty split has nothing to cache
            stem = f"{name}-{_rows_digest(ex)[:16]}"
            man, why = _check(folder, stem, key)
            if man is None and wait_seconds is not None:
                man = self._wait(folder, stem, key, name, wait_seconds)
            if man is None and not build:
                continue
            if man is None:
                if why:
                    console.print(f"[bold yellow]warning:[/] prefix cache {why}: rebuilt")
                    self.events.append(f"{name}: rebuilt ({why})")
                else:
                    self.events.append(f"{name}: built")
                t0 = time.perf_counter()
                man = self._build(model, base, ex, folder, stem, key, dtype, name, console)
                self.build_seconds += time.perf_counter() - t0
            else:
                self.events.append(f"{name}: reused {folder / stem}.bin")
            self.splits[name] = self._open(folder, stem, man, ex)
            self.bytes += int(man["bytes"])

    def _wait(self, folder: Path, stem: str, key: dict[str, Any], split: str, stall: float) -> dict[str, Any]:
        beat = folder / HEARTBEAT
        seen: int | None = None
        t0 = moved = time.monotonic()
        while True:
            man, _ = _check(folder, stem, key)  # a damaged file is rank 0's to rebuild: keep waiting
            if man is not None:
                self.events.append(f"{split}: built by rank 0 (waited {time.monotonic() - t0:.0f} s)")
                return man
            try:
                mtime: int | None = beat.stat().st_mtime_ns
            except OSError:
                mtime = None
            if mtime != seen:
                seen, moved = mtime, time.monotonic()
            elif time.monotonic() - moved > stall:
                raise PrefixCacheError(
                    f"prefix cache: no progress from rank 0 building {folder / stem}.bin for {stall:.0f} s "
                    f"(its heartbeat {beat} stopped); see rank 0's log. Every node must see "
                    "--prefix-cache-dir; or set prefix_cache: off"
                )
            time.sleep(WAIT_POLL_SECONDS)

    def _states_dtype(self, model: Any, base: Any, splits: dict[str, Examples]) -> torch.dtype:
        ex = next((e for e in splits.values() if len(e)), None)
        if ex is None:
            return torch.float32  # nothing to cache
        out = self._prefix_batch(
            model, base, [ex.input_ids[0]], [ex.token_type_ids[0]] if ex.token_type_ids else None
        )
        return out.dtype

    def _prefix_batch(
        self, model: Any, base: Any, ids: list[list[int]], tts: list[list[int]] | None
    ) -> torch.Tensor:
        """[B, L, H] prefix output of right-padded rows, in inference mode."""
        device = next(model.parameters()).device
        width = max(len(s) for s in ids)
        x = torch.zeros((len(ids), width), dtype=torch.long)
        mask = torch.zeros_like(x)
        for i, s in enumerate(ids):
            x[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
        batch: dict[str, Any] = {"input_ids": x.to(device), "attention_mask": mask.to(device)}
        d = self.decision
        was, cached = model.training, getattr(base.config, "use_cache", None)
        model.eval()
        base.config.use_cache = False  # no KV cache to fill: nothing generates from this pass
        try:
            with torch.inference_mode():
                if d.encoder:
                    return base.get_submodule(d.stack.rsplit(".", 1)[0])(**batch).last_hidden_state
                if tts is not None:
                    t = torch.zeros_like(x)
                    for i, s in enumerate(tts):
                        t[i, : len(s)] = torch.tensor(s)
                    batch["token_type_ids"] = t.to(device)
                return run_to_boundary(model, base.get_submodule(d.stack)[d.boundary], batch)
        finally:
            model.train(was)
            base.config.use_cache = cached

    def _build(
        self,
        model: Any,
        base: Any,
        ex: Examples,
        folder: Path,
        stem: str,
        key: dict[str, Any],
        dtype: torch.dtype,
        split: str,
        console: Console,
    ) -> dict[str, Any]:
        lengths = ex.lengths()
        offsets = np.zeros(len(ex) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        hidden = None
        device = next(model.parameters()).device
        budget = BUILD_TOKENS.get(device.type, BUILD_TOKENS["cuda"])
        order = sorted(range(len(ex)), key=lambda i: lengths[i])
        batches: list[list[int]] = []
        cur: list[int] = []
        for i in order:
            if cur and (len(cur) + 1) * lengths[i] > budget:
                batches.append(cur)
                cur = []
            cur.append(i)
        if cur:
            batches.append(cur)
        tmp = folder / f"{stem}.bin.tmp-{os.getpid()}"
        mm: Any = None
        progress = Progress(
            TextColumn(f"prefix cache {split}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        rows_done, beat = 0, 0.0
        with progress:
            task = progress.add_task("rows", total=len(ex))
            for rows in batches:
                tts = [ex.token_type_ids[i] for i in rows] if ex.token_type_ids else None
                out = self._prefix_batch(model, base, [ex.input_ids[i] for i in rows], tts).to("cpu")
                if mm is None:
                    hidden = int(out.shape[-1])
                    mm = np.memmap(
                        tmp, dtype=_STORED[dtype], mode="w+", shape=(max(1, int(offsets[-1])), hidden)
                    )
                if dtype == torch.bfloat16:
                    out = out.view(torch.int16)
                arr = out.numpy()
                for j, r in enumerate(rows):
                    mm[offsets[r] : offsets[r + 1]] = arr[j, : lengths[r]]
                progress.advance(task, len(rows))
                beat = _heartbeat(folder, split, rows_done := rows_done + len(rows), len(ex), beat)
        assert mm is not None and hidden is not None
        mm.flush()
        del mm
        data = folder / f"{stem}.bin"
        os.replace(tmp, data)
        # Atomic like the data: under DDP every rank may write the same files at once.
        tmp_off = folder / f"{stem}.offsets.tmp-{os.getpid()}.npy"
        np.save(tmp_off, offsets)
        os.replace(tmp_off, folder / f"{stem}.offsets.npy")
        man = {
            "key": key,
            "split": split,
            "rows": len(ex),
            "tokens": int(offsets[-1]),
            "hidden": hidden,
            "dtype": str(dtype).replace("torch.", ""),
            "bytes": data.stat().st_size,
            "sha256": _file_sha(data),
        }
        _write_json_atomic(folder / f"{stem}.json", man)  # last: its presence means the cache is whole
        return man

    def _open(self, folder: Path, stem: str, man: dict[str, Any], ex: Examples) -> SplitCache:
        dtype = getattr(torch, man["dtype"])
        offsets = np.load(folder / f"{stem}.offsets.npy")
        data = np.memmap(
            folder / f"{stem}.bin",
            dtype=_STORED[dtype],
            mode="r",
            shape=(max(1, man["tokens"]), man["hidden"]),
        )
        if len(offsets) != man["rows"] + 1 or int(offsets[-1]) != man["tokens"]:
            raise PrefixCacheError(
                f"{folder / stem}.offsets.npy does not match its manifest: delete {folder}"
            )
        index = {
            row_key(ex.input_ids[i], ex.token_type_ids[i] if ex.token_type_ids else None): i
            for i in range(len(ex))
        }
        return SplitCache(data, offsets, dtype, index, man)

    # ---- use --------------------------------------------------------------------------------------
    def states_for(self, items: list[dict[str, Any]], padding_side: str) -> torch.Tensor | None:
        """[B, L, H] cached states of the batch's rows, padded like the batch; None if one is missing."""
        rows = []
        for it in items:
            k = row_key(it["input_ids"], it.get("token_type_ids"))
            for sc in self.splits.values():
                r = sc.index.get(k)
                if r is not None:
                    rows.append(sc.row(r))
                    break
            else:
                return None
        width = max(t.shape[0] for t in rows)
        out = torch.zeros((len(rows), width, rows[0].shape[1]), dtype=rows[0].dtype)
        for i, t in enumerate(rows):
            if padding_side == "left":
                out[i, width - t.shape[0] :] = t
            else:
                out[i, : t.shape[0]] = t
        return out

    def install(self, model: Any) -> None:
        """Hooks that make a batch carrying `prefix_states` skip the prefix."""
        d = self.decision
        base = model.get_base_model() if hasattr(model, "get_base_model") else model

        def take(_: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
            states = kwargs.pop("prefix_states", None)
            self.active = states if not d.encoder else None
            if states is not None and d.encoder:
                kwargs["encoder_outputs"] = BaseModelOutput(last_hidden_state=states)
            return args, kwargs

        def done(*_: Any) -> None:
            # generate() calls the base model's forward, past these hooks: it must find no stale states.
            self.active = None

        self._handles.append(model.register_forward_pre_hook(take, with_kwargs=True, prepend=True))
        self._handles.append(model.register_forward_hook(done, always_call=True))
        if d.encoder:
            return
        stack = base.get_submodule(d.stack)
        self._prefix_layers = [stack[i] for i in range(d.boundary)]
        self.no_prefix_checkpointing()
        for i, layer in enumerate(self._prefix_layers):
            layer.forward = self._skipping(layer.forward, last=i == d.boundary - 1)

    def no_prefix_checkpointing(self) -> None:
        """Nothing in the prefix needs a gradient, so nothing there is checkpointed: the Trainer's
        gradient_checkpointing_enable() turns it on for every layer, so this runs again after it."""
        for layer in getattr(self, "_prefix_layers", []):
            if hasattr(layer, "gradient_checkpointing"):
                layer.gradient_checkpointing = False

    def _skipping(self, forward: Callable[..., Any], *, last: bool) -> Callable[..., Any]:
        def skip(*args: Any, **kwargs: Any) -> Any:
            if self.active is None:
                return forward(*args, **kwargs)
            hidden = args[0] if args else kwargs["hidden_states"]
            if not last:
                return hidden
            states = self.active
            if states.shape != hidden.shape:
                raise PrefixCacheError(
                    f"cached prefix states {tuple(states.shape)} do not fit the batch {tuple(hidden.shape)}"
                )
            out = states.to(device=hidden.device, dtype=hidden.dtype)
            # Under gradient checkpointing transformers makes the embeddings' output require grad
            # (enable_input_require_grads), because a reentrant checkpoint whose inputs need no
            # gradient returns none to its LoRA weights. The cached states stand in for that input; the
            # gradient still stops here, at a leaf.
            return out.requires_grad_(hidden.requires_grad)

        return skip

    def collator(self, inner: Any) -> CachedCollator:
        return CachedCollator(inner, self)

    def to_json(self) -> dict[str, Any]:
        return {
            **self.decision.to_json(),
            "folder": str(self.folder) if self.folder else None,
            "bytes_on_disk": self.bytes if self.used else None,
            "build_seconds": round(self.build_seconds, 3),
            "splits": self.events,
        }


class PrefixCacheCallback(TrainerCallback):
    def __init__(self, cache: PrefixCache):
        self.cache = cache

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.cache.no_prefix_checkpointing()


class CachedCollator:
    """The task's collator plus `prefix_states` for rows found in the cache."""

    def __init__(self, inner: Any, cache: PrefixCache):
        self.inner = inner
        self.cache = cache

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch: dict[str, Any] = self.inner(items)
        side = "right" if self.cache.decision.encoder else self.inner.padding_side
        states = self.cache.states_for(items, side)
        if states is not None:
            batch["prefix_states"] = states
        return batch


def reuse_run_cache(
    cfg: ExperimentConfig, model: Any, run_dir: Path, splits: dict[str, Examples], collator: Any
) -> tuple[Any, PrefixCache | None]:
    """A reloaded run's collator reading the run's cache for the splits it holds (the test split
    scored again); the collator unchanged when there is none. Nothing is built."""
    try:
        record = json.loads((run_dir / "record.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return collator, None
    data = record.get("prefix_cache") if isinstance(record, dict) else None
    if not isinstance(data, dict) or not data.get("used"):
        return collator, None
    folder = data.get("folder")
    root = Path(folder).parent if folder else run_dir / "prefix_cache"
    cache = PrefixCache(PrefixDecision.from_record(data), root)
    cache.prepare(cfg, model, splits, Console(quiet=True), build=False)
    if not cache.splits:
        return collator, None
    cache.install(model)
    return cache.collator(collator), cache
