"""Rich tables for the memory, time, prefix-cache and twin-measurement parts of `loralab plan`."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from loralab.plan.estimate.memory import DEVICE_TERMS, HOST_TERMS, MemoryEstimate
from loralab.plan.estimate.prefix_cache import PrefixCacheEstimate
from loralab.plan.render import human_bytes

GIB = 2**30

_WHAT = {
    "weights": "frozen base weights",
    "trainable": "trainable parameters (LoRA + saved modules)",
    "gradients": "gradients of the trainable parameters",
    "optimizer": "optimizer states",
    "activations": "activations kept for backward",
    "transient": "largest temporary (loss / a layer's backward)",
    "overhead": "CUDA context + allocator allowance",
}


def gib(n: float) -> str:
    return f"{n / GIB:,.2f}"


def memory_table(est: MemoryEstimate) -> Table:
    s = est.setup
    sharding = s.sharding
    on_cpu = getattr(s, "device", "cuda") == "cpu"
    where = "CPU" if on_cpu else f"{s.gpus} GPU" + ("s" if s.gpus != 1 else "")
    if sharding is not None and getattr(sharding, "zero_stage", None) is not None:
        where += f", DeepSpeed ZeRO-{sharding.zero_stage}"
        if getattr(sharding, "offload_optimizer", None):
            where += f", optimizer offload to {sharding.offload_optimizer}"
        if getattr(sharding, "offload_param", None):
            where += f", parameter offload to {sharding.offload_param}"
    title = (
        f"Memory per device ({where}; micro-batch {s.micro_batch} x {s.seq_len} tokens, "
        f"{'gradient checkpointing, ' if s.gradient_checkpointing else ''}{s.attn_implementation}, "
        f"{s.optim})"
    )
    t = Table(title=title, title_justify="left")
    t.add_column("term")
    t.add_column("what")
    t.add_column("bytes", justify="right")
    t.add_column("GiB", justify="right")
    for k in DEVICE_TERMS:
        if not est.modelled and k in ("activations", "transient"):
            t.add_row(k, _WHAT[k], "not modelled", "-")
            continue
        what = "process (torch, libraries) + allocator allowance" if on_cpu and k == "overhead" else _WHAT[k]
        t.add_row(k, what, f"{est.per_device[k]:,}", gib(est.per_device[k]))
    total = est.per_device["total"]
    t.add_row("[bold]total[/]", "", f"[bold]{total:,}[/]", f"[bold]{gib(total)}[/]")
    if est.host.get("total"):
        for k in HOST_TERMS:
            if est.host[k]:
                t.add_row(f"host {k}", "host RAM per process (offload)", f"{est.host[k]:,}", gib(est.host[k]))
        host = est.host["total"]
        t.add_row("host total", f"per process; x{s.gpus} processes in all", f"{host:,}", gib(host))
    else:
        t.add_row("host total", "host RAM for model states (no offload)", "0", gib(0))
    return t


def verdict_lines(est: MemoryEstimate) -> list[str]:
    if est.budget is None:
        return ["no memory budget: pass --gpu-mem (e.g. 80GiB) for a verdict"]
    total = est.per_device["total"]
    if est.fits is None:
        return [
            f"unknown: model states alone need {gib(est.per_device['total'])} GiB of {gib(est.budget)} GiB"
        ]
    word = "[green]fits[/]" if est.fits else "[red]does not fit[/]"
    lines = [f"{word}: {gib(total)} GiB needed of {gib(est.budget)} GiB per device"]
    if est.max_micro_batch is not None:
        lines.append(
            f"largest micro-batch at {est.setup.seq_len} tokens: {est.max_micro_batch or 'none fits'}; "
            f"longest sequence at micro-batch {est.setup.micro_batch}: {est.max_seq_len or 'none fits'}"
        )
    return lines


UNKNOWN_TOKENS = "unknown (pass --tokens or data.train_file)"
_PREFIXES = ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def si(value: float, unit: str) -> str:
    """4 significant digits with an SI prefix: 48.31 GFLOP."""
    for scale, prefix in _PREFIXES:
        if abs(value) >= scale:
            return f"{value / scale:.4g} {prefix}{unit}"
    return f"{value:.4g} {unit}"


def duration(hours: float) -> str:
    """12.3 h; 1.5 min (0.025 h); 2.40 s (0.000667 h); days beside anything over two days."""
    if hours >= 48:
        return f"{hours:,.0f} h = {hours / 24:,.1f} days"
    if hours >= 1:
        return f"{hours:.3g} h"
    if hours >= 1 / 60:
        return f"{hours * 60:.3g} min ({hours:.3g} h)"
    return f"{hours * 3600:.3g} s ({hours:.3g} h)"


def time_table(tm: Any) -> Table:
    """The `TimeEstimate` in words with units; the rows that need the token count say how to give it
    when it is unknown (no --tokens and no readable data.train_file)."""
    t = Table(title="Training time", title_justify="left")
    t.add_column("quantity")
    t.add_column("value", justify="right")
    gpus = f"{tm.gpus} GPU" + ("s" if tm.gpus != 1 else "")
    work = "forward + backward" + (" + recomputed forward" if tm.flops_recompute else "")
    t.add_row(f"FLOPs per token ({work})", si(tm.flops_per_token, "FLOP"))
    t.add_row("  forward, per micro-batch step", si(tm.flops_forward, "FLOP"))
    t.add_row("  backward, per micro-batch step", si(tm.flops_backward, "FLOP"))
    if tm.flops_recompute:
        t.add_row("  recomputed forward (checkpointing), per step", si(tm.flops_recompute, "FLOP"))
    tokens_per_epoch = tm.tokens_per_epoch or None
    source = str(tm.tokens_source or "")
    if tokens_per_epoch is None:
        t.add_row("tokens per epoch", UNKNOWN_TOKENS)
        if source:
            why = source.removeprefix("unknown:").strip()
            t.add_row("  why unknown", why)
    else:
        t.add_row("tokens per epoch", f"{tokens_per_epoch:,} tokens")
        if source:
            t.add_row("  counted from", source)
    t.add_row("epochs", f"{tm.epochs:g}")
    tokens = tm.tokens if tokens_per_epoch is not None else None
    t.add_row("tokens in all (epochs x tokens per epoch)", f"{tokens:,} tokens" if tokens else UNKNOWN_TOKENS)
    t.add_row("GPUs", f"{tm.gpus}")
    t.add_row("sustained rate", f"{tm.tflops_per_gpu:.4g} TFLOP/s per GPU x {gpus}")
    t.add_row("  rate from", str(tm.rate_source))
    hours = tm.hours if tokens else None
    shown = duration(hours) if hours else UNKNOWN_TOKENS if not tokens else "unknown (no sustained rate)"
    t.add_row("hours (matmul FLOPs at the sustained rate)", shown)
    return t


def measure_table(rows: list[tuple[str, int | None, int | None]]) -> Table:
    t = Table(title="Twin measurement: estimate vs one real training step", title_justify="left")
    t.add_column("term")
    t.add_column("estimated", justify="right")
    t.add_column("measured", justify="right")
    t.add_column("ratio", justify="right")
    for term, e, m in rows:
        ratio = f"{e / m:.3f}" if e is not None and m else "-"
        t.add_row(term, f"{e:,}" if e is not None else "-", f"{m:,}" if m is not None else "-", ratio)
    return t


def print_memory(est: MemoryEstimate, console: Console) -> None:
    console.print(memory_table(est))
    for line in verdict_lines(est):
        console.print(line)
    for n in est.notes:
        console.print(f"[dim]note: {n}[/]")


def _speedup(x: float | None, unknown: str) -> str:
    return f"{x:.2f}x" if x is not None else unknown


def prefix_cache_table(pc: PrefixCacheEstimate) -> Table:
    """The `PrefixCacheEstimate`: what is cached, its size and cost, and the predicted speedups
    (ratios of matmul FLOPs; the module docstring of loralab.plan.estimate.prefix_cache has the
    formulas). Without a prefix only the verdict and its reason."""
    t = Table(title=f"Prefix cache (prefix_cache: {pc.mode})", title_justify="left")
    t.add_column("quantity")
    t.add_column("value", justify="right")
    t.add_row("used in training", "yes" if pc.used else "no")
    t.add_row("  why", pc.reason)
    if not pc.cached_layers:
        return t
    where = "the decoder" if pc.encoder else f"layer {pc.boundary_layer} of {pc.num_layers} ({pc.stack})"
    t.add_row("training starts at", where)
    t.add_row("cached", f"{pc.layers_text}: {pc.hidden:,} x {pc.dtype} per token")
    size = human_bytes(pc.bytes_on_disk) if pc.bytes_on_disk is not None else UNKNOWN_TOKENS
    t.add_row("on disk (every split)", size)
    for name, sp in pc.splits.items():
        rows = f"{sp.rows:,} rows" if sp.rows is not None else "rows unknown"
        toks = f"{sp.tokens:,} tokens" if sp.tokens is not None else "tokens unknown"
        t.add_row(f"  {name}", f"{rows}, {toks}")
    flops = (
        ("build (the prefix's forward over every cached token)", pc.build_flops),
        ("FLOPs per micro-batch step without the cache", pc.flops_per_step_uncached),
        ("FLOPs per micro-batch step with the cache", pc.flops_per_step_cached),
    )
    for label, value in flops:
        t.add_row(label, si(value, "FLOP") if value is not None else "unknown")
    t.add_row("predicted speedup per step", _speedup(pc.speedup_step, "unknown"))
    evals = pc.evals_per_epoch
    passes = f" + {evals:g} validation pass{'es' if evals != 1 else ''}" if evals else ""
    if evals is None:
        passes = " + validation passes"
    t.add_row(f"  per epoch (training{passes})", _speedup(pc.speedup_epoch, UNKNOWN_TOKENS))
    scoring = " + test scoring" if "test" in pc.splits else ""
    t.add_row(
        f"  whole run ({pc.epochs:g} epoch{'' if pc.epochs == 1 else 's'} + the build{scoring})",
        _speedup(pc.speedup_run, UNKNOWN_TOKENS),
    )
    return t


def print_prefix_cache(pc: PrefixCacheEstimate, console: Console) -> None:
    console.print(prefix_cache_table(pc))
    for n in pc.notes:
        console.print(f"[dim]note: {n}[/]")
