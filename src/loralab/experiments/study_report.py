"""`loralab report STUDY_DIR`: a study's Markdown + self-contained HTML report from `study.json` and its
runs' directories: the phase/run table (baselines as rows), the decision trail in words, per-bucket F1
per phase, the metric against trainable parameters and against training time with the Pareto front
marked, failures with their diagnoses and skipped runs with their reasons.

Numbers come from study.json (which copies each run's metrics.json); only the per-bucket F1 is read
from the run directories, since the study record keeps scalars only.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from loralab.experiments.record import STATUSES, Baseline, Decision, RunRecord, StudyRecord, load_study
from loralab.io import flatten
from loralab.report import plots
from loralab.report.build import ReportPaths
from loralab.report.compare import METRIC_NAMES
from loralab.report.document import (
    Block,
    Bullets,
    Document,
    Heading,
    Image,
    Paragraph,
    Table,
    fmt_metric,
    fmt_plain,
)
from loralab.report.html import write_html
from loralab.report.load import ReportError, Run, load_run
from loralab.report.markdown import write_markdown

SCORE_METRICS = ("accuracy", "weighted_f1", "macro_f1", "tail_f1", "rouge1", "rouge2", "rougeL")
PLOT_METRICS = ("weighted_f1", "rougeL", "accuracy", "macro_f1", "rouge1")
FIX_OUT = "pass --out with a folder you can write to"


def pareto_front(points: list[tuple[str, float, float]]) -> set[str]:
    """Labels of the (label, cost, score) points that no other point dominates: none is at most as
    costly and at least as good while strictly better in one of the two."""
    front = set()
    for label, cost, score in points:
        dominated = any(
            c <= cost and s >= score and (c < cost or s > score) for other, c, s in points if other != label
        )
        if not dominated:
            front.add(label)
    return front


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _metric_of(study: StudyRecord, metric: str | None) -> str | None:
    if metric:
        return metric
    seen = {k for r in study.runs for k in (r.metrics or {})}
    seen |= {k for b in study.baselines for k in (b.metrics or {})}
    return next((m for m in PLOT_METRICS if m in seen), None)


def resolve_run_dir(study_dir: Path, rec: RunRecord) -> Path | None:
    """The run's directory: study.json's `run_dir` as written (absolute, or relative to where the study
    ran), relative to the study directory, or the fixed layout STUDY_DIR/runs/<id>/run, whichever
    exists first; a study folder that was moved or copied elsewhere still finds its runs."""
    candidates = []
    if rec.run_dir:
        p = Path(rec.run_dir)
        candidates += [p] if p.is_absolute() else [study_dir / p, p]
    candidates.append(study_dir / "runs" / rec.id / "run")
    found = next((c for c in candidates if c.is_dir()), None)
    return found or (candidates[0] if rec.run_dir else None)


def _seconds(s: Any) -> str:
    v = _number(s)
    if v is None:
        return "n/a"
    return f"{v:.1f}" if v < 600 else f"{v:,.0f}"


def _run_table(study: StudyRecord, metrics: list[str]) -> Table:
    header = ["run", "phase", "model", "seed", "status", *(METRIC_NAMES.get(m, m) for m in metrics),
              "trainable params", "train time (s)"]  # fmt: skip
    rows = []
    for r in study.runs:
        mark = " (selected)" if study.selected in (r.name, r.id) else ""
        rows.append([r.id + mark, fmt_plain(r.phase), fmt_plain(r.model), str(r.seed), r.status,
                     *(fmt_metric((r.metrics or {}).get(m)) for m in metrics),
                     fmt_plain(r.trainable_params), _seconds(r.train_seconds)])  # fmt: skip
    for b in study.baselines:
        status = "baseline (failed)" if b.error else "baseline"
        rows.append([b.name, "baseline", f"predictions: {Path(b.predictions).name}", "n/a", status,
                     *(fmt_metric((b.metrics or {}).get(m)) for m in metrics), "n/a", "n/a"])  # fmt: skip
    return Table(header, rows)


def seed_summary(study: StudyRecord, metric: str) -> list[dict[str, Any]]:
    """Per run name with more than one finished seed: the seeds, mean and sample standard deviation of
    the metric (one seed's gain can be noise; the spread across seeds says how much)."""
    by_name: dict[str, list[RunRecord]] = {}
    for r in study.runs:
        if r.status == "done" and _number((r.metrics or {}).get(metric)) is not None:
            by_name.setdefault(r.name, []).append(r)
    out = []
    for name, recs in by_name.items():
        if len(recs) < 2:
            continue
        values = [float((r.metrics or {})[metric]) for r in recs]
        out.append({"name": name, "phase": recs[0].phase, "seeds": [r.seed for r in recs],
                    "mean": statistics.fmean(values), "stdev": statistics.stdev(values),
                    "min": min(values), "max": max(values)})  # fmt: skip
    return out


def _seed_blocks(study: StudyRecord, metric: str | None) -> list[Block]:
    rows = seed_summary(study, metric) if metric else []
    if not rows or metric is None:
        return []
    name = METRIC_NAMES.get(metric, metric)
    return [
        Heading(2, f"Across seeds ({name})"),
        Table(["run", "phase", "seeds", "mean", "std (n-1)", "min", "max"],
              [[r["name"], fmt_plain(r["phase"]), fmt_plain(r["seeds"]), fmt_metric(r["mean"]),
                fmt_metric(r["stdev"]), fmt_metric(r["min"]), fmt_metric(r["max"])] for r in rows]),
    ]  # fmt: skip


def _value_text(v: Any) -> str:
    n = _number(v)
    if n is not None:
        return f"{v:,}" if isinstance(v, int) else f"{n:.4g}"
    if isinstance(v, list | tuple | dict):
        return json.dumps(v, ensure_ascii=False, default=str)
    return fmt_plain(v)


def decision_sentence(d: Decision) -> str:
    """One decision in words: the verdict first, then the rule and the numbers it read. The thresholds
    (`rules.*`, the same in every decision) are listed once under the trail, and per-seed detail
    stays in study.json."""
    shown = {
        k: v
        for k, v in flatten(d.inputs).items()
        if not k.startswith("rules.") and not k.endswith("per_seed")
    }
    inputs = "; ".join(f"{k} = {_value_text(v)}" for k, v in shown.items())
    return f"After {d.after}: {d.verdict}. Rule: {d.rule}" + (f"; read {inputs}" if inputs else "") + "."


def _decision_blocks(study: StudyRecord) -> list[Block]:
    blocks: list[Block] = [Heading(1, "Decision trail")]
    if not study.decisions:
        blocks.append(Paragraph("No decision rule was evaluated in this study."))
    else:
        blocks.append(Bullets([decision_sentence(d) for d in study.decisions]))
    thresholds = {
        k: v for d in study.decisions for k, v in flatten(d.inputs).items() if k.startswith("rules.")
    }
    if thresholds:
        listed = "; ".join(f"{k.removeprefix('rules.')} = {_value_text(v)}" for k, v in thresholds.items())
        blocks.append(Paragraph(f"Thresholds: {listed}."))
    chosen = study.selected or "none"
    blocks.append(Paragraph(f"Selected run: {chosen}."))
    return blocks


def _load_done(study_dir: Path, study: StudyRecord) -> tuple[list[Run], list[str]]:
    runs, notes = [], []
    for rec in study.runs:
        path = resolve_run_dir(study_dir, rec)
        if rec.status != "done" or path is None:
            continue
        label = f"{rec.phase}: {rec.id}" if rec.phase else rec.id
        try:
            runs.append(load_run(path, name=label))
        except ReportError as e:  # a moved or damaged run keeps the rest of the report
            notes.append(f"{rec.id}: run directory not read ({e})")
    return runs, notes


def _bucket_blocks(runs: list[Run], notes: list[str], img_dir: Path) -> list[Block]:
    blocks: list[Block] = [Heading(1, "F1 by training-frequency bucket, per phase")]
    names = list(dict.fromkeys(str(b.get("name", "")) for r in runs for b in r.buckets))
    if names:
        rows = []
        for name in names:
            cells = []
            for r in runs:
                b = next((b for b in r.buckets if str(b.get("name", "")) == name), None)
                cells.append(fmt_metric(b.get("mean_f1")) if b else "n/a")
            rows.append([name, *cells])
        blocks.append(Table(["bucket", *(r.name for r in runs)], rows))
        bars = plots.bucket_bars(runs, img_dir / "study-buckets.png")
        if bars:
            blocks.append(Image(bars, "per-bucket F1 by run"))
    else:
        blocks.append(Paragraph("No finished run with per-bucket F1 (generation runs have none)."))
    if notes:
        blocks.append(Bullets(notes))
    return blocks


def _cost_blocks(study: StudyRecord, metric: str | None, img_dir: Path) -> list[Block]:
    blocks: list[Block] = [Heading(1, "Score against cost")]
    if metric is None:
        return [*blocks, Paragraph("No run has a metric to plot.")]
    name = METRIC_NAMES.get(metric, metric)
    blocks.append(
        Paragraph(
            f"The {name} of each finished run against its trainable parameters and its training time. "
            "Runs on the Pareto front (red) are those no other run beats on both the score and the cost."
        )
    )
    for key, what, file in (
        ("trainable_params", "trainable parameters", "pareto-params.png"),
        ("train_seconds", "training time (s)", "pareto-time.png"),
    ):
        points = []
        for r in study.runs:
            cost, score = _number(getattr(r, key)), _number((r.metrics or {}).get(metric))
            if r.status == "done" and cost is not None and score is not None:
                points.append((r.id, cost, score))
        front = pareto_front(points)
        image = plots.pareto_scatter(points, front, img_dir / file, xlabel=what, ylabel=name,
                                     title=f"{name} against {what}")  # fmt: skip
        if image is None:
            blocks.append(Paragraph(f"No finished run has both {name} and {what}."))
            continue
        blocks.append(Image(image, f"{name} against {what}, Pareto front marked"))
        on = sorted(front, key=lambda label: next(c for lb, c, _ in points if lb == label))
        blocks.append(Paragraph(f"Pareto front by {what}: {', '.join(on)}."))
    return blocks


def failure_lines(r: RunRecord) -> list[str]:
    lines = [f"exit code: {fmt_plain(r.exit_code)}", f"error: {r.error or 'n/a'}"]
    d = r.diagnosis
    if d is None:
        lines.append("diagnosis: no known failure signature matched; read the log")
    else:
        lines += [f"diagnosis: {d.signature}: {d.cause}", f"fix: {d.fix}"]
        if d.evidence:
            lines.append(f"evidence: {d.evidence}")
    if r.log:
        lines.append(f"log: {r.log}")
    return lines


def _failure_blocks(study: StudyRecord) -> list[Block]:
    failed = [r for r in study.runs if r.status == "failed"]
    bad_baselines: list[Baseline] = [b for b in study.baselines if b.error]
    blocks: list[Block] = [Heading(1, "Failures")]
    if not failed and not bad_baselines:
        return [*blocks, Paragraph("No run failed.")]
    for r in failed:
        blocks += [Heading(2, f"{r.id} ({r.phase or 'no phase'}, {r.model})"), Bullets(failure_lines(r))]
    for b in bad_baselines:
        blocks += [Heading(2, f"baseline {b.name}"), Bullets([f"error: {b.error}"])]
    return blocks


def _skipped_blocks(study: StudyRecord) -> list[Block]:
    skipped = [r for r in study.runs if r.status == "skipped"]
    if not skipped:
        return []
    return [
        Heading(1, "Skipped runs"),
        Table(["run", "phase", "reason"], [[r.id, fmt_plain(r.phase), r.reason or "n/a"] for r in skipped]),
    ]


def _summary(study: StudyRecord) -> Paragraph:
    counts = {s: sum(r.status == s for r in study.runs) for s in STATUSES}
    parts = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    return Paragraph(
        f"Study {study.name} ({study.kind}): {len(study.runs)} runs ({parts or 'none'}), "
        f"{len(study.baselines)} baseline(s), {len(study.decisions)} decision(s); selected: "
        f"{study.selected or 'none'}."
    )


def _make_folder(out: Path) -> Path:
    if out.exists() and not out.is_dir():
        raise ReportError(f"{out}: is a file, but the report needs a folder (fix: {FIX_OUT})")
    img_dir = out / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    return img_dir


def build_study_report(
    study_dir: Path, out_dir: Path | None = None, *, metric: str | None = None
) -> ReportPaths:
    """Write out_dir/report.md with its PNGs in out_dir/images and the self-contained out_dir/report.html
    (default out_dir: STUDY_DIR/report). `metric` defaults to weighted F1 (ROUGE-L for generation)."""
    study_dir = Path(study_dir)
    study = load_study(study_dir)
    out = Path(out_dir) if out_dir is not None else study_dir / "report"
    img_dir = _make_folder(out)
    scored = [r.metrics or {} for r in study.runs] + [b.metrics or {} for b in study.baselines]
    shown = [m for m in SCORE_METRICS if any(m in x for x in scored)]
    runs, notes = _load_done(study_dir, study)
    doc = Document(f"loralab study report: {study.name}")
    metric_name = _metric_of(study, metric)
    doc.add(Heading(1, "Runs"), _summary(study), _run_table(study, shown))
    doc.add(*_seed_blocks(study, metric_name))
    doc.add(*_decision_blocks(study))
    doc.add(*_bucket_blocks(runs, notes, img_dir))
    doc.add(*_cost_blocks(study, metric_name, img_dir))
    doc.add(*_failure_blocks(study))
    doc.add(*_skipped_blocks(study))
    images = [b.path for b in doc.blocks if isinstance(b, Image)]
    md = write_markdown(doc, out / "report.md")
    html = write_html(doc, out / "report.html")
    return ReportPaths(markdown=md, html=html, images=images)
