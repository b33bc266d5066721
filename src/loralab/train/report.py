"""Printing what preflight found."""

from __future__ import annotations

from typing import Any

from rich.console import Console


def print_preflight(report: Any, console: Console | None = None) -> None:
    console = console or Console(stderr=True)
    style = {"error": "red", "warning": "yellow", "info": "cyan"}
    if not report.findings:
        console.print("[green]preflight: no problems found[/]")
    for f in report.findings:
        console.print(f"[{style.get(f.severity, 'white')}]{f.severity}[/] [{f.check}] {f.message}")
        if f.fix:
            console.print(f"    fix: {f.fix}")
    verdict = "[green]ok[/]" if report.ok else "[red]would fail[/]"
    console.print(f"preflight: {verdict}")
