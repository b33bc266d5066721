"""Printing what preflight found."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape


def print_preflight(report: Any, console: Console | None = None) -> None:
    """Every finding whole: messages carry file names, labels and exception text, so they are escaped
    (a label "[bold]" or "[/x]" is not rich markup) and never wrapped (a path stays on one line)."""
    console = console or Console(stderr=True)
    style = {"error": "red", "warning": "yellow", "info": "cyan"}
    if not report.findings:
        console.print("[green]preflight: no problems found[/]")
    for f in report.findings:
        console.print(
            f"[{style.get(f.severity, 'white')}]{f.severity}[/] {escape(f'[{f.check}]')} {escape(f.message)}",
            soft_wrap=True,
        )
        if f.fix:
            console.print(f"    fix: {escape(f.fix)}", soft_wrap=True)
    errors = sum(f.severity == "error" for f in report.findings)
    warnings = sum(f.severity == "warning" for f in report.findings)
    counts = ", ".join(
        f"{n} {word}{'s' if n != 1 else ''}" for n, word in ((errors, "error"), (warnings, "warning")) if n
    )
    verdict = "[green]ok[/]" if report.ok else "[red]would fail[/]"
    console.print(f"preflight: {verdict}" + (f" ({counts})" if counts else ""), soft_wrap=True)
