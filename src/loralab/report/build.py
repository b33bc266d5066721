"""`build_report`: one run's analysis, or a comparison of several runs, as Markdown + PNGs + one HTML.

What goes in is what seed 000 §5 analyses after every run: the summary and its decision thresholds,
loss and F1 by epoch, per-class F1 against training frequency with the buckets, the most confused
classes with example inputs, classes under the F1 threshold, and between runs (ablation phases) which
differences a paired bootstrap on the same test set calls significant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loralab.report import plots
from loralab.report.compare import (
    METRIC_NAMES,
    METRICS,
    Difference,
    bucket_intervals,
    paired_bootstrap,
    run_intervals,
)
from loralab.report.document import (
    Bullets,
    Document,
    Heading,
    Image,
    Paragraph,
    Table,
    fmt_ci,
    fmt_metric,
    fmt_plain,
)
from loralab.report.html import write_html
from loralab.report.load import ReportError, Run, confusion_pairs, load_runs, low_f1_classes
from loralab.report.markdown import write_markdown

DEFAULT_THRESHOLD = 0.6  # seed 000's tail-F1 line below which FFN targets are "required"
MAX_LOW_ROWS = 40
MAX_EXAMPLE_CHARS = 140
FIX_OUT = "pass --out with a folder you can write to"


@dataclass(frozen=True)
class ReportPaths:
    markdown: Path
    html: Path
    images: list[Path]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:40] or "run"


def _short_model(model: Any) -> str:
    """Hub ids stay as they are; a local path keeps its last two parts (".../minilm/model")."""
    if not model:
        return "n/a"
    parts = Path(str(model)).parts
    return str(model) if len(parts) <= 2 else ".../" + "/".join(parts[-2:])


MEMORY_LABELS = {
    "cuda": "peak memory (GB/GPU)",
    "cpu": "peak memory (GB, host RAM)",
    None: "peak memory (GB)",
}
MEMORY_NOTES = {"cuda": "per GPU", "cpu": "host RAM"}


def _memory_row(runs: list[Run]) -> tuple[str, Any]:
    """The record's `peak_memory_gb_per_gpu` is CUDA max allocated on a GPU run but the process's peak
    RSS on a CPU run: the label says which; runs on different devices say it in each cell."""
    devices = {r.memory_device() for r in runs}
    if len(devices) == 1:
        return MEMORY_LABELS[devices.pop()], lambda r: fmt_plain(r.record.get("peak_memory_gb_per_gpu"))

    def cell(r: Run) -> str:
        text = fmt_plain(r.record.get("peak_memory_gb_per_gpu"))
        note = MEMORY_NOTES.get(r.memory_device() or "")
        return f"{text} ({note})" if note and text != "n/a" else text

    return MEMORY_LABELS[None], cell


def _best_epoch_cell(run: Run) -> str:
    epoch = run.best_epoch()
    if epoch is None and run.log and not run.evaluated():
        return "n/a (no evaluation)"
    return fmt_plain(epoch)


def _summary_table(runs: list[Run], cis: list[dict[str, dict[str, Any]]]) -> Table:
    """Fields down, runs across: readable for one run and for an ablation of three."""

    def rec(run: Run, key: str) -> Any:
        return run.record.get(key)

    rows: list[tuple[str, Any]] = [
        ("phase", lambda r: fmt_plain(rec(r, "phase"))),
        ("model", lambda r: _short_model(rec(r, "model"))),
        ("target modules", lambda r: fmt_plain(rec(r, "target_modules"))),
        ("layers", lambda r: fmt_plain(rec(r, "layers_to_transform") or "all")),
        ("LoRA rank r", lambda r: fmt_plain(r.lora_rank())),
        ("trainable LoRA params", lambda r: fmt_plain(rec(r, "lora_params"))),
        ("training time (h)", lambda r: fmt_plain(rec(r, "training_time_hours"))),
        _memory_row(runs),
        ("best epoch", _best_epoch_cell),
        ("split (rows)", lambda r: f"{r.metrics.get('split', 'n/a')} ({fmt_plain(r.metrics.get('n'))})"),
    ]
    table_rows = [[label, *(fn(r) for r in runs)] for label, fn in rows]
    for m, label in (
        ("accuracy", "accuracy"),
        ("weighted_f1", "weighted F1"),
        ("macro_f1", "macro F1"),
        ("micro_f1", "micro F1"),
        ("tail_f1", "tail F1"),
    ):
        table_rows.append(
            [label, *(fmt_ci(r.metrics.get(m), ci.get(m)) for r, ci in zip(runs, cis, strict=True))]
        )
    table_rows.append(["ECE", *(fmt_metric(r.metrics.get("ece")) for r in runs)])
    table_rows.append(
        ["never predicted", *(fmt_plain(len(r.metrics.get("never_predicted") or [])) for r in runs)]
    )
    return Table(["", *(r.name for r in runs)], table_rows)


def _verdicts(run: Run) -> list[str]:
    """Seed 000 §5.1's decision rules, in words."""
    out = []
    w, t = run.metrics.get("weighted_f1"), run.metrics.get("tail_f1")
    if isinstance(w, int | float):
        rule = (
            "at or above 0.85: FFN targets not needed"
            if w >= 0.85
            else "between 0.80 and 0.85: consider adding FFN targets"
            if w >= 0.80
            else "below 0.80: FFN targets needed"
        )
        out.append(f"{run.name}: weighted F1 {fmt_metric(w)} is {rule}.")
    if isinstance(t, int | float):
        rule = (
            "at or above 0.70: sufficient"
            if t >= 0.70
            else "between 0.60 and 0.70: needs improvement"
            if t >= 0.60
            else "below 0.60: FFN targets needed"
        )
        out.append(f"{run.name}: tail F1 {fmt_metric(t)} is {rule}.")
    return out


