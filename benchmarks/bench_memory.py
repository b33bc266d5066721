"""The memory model against one real training step of each example config's shrunken twin.

For every example config: `loralab plan CONFIG --measure` builds a 2-layer twin of the model's
family (random weights, the config's LoRA mapped onto it), runs forward/backward/optimizer step
and prints estimated vs measured per term. On a GPU the table adds the peak
(`torch.cuda.max_memory_allocated`) against the estimate's total minus the allowance; on a CPU the
peak row is absent. Ratios are estimated / measured.
Run: .venv/bin/python benchmarks/bench_memory.py [CONFIG ...]
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = [
    "seed000-qwen3-8b-phase1-attention.yaml",
    "seed000-qwen3-8b-phase3-all-linear.yaml",
    "seed002-gpt2-attention.yaml",
    "seed003-kobart-summarize.yaml",
    "seed003-polyglot-ko-12.8b-summarize.yaml",
    "smollm2-sft-korean.yaml",
]


def main(argv: list[str]) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from loralab.plan.estimate.setup import Overrides, setup_from_config
    from loralab.plan.experiment import load_and_plan
    from loralab.plan.measure.twin import measure_twin

    paths = [Path(a) for a in argv] or [ROOT / "examples" / n for n in DEFAULT]
    t = Table(title="Twin step: estimated / measured")
    terms = ["weights", "trainable", "gradients", "optimizer", "activations", "peak (total - overhead)"]
    for col in ["config", *terms, "s"]:
        t.add_column(col, justify="left" if col == "config" else "right")
    for p in paths:
        start = time.perf_counter()
        cfg, plan, _ = load_and_plan(p, with_options=False)
        setup, _ = setup_from_config(cfg, plan.arch, Overrides())
        cmp = measure_twin(cfg, plan, setup)
        r = cmp.ratios()
        t.add_row(
            p.stem, *(f"{r[k]:.4f}" if k in r else "-" for k in terms), f"{time.perf_counter() - start:.1f}"
        )
    Console(width=200).print(t)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
