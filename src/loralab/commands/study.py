"""`loralab study STUDY.yaml --out DIR`: run a study with a live table of its runs (run, phase, seed,
status, elapsed, current epoch) on a terminal, one line per finished run otherwise, and a summary.
Returns the exit code: 1 when any run failed, else 0 (a bad study file raises ConfigError: 2)."""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from loralab.experiments.record import STUDY_FILE, RunRecord, StudyRecord
from loralab.experiments.runner import Progress, current_epoch, make_executor, run_study, summary_line

_STYLE = {"done": "green", "failed": "red", "running": "cyan", "queued": "dim", "skipped": "yellow"}


def _elapsed(run: RunRecord, started: dict[str, float], ended: dict[str, float]) -> str:
    """Wall time since this command started the run (until it ended); a run finished earlier (kept on
    --resume) shows its training time."""
    if run.id in started and run.status in ("running", "done", "failed"):
        secs = ended.get(run.id, time.monotonic()) - started[run.id]
    elif run.status == "done" and run.train_seconds is not None:
        secs = run.train_seconds
    else:
        return ""
    return f"{int(secs) // 60}:{int(secs) % 60:02d}"


def study_table(record: StudyRecord, started: dict[str, float], ended: dict[str, float]) -> Table:
    table = Table(title=f"study {record.name}", title_justify="left")
    for col in ("run", "phase", "seed", "status", "elapsed", "epoch", "result"):
        table.add_column(col, justify="right" if col in ("seed", "elapsed", "epoch") else "left")
    for r in record.runs:
        epoch = current_epoch(r) if r.status in ("running", "done") else None
        if r.status == "done":
            m = r.metrics or {}
            key = next((k for k in ("weighted_f1", "rougeL", "accuracy") if k in m), None)
            result = f"{key} {m[key]:.4f}" if key else ""
        elif r.status == "failed":
            result = (r.diagnosis.signature if r.diagnosis else "") or (r.error or "")[:60]
        else:
            result = r.reason or ""
        table.add_row(
            r.name,
            r.phase or "",
            str(r.seed),
            f"[{_STYLE.get(r.status, '')}]{r.status}[/]",
            _elapsed(r, started, ended),
            f"{epoch:.2f}" if epoch is not None else "",
            escape(result),
        )
    return table


def print_summary(record: StudyRecord, out_dir: Path, console: Console) -> None:
    counts = {s: sum(r.status == s for r in record.runs) for s in ("done", "failed", "skipped", "queued")}
    shown = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    console.print(f"study {escape(record.name)}: {len(record.runs)} runs: {shown}")
    for r in record.runs:
        if r.status == "failed":
            console.print(f"  [red]failed[/] {escape(r.id)}: {escape(r.error or '')}")
            if r.diagnosis is not None:
                console.print(f"    cause: {escape(r.diagnosis.cause)}")
                console.print(f"    fix:   {escape(r.diagnosis.fix)}")
            console.print(f"    log:   {escape(str(r.log))}")
    for b in record.baselines:
        what = b.error or "  ".join(f"{k} {v:.4f}" for k, v in (b.metrics or {}).items())
        console.print(f"  baseline {escape(b.name)}: {escape(what)}")
    for d in record.decisions:
        console.print(f"  after {escape(d.after)}: {escape(d.verdict)}")
    if record.selected:
        console.print(f"  selected: {escape(record.selected)}")
    console.print(f"record: {out_dir / STUDY_FILE}")


def run_study_command(
    study_file: Path,
    out_dir: Path,
    *,
    resume: bool = False,
    force: bool = False,
    executor: str = "local",
    max_parallel: int = 1,
    quiet: bool = False,
    console: Console | None = None,
) -> int:
    # soft_wrap: one line per finished run stays one line in a log, whatever its width
    console = console or Console(stderr=True, soft_wrap=True)
    ex = make_executor(executor, max_parallel)  # before the live table: a missing extra fails at once
    started: dict[str, float] = {}
    ended: dict[str, float] = {}
    live_view = not quiet and console.is_terminal

    def note_start(record: StudyRecord, run: RunRecord | None) -> None:
        if run is not None and run.status == "running":
            started[run.id] = time.monotonic()
            ended.pop(run.id, None)
        elif run is not None and run.status in ("done", "failed"):
            ended[run.id] = time.monotonic()

    seen: dict[str, StudyRecord] = {}

    def view() -> Table:
        # Redrawn twice a second from the latest record, so the epoch column moves between changes.
        return study_table(seen["record"], started, ended) if "record" in seen else Table()

    def refresh(record: StudyRecord, run: RunRecord | None) -> None:
        note_start(record, run)
        seen["record"] = record

    def line(record: StudyRecord, run: RunRecord | None) -> None:
        note_start(record, run)
        if not quiet and run is not None and run.status in ("done", "failed", "skipped"):
            console.print(summary_line(run), markup=False, highlight=False)

    progress: Progress = refresh if live_view else line
    shown = Live(console=console, refresh_per_second=2, get_renderable=view) if live_view else nullcontext()
    with shown:
        record = run_study(
            study_file,
            out_dir,
            resume=resume,
            force=force,
            executor=ex,
            quiet=quiet or live_view,  # the live table replaces the runner's own lines
            progress=progress,
        )
    print_summary(record, Path(out_dir), console)
    return 1 if any(r.status == "failed" for r in record.runs) else 0
