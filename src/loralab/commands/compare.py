"""`loralab compare RUN_DIR... | STUDY_DIR`: runs side by side, from run directories or from a study's
finished runs (labelled by run id), as a table or as JSON."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from loralab.experiments.record import STUDY_FILE, load_study
from loralab.experiments.study_report import resolve_run_dir
from loralab.io import print_json
from loralab.report.load import ReportError, Run, load_run, load_runs
from loralab.report.runs_table import build_runs_table, print_runs_table


def study_run_dirs(study_dir: Path) -> list[tuple[str, Path]]:
    """(run id, run directory) of each done run of a study, in study order."""
    study = load_study(study_dir)
    out = []
    for rec in study.runs:
        path = resolve_run_dir(study_dir, rec) if rec.status == "done" else None
        if path is not None:
            out.append((rec.id, path))
    if not out:
        raise ReportError(
            f"{study_dir}: the study has no finished run to compare "
            "(fix: wait for runs to finish, or `loralab study ... --resume`)"
        )
    return out


def load_targets(paths: list[Path]) -> list[Run]:
    """One study directory expands to its done runs; otherwise each path is a run directory."""
    if len(paths) == 1 and (paths[0] / STUDY_FILE).is_file():
        return [load_run(path, name=label) for label, path in study_run_dirs(paths[0])]
    studies = [p for p in paths if (p / STUDY_FILE).is_file()]
    if studies:
        raise ReportError(
            f"{studies[0]} is a study directory: give it alone, or give run directories "
            "(fix: `loralab compare STUDY_DIR` or `loralab compare RUN_DIR RUN_DIR ...`)"
        )
    return load_runs(paths)


def run_compare(
    paths: list[Path],
    *,
    as_json: bool,
    metric: str,
    reference: str | None,
    out: Console,
    n_resamples: int = 1000,
) -> None:
    runs = load_targets(paths)
    table = build_runs_table(runs, metric=metric, reference=reference, n_resamples=n_resamples)
    if as_json:
        print_json(table.to_json())
    else:
        print_runs_table(table, out)
