"""build_report on synthetic run directories: files, numbers, images, self-containment, comparisons."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image as PILImage

from loralab.report import ReportError, build_report
from loralab.report.document import fmt_metric

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SUMMARY_KEYS = ("accuracy", "weighted_f1", "macro_f1", "micro_f1", "tail_f1")


def _assert_valid_png(path: Path) -> None:
    assert path.is_file(), path
    assert path.read_bytes()[:8] == PNG_MAGIC, path
    with PILImage.open(path) as im:
        im.verify()  # checks chunk CRCs: a truncated or corrupt file fails here
    with PILImage.open(path) as im:
        assert im.size[0] > 200 and im.size[1] > 150


def _md_images(md: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)


def test_single_run_report_has_summary_numbers_images_and_sections(
    make_run: Callable[..., Path], tmp_path: Path
) -> None:
    run = make_run("baseline")
    metrics = json.loads((run / "metrics.json").read_text())
    paths = build_report([run], tmp_path / "out")
    md = paths.markdown.read_text(encoding="utf-8")
    html = paths.html.read_text(encoding="utf-8")
    for key in SUMMARY_KEYS:
        assert fmt_metric(metrics[key]) in md, key
        assert fmt_metric(metrics[key]) in html, key
    ci = metrics["ci"]["accuracy"]  # metrics.json's stored interval is shown as stored
    shown = f"{fmt_metric(metrics['accuracy'])} (95% CI {fmt_metric(ci['low'])}–{fmt_metric(ci['high'])})"
    assert shown in md and shown in html
    for text in ("76,038,144", "q_proj, k_proj, v_proj, o_proj", "Qwen/Qwen3-8B", "| LoRA rank r | 256 |"):
        assert text in md, text
    for section in ("Loss and F1 by epoch", "Top confusion pairs", "Classes with F1 below 0.6", "rank 16-30"):
        assert section in md and section in html, section
    # the worst confusion pair and one of its example inputs, from metrics.json's confusion_pairs
    top = metrics["confusion_pairs"][0]
    assert f"| {top['gold']} | {top['pred']} | {top['count']} |" in md
    assert top["examples"][0] in md
    low = [k for k, v in metrics["per_class"].items() if v["support"] and v["f1"] < 0.6]
    assert low and all(f"| {k} | {fmt_metric(metrics['per_class'][k]['f1'])} |" in md for k in low)
    # every image the Markdown links exists beside it, relative, and is a real PNG
    links = _md_images(md)
    assert len(links) == 3 and sorted(links) == sorted(f"images/{p.name}" for p in paths.images)
    for link in links:
        assert not Path(link).is_absolute()
        _assert_valid_png(paths.markdown.parent / link)


def test_html_is_self_contained(make_run: Callable[..., Path], tmp_path: Path) -> None:
    paths = build_report([make_run("a"), make_run("b", seed=1, accuracy_shift=0.1)], tmp_path / "out")
    html = paths.html.read_text(encoding="utf-8")
    assert not re.search(r"https?:", html, re.IGNORECASE)
    srcs = re.findall(r'\bsrc="([^"]*)"', html)
    assert len(srcs) == len(paths.images) == 8
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<script" not in html and "<link" not in html and "@import" not in html


def test_comparison_states_significance_in_plain_words(make_run: Callable[..., Path], tmp_path: Path) -> None:
    a = make_run("baseline")
    b = make_run("ffn_partial", seed=0, accuracy_shift=0.25, phase="ffn_partial")
    paths = build_report([a, b], tmp_path / "out", n_resamples=500)
    md = paths.markdown.read_text(encoding="utf-8")
    assert "## Comparison with baseline" in md
    m = re.search(r"run ffn_partial's accuracy is (\d+\.\d) points higher than run baseline's "
                  r"\(95% CI (-?\d+\.\d) to (-?\d+\.\d) points, 500 paired resamples over 300 test rows\): "
                  r"significant", md)  # fmt: skip
    assert m, md
    ma = json.loads((a / "metrics.json").read_text())["accuracy"]
    mb = json.loads((b / "metrics.json").read_text())["accuracy"]
    assert float(m.group(1)) == pytest.approx((mb - ma) * 100, abs=0.051)
    assert float(m.group(2)) > 0
    assert "| accuracy | ffn_partial |" in md
    # identical predictions: the same run twice is not significantly different
    same = build_report([a, a], tmp_path / "same", n_resamples=200).markdown.read_text(encoding="utf-8")
    assert "accuracy equals run baseline's" in same and "not significant" in same
    assert "| accuracy | baseline (2) |" in same


def test_runs_on_different_test_sets_are_refused_before_writing(
    make_run: Callable[..., Path], tmp_path: Path
) -> None:
    a = make_run("a")
    b = make_run("b", ids=[f"other.csv:{k}" for k in range(300)])
    with pytest.raises(ReportError, match="different test sets"):
        build_report([a, b], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_optional_metrics_keys_are_recomputed_from_predictions(
    make_run: Callable[..., Path], tmp_path: Path
) -> None:
    run = make_run("old", optional_keys=False)
    metrics = json.loads((run / "metrics.json").read_text())
    assert "ci" not in metrics and "confusion_pairs" not in metrics and "ece" not in metrics
    (run / "train_log.jsonl").unlink()
    (run / "record.json").unlink()
    paths = build_report([run], tmp_path / "out")
    md = paths.markdown.read_text(encoding="utf-8")
    assert re.search(
        rf"\| accuracy \| {fmt_metric(metrics['accuracy'])} \(95% CI 0\.\d{{4}}–0\.\d{{4}}\) \|", md
    )
    assert re.search(r"\| rank 16-30 \| 15 \| [\d,]+ \| 150 \| 0\.\d{4} \(95% CI", md)
    assert "## Top confusion pairs" in md and "| ECE | n/a |" in md and "| phase | n/a |" in md
    assert "Loss and F1 by epoch" not in md  # no log: no curves, and no broken image link
    for link in _md_images(md):
        _assert_valid_png(paths.markdown.parent / link)


def test_missing_required_file_names_it(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match=r"no metrics\.json"):
        build_report([tmp_path / "empty"], tmp_path / "out")
