"""Memory per GPU of the multi-GPU layouts: `plan --write-launch`'s estimate against a real step.

For the demo (MiniLM-L6 on Banking77) and a Llama-3.2-1B-shaped causal LM (random weights built from
its config: the hub is not reachable, and memory does not depend on the values), under each layout
DDP, ZeRO-2, ZeRO-3 and FSDP on the GPUs present:
- the launch folder is written by the project's own `write_launch` (what `loralab plan CONFIG --gpus G
  --layout L --write-launch DIR` writes), and its experiment.yaml gets a few-step override (max_steps,
  no evaluation or checkpoints, no tracking, no prefix cache);
- the folder's own launch.sh runs it (`loralab train -n G` through torchrun, or `accelerate launch`
  for FSDP);
- every rank's peak `torch.cuda.max_memory_allocated` is read by a `sitecustomize` hook this script
  puts on PYTHONPATH: loralab itself records the peak of rank 0 only (record.json), and a ZeRO or
  FSDP imbalance shows on the other ranks.
The table holds the plan's total per GPU, the part of it that the allocator sees (total minus the
CUDA context / fragmentation allowance, the figure bench_memory.py compares too), the measured peak
(largest rank), their ratio, and each layout's peak against DDP's from the same run.

The estimate assumes every sequence is max_length long, so the benchmark trains on rows written to
be longer than max_length (truncated to it): dynamic padding would otherwise shrink the activations.

Exits 2 with one line when no CUDA GPU is present (the ZeRO rows are skipped with a reason when
deepspeed is not importable). `--dry-run` only writes the launch files and prints the plan columns;
it runs on a CPU machine. `--on-cpu` runs the layouts as CPU processes (gloo; peak RSS, so the ratio
means nothing) to check the benchmark's own plumbing without a GPU.

Run: .venv/bin/python benchmarks/bench_distributed.py [--dry-run] [--gpus N] [--models demo,llama-1b]
     [--layouts ddp,zero2,zero3,fsdp] [--steps 2] [--out DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
LAYOUTS = ("ddp", "zero2", "zero3", "fsdp")
GIB = 2**30

# Llama-3.2-1B's config.json (meta-llama/Llama-3.2-1B, 1.236B parameters): the 3B in
# src/loralab/arch/bundled with the 1B's width, depth and heads. Token ids follow the tokenizer used
# here (SmolLM2's); the vocabulary stays Llama-3's so the embedding and logits are the 1B's size.
LLAMA_1B: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "hidden_act": "silu",
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-05,
    "rope_theta": 500000.0,
    "rope_scaling": {
        "factor": 32.0,
        "high_freq_factor": 4.0,
        "low_freq_factor": 1.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    "attention_bias": False,
    "mlp_bias": False,
    "tie_word_embeddings": True,
    "vocab_size": 128256,
    "torch_dtype": "bfloat16",
}

# Written as sitecustomize.py into a folder on the training processes' PYTHONPATH, so every process
# that torchrun or accelerate starts records its own peak without any change to loralab.
PEAK_HOOK = '''"""bench_distributed.py: this rank's peak device memory into $BENCH_PEAK_DIR/rank<R>.json."""
import atexit, importlib.machinery, importlib.util, json, os, resource, sys, threading, time

_DIR = os.environ.get("BENCH_PEAK_DIR")