def _clip(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_EXAMPLE_CHARS else text[: MAX_EXAMPLE_CHARS - 1] + "…"


def _run_section(run: Run, img_dir: Path, threshold: float, n_resamples: int, seed: int) -> list[Any]:
    blocks: list[Any] = [Heading(1, f"Run {run.name}"), Paragraph(f"Directory: {run.path}")]
    stem = img_dir / _slug(run.name)
    curves = plots.training_curves(run, stem.with_name(stem.name + "-curves.png"))
    if curves:
        blocks += [Heading(2, "Loss and F1 by epoch"), Image(curves, f"{run.name}: loss and F1 by epoch")]
    blocks.append(Heading(2, "F1 by training-frequency bucket"))
    rows = []
    for b, b_ci in zip(run.buckets, bucket_intervals(run, n_resamples, seed), strict=True):
        rows.append([str(b.get("name", "")), fmt_plain(b.get("classes")), fmt_plain(b.get("train_count")),
                     fmt_plain(b.get("support")), fmt_ci(b.get("mean_f1"), b_ci)])  # fmt: skip
    blocks.append(Table(["bucket", "classes", "train examples", "test support", "mean F1"], rows))
    scatter = plots.f1_vs_frequency(run, stem.with_name(stem.name + "-f1-frequency.png"), threshold)
    if scatter:
        blocks.append(Image(scatter, f"{run.name}: per-class F1 against training frequency"))
    heat = plots.confusion_heatmap(run, stem.with_name(stem.name + "-confusion.png"))
    if heat:
        blocks += [Heading(2, "Most confused classes"), Image(heat, f"{run.name}: confusion matrix")]
    pairs = confusion_pairs(run)
    if pairs:
        blocks += [
            Heading(2, "Top confusion pairs"),
            Table(
                ["gold", "predicted", "count", "example inputs"],
                [[str(p["gold"]), str(p["pred"]), fmt_plain(int(p["count"])),
                  " / ".join(_clip(e) for e in p.get("examples", []))] for p in pairs],
            ),
        ]  # fmt: skip
    low = low_f1_classes(run, threshold)
    blocks.append(Heading(2, f"Classes with F1 below {threshold:g}"))
    if low:
        blocks.append(
            Paragraph(f"{len(low)} of {len(run.per_class)} classes are below {threshold:g}, worst first.")
        )
        blocks.append(
            Table(
                ["class", "F1", "precision", "recall", "test support", "train examples"],
                [[k, fmt_metric(v.get("f1")), fmt_metric(v.get("precision")), fmt_metric(v.get("recall")),
                  fmt_plain(v.get("support")), fmt_plain(v.get("train_count"))]
                 for k, v in low[:MAX_LOW_ROWS]],
            )
        )  # fmt: skip
        if len(low) > MAX_LOW_ROWS:
            blocks.append(Paragraph(f"… and {len(low) - MAX_LOW_ROWS} more (see metrics.json per_class)."))
    else:
        blocks.append(Paragraph(f"None: every class with test support has F1 of at least {threshold:g}."))
    never = run.metrics.get("never_predicted") or []
    if never:
        blocks.append(Paragraph(f"Never predicted ({len(never)}): " + ", ".join(map(str, never))))
    return blocks


def _comparison_section(
    runs: list[Run], diffs: list[Difference], img_dir: Path, n_resamples: int
) -> tuple[list[Any], list[Path]]:
    base = runs[0].name
    blocks: list[Any] = [
        Heading(1, f"Comparison with {base}"),
        Paragraph(
            f"Paired bootstrap on the same test rows (aligned by id, {n_resamples} resamples, seed "
            f"{diffs[0].seed if diffs else 0}): each interval is the 95% range of the later run's score "
            f"minus {base}'s; a difference is significant when that range excludes 0. Scores here are "
            "recomputed from predictions.csv over the classes seen in gold or predictions, so macro F1 "
            "can differ slightly from metrics.json."
        ),
        Bullets([d.sentence() for d in diffs]),
        Table(
            ["metric", "run", base, "run value", "difference", "95% CI", "significant"],
            [[METRIC_NAMES.get(d.metric, d.metric), d.run_b, fmt_metric(d.value_a), fmt_metric(d.value_b),
              f"{d.diff * 100:+.2f} pts", f"{d.low * 100:+.2f} to {d.high * 100:+.2f} pts",
              "yes" if d.significant else "no"] for d in diffs],
        ),
    ]  # fmt: skip
    images = []
    deltas = plots.metric_deltas(diffs, img_dir / "compare-deltas.png")
    if deltas:
        blocks.append(Image(deltas, "metric differences vs the first run"))
        images.append(deltas)
    bars = plots.bucket_bars(runs, img_dir / "compare-buckets.png")
    if bars:
        blocks.append(Image(bars, "per-bucket F1 by run"))
        images.append(bars)
    return blocks, images


def build_report(
    run_dirs: list[Path],
    out: Path,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    n_resamples: int = 1000,
    seed: int = 0,
) -> ReportPaths:
    """Write out/report.md with its PNGs in out/images/, and the self-contained out/report.html.
    Several runs are compared against the first; raises ReportError if their test sets differ."""
    if not run_dirs:
        raise ReportError("no run directories given")
    runs = load_runs([Path(d) for d in run_dirs])
    diffs: list[Difference] = []
    for other in runs[1:]:  # before writing anything: refuse early on mismatched test sets
        diffs += paired_bootstrap(runs[0], other, (*METRICS, "tail_f1"), n_resamples, seed)
    out = Path(out)
    img_dir = _make_folder(out)
    try:
        return _write_report(runs, diffs, out, img_dir, threshold, n_resamples, seed)
    except OSError as e:  # a full disk or a folder that turned read-only under us
        where = e.filename or out
        raise ReportError(f"{where}: cannot write the report ({e.strerror or e}) (fix: {FIX_OUT})") from e


def _make_folder(out: Path) -> Path:
    """out/images, created; a file in the way (out itself or a parent) or a path the user cannot
    write is one message naming it, before any figure is drawn."""
    for p in (out, *out.parents):
        if p.exists():
            if not p.is_dir():
                what = "is a file" if p == out else f"cannot be created: {p} is a file"
                raise ReportError(f"{out}: {what}, but the report needs a folder (fix: {FIX_OUT})")
            break
    img_dir = out / "images"
    try:
        img_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ReportError(
            f"{out}: cannot create the report folder ({e.strerror or e}) (fix: {FIX_OUT})"
        ) from e
    return img_dir


def _write_report(
    runs: list[Run],
    diffs: list[Difference],
    out: Path,
    img_dir: Path,
    threshold: float,
    n_resamples: int,
    seed: int,
) -> ReportPaths:
    cis = [run_intervals(r, n_resamples, seed) for r in runs]
    title = "loralab report: " + (runs[0].name if len(runs) == 1 else " vs ".join(r.name for r in runs))
    doc = Document(title)
    doc.add(
        Heading(1, "Summary"), _summary_table(runs, cis), Bullets([v for r in runs for v in _verdicts(r)])
    )
    if len(runs) > 1:
        blocks, _ = _comparison_section(runs, diffs, img_dir, n_resamples)
        doc.add(*blocks)
    for run in runs:
        doc.add(*_run_section(run, img_dir, threshold, n_resamples, seed))
    images = [b.path for b in doc.blocks if isinstance(b, Image)]
    md = write_markdown(doc, out / "report.md")
    html = write_html(doc, out / "report.html")
    return ReportPaths(markdown=md, html=html, images=images)
