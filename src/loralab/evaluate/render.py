"""Printing evaluation results for a person."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def _ci(m: dict[str, Any], key: str) -> str:
    ci = (m.get("ci") or {}).get(key)
    return f"[{ci['low']:.4f}, {ci['high']:.4f}]" if ci else ""


def print_metrics(m: dict[str, Any], console: Console, where: Path | None = None) -> None:
    t = Table(title="evaluation" + (f" ({m['split']}, {m.get('n', '?')} rows)" if "split" in m else ""))
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_column("95% CI", justify="right")
    for key in ("accuracy", "weighted_f1", "macro_f1", "micro_f1", "tail_f1", "ece", "loss", "perplexity"):
        if isinstance(m.get(key), int | float):
            t.add_row(key, f"{m[key]:.4f}", _ci(m, key))
    for key in ("rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "chrf"):
        if isinstance(m.get(key), int | float):
            t.add_row(key, f"{m[key]:.4f}", "")
    for b in m.get("buckets", []):
        ci = b.get("ci")
        t.add_row(
            f"F1 {b['name']} ({b['classes']} classes)",
            f"{b['mean_f1']:.4f}",
            f"[{ci['low']:.4f}, {ci['high']:.4f}]" if ci else "",
        )
    console.print(t)
    if "rouge_tokenizer" in m:
        console.print(f"ROUGE tokenizer: {m['rouge_tokenizer']}")
    pairs = m.get("confusion_pairs") or []
    if pairs:
        console.print(
            "most frequent confusions: "
            + "; ".join(f"{p['gold']} -> {p['pred']} ({p['count']})" for p in pairs[:5])
        )
    if m.get("never_predicted"):
        console.print(f"never predicted: {', '.join(m['never_predicted'][:20])}")
    for w in m.get("warnings", []):
        console.print(f"[bold red]warning:[/] {w}")
    if where is not None:
        console.print(f"written: {where / 'metrics.json'}, {where / 'predictions.csv'}")