def _record():
    torch = sys.modules.get("torch")
    cuda = torch is not None and torch.cuda.is_initialized()
    # Launchers (the torchrun agent, accelerate, loralab's parent) have no RANK and never touch CUDA.
    if not cuda and "RANK" not in os.environ:
        return None
    rec = {"rank": int(os.environ.get("RANK", 0)), "pid": os.getpid(), "host": os.uname().nodename}
    if cuda:
        # Per device, not "current": this may run on the poller thread, whose current device is 0.
        dev = int(os.environ.get("LOCAL_RANK", 0))
        rec.update(kind="cuda_max_allocated", peak=int(torch.cuda.max_memory_allocated(dev)),
                   reserved=int(torch.cuda.max_memory_reserved(dev)))
    else:
        rec.update(kind="cpu_peak_rss", peak=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return rec


def _write():
    rec = _record()
    if rec is None:
        return
    path = os.path.join(_DIR, "rank%d.json" % rec["rank"])
    with open(path + ".tmp", "w") as f:
        json.dump(rec, f)
    os.replace(path + ".tmp", path)


def _poll():
    # A rank killed by its launcher (a peer failed) never runs atexit: keep the last reading on disk.
    while True:
        time.sleep(1.0)
        try:
            _write()
        except Exception:
            pass


if _DIR:
    atexit.register(_write)
    threading.Thread(target=_poll, daemon=True).start()

# Hand over to the sitecustomize this file shadows, if the interpreter has one.
_here = os.path.dirname(os.path.abspath(__file__))
_rest = [p for p in sys.path if p and os.path.abspath(p) != _here]
_spec = importlib.machinery.PathFinder.find_spec("sitecustomize", _rest)
if _spec is not None and _spec.loader is not None:
    _spec.loader.exec_module(importlib.util.module_from_spec(_spec))
'''

# Builds the random 1B in a child process: CUDA initialised in this one would hold a context on GPU 0
# through every measured run.
BUILD_WEIGHTS = """
import sys, torch
from transformers import AutoConfig, AutoModelForCausalLM
folder = sys.argv[1]
device = "cuda" if torch.cuda.is_available() else "cpu"
torch.manual_seed(0)
with torch.device(device):
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder), dtype=torch.bfloat16)
model.save_pretrained(folder)
"""


@dataclass
class Row:
    """One (model, layout) of the table."""

    model: str
    layout: str
    gpus: int
    plan_total: int | None = None
    plan_alloc: int | None = None  # plan total minus the allowance outside max_memory_allocated
    peaks: list[int] = field(default_factory=list)  # by rank
    peak_kind: str = ""
    status: str = ""
    seconds: float | None = None

    @property
    def peak(self) -> int | None:
        return max(self.peaks) if self.peaks else None


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="Plan's per-GPU memory against a measured step for DDP, ZeRO-2, ZeRO-3 and FSDP.",
        epilog="Needs a CUDA GPU unless --dry-run (or --on-cpu, a plumbing check); exits 2 without one.",
    )
    ap.add_argument("--dry-run", action="store_true", help="write the launch files and print the plan only")
    ap.add_argument("--on-cpu", action="store_true", help="run as CPU processes (checks the benchmark)")
    ap.add_argument("--gpus", type=int, help="processes per layout (default: the GPUs present, else 2)")
    ap.add_argument("--models", default="demo,llama-1b", help="comma-separated: demo, llama-1b")
    ap.add_argument("--layouts", default=",".join(LAYOUTS), help="comma-separated: " + ", ".join(LAYOUTS))
    ap.add_argument("--steps", type=int, default=2, help="optimizer steps per run (default 2)")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per run (default 600)")
    ap.add_argument("--out", type=Path, help="work folder, kept (default: a temporary one, removed)")
    args = ap.parse_args(argv)
    bad = [x for x in args.layouts.split(",") if x not in LAYOUTS]
    bad += [x for x in args.models.split(",") if x not in MODELS]
    if bad:
        ap.error("unknown: " + ", ".join(bad))
    return args


def device_gpus(args: argparse.Namespace) -> tuple[int, str | None]:
    """Processes per layout, or why the benchmark cannot measure here (exit 2)."""
    import torch

    present = torch.cuda.device_count() if torch.cuda.is_available() else 0
    gpus = args.gpus or present or 2
    if args.dry_run or args.on_cpu:
        return gpus, None
    if present == 0:
        return gpus, (
            "bench_distributed: no CUDA GPU here (torch.cuda.device_count() == 0); "
            "--dry-run writes the launch files and prints the plan only"
        )
    if gpus > present:
        return gpus, f"bench_distributed: --gpus {gpus} but only {present} CUDA GPU(s) here"
    return gpus, None


def deepspeed_problem() -> str | None:
    try:
        import deepspeed  # noqa: F401
    except Exception as e:  # ImportError, or a broken build raising anything at import
        return f"deepspeed not importable ({type(e).__name__}: {str(e).splitlines()[0][:80]})"
    return None


def long_texts(rng: random.Random, words: list[str], n: int, min_words: int) -> list[str]:
    """`n` texts of at least `min_words` words drawn from `words` (longer than max_length in tokens)."""
    return [" ".join(rng.choices(words, k=min_words)) for _ in range(n)]


def banking_rows() -> list[tuple[str, str]]:
    from loralab.demo import data_folder

    with (data_folder() / "train.csv").open(encoding="utf-8", newline="") as f:
        return [(r["text"], r["category"]) for r in csv.DictReader(f)]


def demo_case(work: Path, rows: int) -> Path:
    """The demo's experiment (its model, LoRA and training_args) on full-length Banking77 rows."""
    from loralab.demo import write_demo_config

    folder = work / "demo"
    folder.mkdir(parents=True, exist_ok=True)
    cfg = write_demo_config(folder / "demo.yaml")
    real = banking_rows()
    labels = sorted({c for _, c in real})
    words = " ".join(t for t, _ in real).split()
    rng = random.Random(0)
    n = max(rows, 2 * len(labels))  # every label present, so the head keeps its 77 classes
    max_len = int(yaml.safe_load(cfg.read_text())["data"]["max_length"])
    texts = long_texts(rng, words, n, 2 * max_len)
    with (folder / "train.csv").open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "category"])
        w.writerows((t, labels[i % len(labels)]) for i, t in enumerate(texts))
    # A few short test rows: loralab wants something to score, and their batch stays far below the
    # training step's peak.
    with (folder / "test.csv").open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "category"])
        w.writerows(real[:: len(real) // 8][:8])
    raw = yaml.safe_load(cfg.read_text())
    raw["data"].update(train_file=str(folder / "train.csv"), test_file=str(folder / "test.csv"))
    cfg.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return cfg


def llama_1b_folder(folder: Path, *, weights: bool) -> Path:
    """config.json, SmolLM2's tokenizer (it has a chat template) and, to train, random bf16 weights."""
    from transformers import AutoTokenizer

    from loralab.models import resolve_local_alias

    folder.mkdir(parents=True, exist_ok=True)
    src = resolve_local_alias("smollm2-135m-instruct")
    assert src is not None
    tok = AutoTokenizer.from_pretrained(src)
    tok.save_pretrained(folder)
    ids = {k: getattr(tok, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    (folder / "config.json").write_text(json.dumps({**LLAMA_1B, **ids}, indent=2), encoding="utf-8")
    if weights and not any(folder.glob("*.safetensors")):
        subprocess.run([sys.executable, "-c", BUILD_WEIGHTS, str(folder)], check=True)
    return folder


def llama_case(work: Path, rows: int, *, weights: bool) -> Path:
    """Causal-LM SFT of the 1B: LoRA r=16 on every linear layer, bf16, batch 4 x 512 tokens."""
    folder = work / "llama-1b"
    model = llama_1b_folder(folder / "model", weights=weights)
    max_len = 512
    words = " ".join(t for t, _ in banking_rows()).split()
    rng = random.Random(0)
    with (folder / "train.jsonl").open("w", encoding="utf-8") as f:
        for p, r in zip(
            long_texts(rng, words, rows, max_len // 4), long_texts(rng, words, rows, max_len), strict=True
        ):
            f.write(json.dumps({"prompt": p, "response": r}) + "\n")
    with (folder / "test.jsonl").open("w", encoding="utf-8") as f:  # scored after training: keep it small
        for p, r in zip(long_texts(rng, words, 4, 8), long_texts(rng, words, 4, 8), strict=True):
            f.write(json.dumps({"prompt": p, "response": r}) + "\n")
    all_linear = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    cfg: dict[str, Any] = {
        "experiment": {"name": "bench-llama-1b"},
        "model": {"name_or_path": str(model), "task": "causal-lm", "torch_dtype": "bfloat16"},
        "lora": {
            "config": {
                "task_type": "CAUSAL_LM",
                "r": 16,
                "lora_alpha": 32,
                "lora_dropout": 0.0,
                "target_modules": all_linear,
            }
        },
        "data": {
            "train_file": str(folder / "train.jsonl"),
            "test_file": str(folder / "test.jsonl"),
            "prompt_field": "prompt",
            "response_field": "response",
            "max_length": max_len,
        },
        "training_args": {
            "per_device_train_batch_size": 4,
            "learning_rate": 2.0e-4,
            "bf16": True,
            "num_train_epochs": 1,
            "seed": 42,
        },
        "tracking": {"backend": "none"},
    }
    path = folder / "llama-1b.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


MODELS: dict[str, Callable[[Path, int, bool], Path]] = {
    "demo": lambda work, rows, weights: demo_case(work, rows),
    "llama-1b": lambda work, rows, weights: llama_case(work, rows, weights=weights),
}


def write_layout(config: Path, layout: str, gpus: int, out: Path) -> tuple[int, int]:
    """`loralab plan CONFIG --gpus G --layout L --write-launch OUT`, in process; the layout's per-GPU
    total and the part of it inside max_memory_allocated (total minus the overhead allowance)."""
    from loralab.arch.resolve import resolve_model
    from loralab.commands.launch import write_launch
    from loralab.plan.estimate.memory import estimate_memory
    from loralab.plan.estimate.setup import Overrides, setup_from_config
    from loralab.plan.experiment import load_and_plan

    cfg, plan, _ = load_and_plan(config, with_options=False)
    # write_launch wants the config's own estimate, though it only keeps its budget (none here).
    setup, _ = setup_from_config(cfg, plan.arch, Overrides(gpus=gpus))
    hf_cfg = resolve_model(cfg.model.name_or_path).config
    base = estimate_memory(plan, hf_cfg, setup, budget=None, search=False)
    files = write_launch(cfg, plan, base, out, gpus=gpus, nodes=1, layout=layout)
    per = files.memory.per_device
    return per["total"], per["total"] - per["overhead"]


def few_steps(launch: Path, steps: int, on_cpu: bool) -> None:
    """The written experiment.yaml, cut to `steps` optimizer steps with nothing else in the run."""
    path = launch / "experiment.yaml"
    header = "".join(line for line in path.read_text().splitlines(keepends=True) if line.startswith("#"))
    raw = yaml.safe_load(path.read_text())
    ta = raw.setdefault("training_args", {})
    ta.update(max_steps=steps, eval_strategy="no", save_strategy="no", logging_steps=1)
    if on_cpu:
        ta.pop("bf16", None)  # the plumbing check: fp32 on CPU
        ta["use_cpu"] = True
    raw["tracking"] = {"backend": "none"}
    raw["prefix_cache"] = "off"  # the layouts' memory, not the cache's
    path.write_text(header + yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")


def run_env(hook: Path, peaks: Path, run_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # loralab, accelerate
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(hook), env.get("PYTHONPATH")) if p)
    env.update(BENCH_PEAK_DIR=str(peaks), NODE_RANK="0", MASTER_ADDR="127.0.0.1", RUN_DIR=str(run_dir))
    return env


def run_layout(launch: Path, row: Row, hook: Path, timeout: int) -> None:
    """launch.sh as written, one run; fills the row's per-rank peaks and status."""
    script = launch / "launch.sh"
    peaks, run_dir = launch / "peaks", launch / "run"
    shutil.rmtree(peaks, ignore_errors=True)
    shutil.rmtree(run_dir, ignore_errors=True)
    peaks.mkdir()
    env = run_env(hook, peaks, run_dir)
    t0 = time.perf_counter()
    with (launch / "train.log").open("w") as log:
        try:
            cmd = ["bash", str(script)]
            done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=timeout)
            rc = done.returncode
        except subprocess.TimeoutExpired:
            rc = -1
    row.seconds = time.perf_counter() - t0
    recs = sorted((json.loads(p.read_text()) for p in peaks.glob("rank*.json")), key=lambda r: r["rank"])
    row.peaks = [int(r["peak"]) for r in recs]
    row.peak_kind = recs[0]["kind"] if recs else ""
    if rc == 0:
        row.status = "ok"
    else:
        how = "timeout" if rc == -1 else f"rc {rc}"
        row.status = f"{how}: {first_error(launch / 'train.log')[:120]} (see {launch}/train.log)"


def first_error(log: Path) -> str:
    """The cause in a failed run's log: loralab's own `error:` line, else the last exception line
    (torchrun's summary that follows a worker's failure says nothing about why)."""
    lines = [x.strip() for x in log.read_text(errors="replace").splitlines() if x.strip()]
    for line in lines:
        if line.startswith(("error:", "internal error:")):
            return line
    excs = [x for x in lines if re.match(r"^[\w.]+(Error|Exception)\b", x)]
    return excs[-1] if excs else (lines[-1] if lines else "no output")


def gib(n: int | None) -> str:
    return "-" if n is None else f"{n / GIB:.2f}"


def table(rows: list[Row], title: str) -> Table:
    t = Table(title=title)
    for col in ["model", "layout", "GPUs", "plan GiB/GPU", "plan alloc GiB", "peak GiB (max rank)"]:
        t.add_column(col, justify="left" if col in ("model", "layout") else "right")
    for col in ["per rank", "plan/peak", "vs DDP", "s", "status"]:
        t.add_column(col, justify="left" if col in ("per rank", "status") else "right")
    ddp = {r.model: r.peak for r in rows if r.layout == "ddp"}
    for r in rows:
        base = ddp.get(r.model)
        t.add_row(
            r.model,
            r.layout,
            str(r.gpus),
            gib(r.plan_total),
            gib(r.plan_alloc),
            gib(r.peak),
            " ".join(gib(p) for p in r.peaks) or "-",
            f"{r.plan_alloc / r.peak:.2f}"
            if r.plan_alloc and r.peak and r.peak_kind.startswith("cuda")
            else "-",
            f"{r.peak / base:.2f}" if r.peak and base else "-",
            "-" if r.seconds is None else f"{r.seconds:.0f}",
            escape(r.status),  # log lines quote [brackets]
        )
    return t


def bench(args: argparse.Namespace, work: Path, gpus: int) -> list[Row]:
    ds_problem = deepspeed_problem()
    hook = work / "_peak_hook"
    hook.mkdir(parents=True, exist_ok=True)
    (hook / "sitecustomize.py").write_text(PEAK_HOOK, encoding="utf-8")
    # Enough rows for every step on every rank with the largest per-device batch used here (32).
    n_rows = 32 * gpus * (args.steps + 2)
    rows: list[Row] = []
    for model in args.models.split(","):
        try:
            config = MODELS[model](work, n_rows, not args.dry_run)
        except Exception as e:  # e.g. the demo model or SmolLM2's tokenizer package not installed
            why = f"skipped: {model} not set up ({type(e).__name__}: {str(e).splitlines()[0][:100]})"
            rows += [Row(model, layout, gpus, status=why) for layout in args.layouts.split(",")]
            continue
        for layout in args.layouts.split(","):
            row = Row(model, layout, gpus)
            rows.append(row)
            launch = work / f"{model}-{layout}-{gpus}gpu"
            try:
                row.plan_total, row.plan_alloc = write_layout(config, layout, gpus, launch)
            except Exception as e:  # a LoralabError names the key; the other rows still run
                row.status = f"write-launch failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
                continue
            if args.dry_run:
                row.status = f"dry run: {launch}"
            elif layout.startswith("zero") and ds_problem:
                row.status = f"skipped: {ds_problem}"
            else:
                few_steps(launch, args.steps, args.on_cpu)
                run_layout(launch, row, hook, args.timeout)
    return rows


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here comes from the hub
    gpus, problem = device_gpus(args)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    work = args.out or Path(tempfile.mkdtemp(prefix="bench_distributed-"))
    rows = bench(args, work, gpus)
    mode = "dry run, plan only" if args.dry_run else "CPU plumbing check" if args.on_cpu else "measured"
    console = Console(width=220)
    console.print(table(rows, f"Per-GPU memory by layout ({mode}); plan alloc = plan total - allowance"))
    if any(r.peak_kind == "cpu_peak_rss" for r in rows):
        console.print("peaks are process RSS on CPU: the plan/peak ratio does not apply")
    # A temporary folder goes once every run is ok (it holds the 1B's 2.5 GB of weights); the launch
    # files of a dry run and the logs of a failed run stay for reading.
    failed = [r for r in rows if not r.status.endswith("ok") and not r.status.startswith("skipped")]
    if args.out is None and not args.dry_run and not failed:
        shutil.rmtree(work, ignore_errors=True)
    else:
        console.print(f"launch files and logs in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
