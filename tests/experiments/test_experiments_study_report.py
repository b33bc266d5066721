"""`loralab report STUDY_DIR`: the study report from a hand-made study.json and synthetic run
directories (tests/report/conftest.py's `write_run`): every decision's verdict, every failure's
diagnosis, skipped runs and baselines in the Markdown; the Pareto fronts of a by-hand case; one
self-contained HTML file that renders in headless Chromium."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image as PILImage

from loralab.experiments.record import (
    Baseline,
    Decision,
    Diagnosis,
    RunRecord,
    StudyRecord,
    load_study,
)
from loralab.experiments.study_report import (
    build_study_report,
    decision_sentence,
    pareto_front,
    seed_summary,
)
from loralab.report.document import fmt_metric

_spec = importlib.util.spec_from_file_location(
    "report_fixtures", Path(__file__).resolve().parents[1] / "report" / "conftest.py"
)
assert _spec and _spec.loader
report_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report_fixtures)

# By hand: (id, trainable params, train seconds, weighted F1).
#   params: attention (100, .80) and mlp-in (200, .85) are the front; r16 (300, .82) is beaten by mlp-in.
#   time:   mlp-in (40 s, .85) beats attention (50 s) and r16 (60 s) on both: the front is mlp-in alone.
DONE = [("attention", 100, 50.0, 0.80), ("mlp-in", 200, 40.0, 0.85), ("r16", 300, 60.0, 0.82)]
FRONT_PARAMS = ["attention-s42", "mlp-in-s42"]
FRONT_TIME = ["mlp-in-s42"]


def test_pareto_front_by_hand() -> None:
    pts = [(name, float(p), w) for name, p, _, w in DONE]
    assert pareto_front(pts) == {"attention", "mlp-in"}
    assert pareto_front([(n, t, w) for n, _, t, w in DONE]) == {"mlp-in"}
    # equal points do not dominate each other; a cheaper equal score dominates
    assert pareto_front([("a", 1.0, 0.5), ("b", 1.0, 0.5), ("c", 2.0, 0.5)]) == {"a", "b"}
    assert pareto_front([]) == set()


@pytest.fixture
def study_dir(tmp_path: Path) -> Path:
    study = tmp_path / "study"
    runs = []
    for k, (name, params, seconds, wf1) in enumerate(DONE):
        run_dir = report_fixtures.write_run(study / "runs" / f"{name}-s42" / "run", seed=k,
                                            accuracy_shift=0.05 * k, phase=name)  # fmt: skip
        scores = {"weighted_f1": wf1, "tail_f1": wf1 - 0.2, "accuracy": wf1 + 0.01}
        runs.append(RunRecord(name=name, phase=name, model="tiny", seed=42, overrides={"lora.r": k},
                              status="done", run_dir=str(run_dir.relative_to(study)), key=f"k{k}",
                              trainable_params=params, train_seconds=seconds, metrics=scores))  # fmt: skip
    runs.append(RunRecord(
        name="all-linear", phase="all-linear", model="tiny", seed=42, overrides={}, status="failed",
        error="RuntimeError: _amp_foreach_non_finite_check_and_unscale_cuda not implemented for 'BFloat16'",
        exit_code=1, log="runs/all-linear-s42/train.log",
        diagnosis=Diagnosis("bf16-gradscaler", "bf16 weights under an fp16 GradScaler",
                            "set training_args.bf16: true and fp16: false", "…'BFloat16'"),
    ))  # fmt: skip
    runs.append(RunRecord(name="bad-target", phase=None, model="tiny", seed=42, overrides={}, status="failed",
                          error="target matches nothing", exit_code=2,
                          diagnosis=Diagnosis("unmatched-targets", "lora target 'q_proj' matches no module",
                                              "use `loralab modules MODEL` to pick names")))  # fmt: skip
    runs.append(RunRecord(name="extra", phase="extra", model="tiny", seed=42, overrides={}, status="skipped",
                          reason="stop: target met after mlp-in"))  # fmt: skip
    decisions = [
        Decision("attention", "target",
                 {"weighted_f1": 0.80, "tail_f1": 0.60, "target": {"weighted_f1": 0.85},
                  "rules": {"adopt_gain": 0.02}}, "advance"),
        Decision("mlp-in", "adopt_gain",
                 {"gain": 0.05, "ci": {"low": 0.01, "high": 0.09}, "extra_params": 100}, "adopt"),
        Decision("mlp-in", "target", {"weighted_f1": 0.85, "tail_f1": 0.72}, "stop: target met"),
    ]  # fmt: skip
    record = StudyRecord(name="by-hand", kind="ablate", runs=runs, decisions=decisions, selected="mlp-in",
                         baselines=[Baseline("api", "api.csv", "classification",
                                             metrics={"weighted_f1": 0.7777, "accuracy": 0.7})])  # fmt: skip
    study.mkdir(parents=True, exist_ok=True)
    record.save(study)
    return study


def test_markdown_holds_decisions_failures_skips_and_baselines(study_dir: Path) -> None:
    paths = build_study_report(study_dir, study_dir / "report")
    md = paths.markdown.read_text(encoding="utf-8")
    study = load_study(study_dir)
    for d in study.decisions:
        assert decision_sentence(d) in md
        assert f"After {d.after}: {d.verdict}. Rule: {d.rule}" in md
    assert "gain = 0.05; ci.low = 0.01; ci.high = 0.09; extra_params = 100." in md
    # thresholds once under the trail, not repeated in each decision
    assert "Thresholds: adopt_gain = 0.02." in md and "rules.adopt_gain" not in md
    failed = [r for r in study.runs if r.status == "failed"]
    assert len(failed) == 2
    for r in failed:
        assert r.diagnosis is not None
        for text in (r.diagnosis.signature, r.diagnosis.cause, r.diagnosis.fix, str(r.error)):
            assert text in md
    assert "stop: target met after mlp-in" in md
    table_rows = [line for line in md.splitlines() if line.startswith("| ")]
    api = next(line for line in table_rows if line.startswith("| api |"))
    assert "baseline" in api and "0.7777" in api
    for r in study.runs:
        row = next(line for line in table_rows if line.startswith(f"| {r.id}"))
        assert f"| {r.status} |" in row
        if r.metrics:
            assert fmt_metric(r.metrics["weighted_f1"]) in row and f"{r.trainable_params:,}" in row
    assert "| mlp-in-s42 (selected) |" in md


def test_pareto_fronts_and_bucket_f1_in_the_report(study_dir: Path) -> None:
    paths = build_study_report(study_dir, study_dir / "report")
    md = paths.markdown.read_text(encoding="utf-8")
    assert f"Pareto front by trainable parameters: {', '.join(FRONT_PARAMS)}." in md
    assert f"Pareto front by training time (s): {', '.join(FRONT_TIME)}." in md
    # per-bucket F1 per phase, recomputed from each run's own metrics.json
    lines = md.splitlines()
    header = next(line for line in lines if line.startswith("| bucket |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    for name, *_ in DONE:
        metrics = json.loads((study_dir / "runs" / f"{name}-s42" / "run" / "metrics.json").read_text())
        col = columns.index(f"{name}: {name}-s42")
        for b in metrics["buckets"]:
            row = next(line for line in lines if line.startswith(f"| {b['name']} |"))
            assert [c.strip() for c in row.strip("|").split("|")][col] == fmt_metric(b["mean_f1"])
    for image in paths.images:
        assert image.is_file() and image.parent == study_dir / "report" / "images"
    assert {p.name for p in paths.images} == {"study-buckets.png", "pareto-params.png", "pareto-time.png"}


def test_html_is_self_contained(study_dir: Path) -> None:
    paths = build_study_report(study_dir, study_dir / "report")
    html = paths.html.read_text(encoding="utf-8")
    assert "<script" not in html and "<link" not in html and "http://" not in html and "https://" not in html
    sources = re.findall(r'<img src="([^"]+)"', html)
    assert len(sources) == len(paths.images) == 3
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        with PILImage.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as im:
            assert im.format == "PNG" and im.size[0] > 100
    # nothing points back at the PNG files: the HTML works alone
    assert "images/" not in html and not re.findall(r'(?:src|href)="(?!data:)', html)


def test_a_moved_study_still_finds_its_runs(study_dir: Path, tmp_path: Path) -> None:
    study = load_study(study_dir)
    for r in study.runs:  # as written by a study run elsewhere, then copied here
        r.run_dir = f"/elsewhere/{study.name}/runs/{r.id}/run"
    study.save(study_dir)
    md = build_study_report(study_dir).markdown.read_text(encoding="utf-8")
    assert "run directory not read" not in md
    assert "| attention: attention-s42 | mlp-in: mlp-in-s42 | r16: r16-s42 |" in md


def test_seed_spread_is_the_sample_deviation(study_dir: Path) -> None:
    study = load_study(study_dir)
    extra = [0.83, 0.86, 0.84]
    for seed, w in zip((43, 44, 45), extra, strict=True):
        study.runs.append(RunRecord(name="mlp-in", phase="mlp-in", model="tiny", seed=seed, overrides={},
                                    status="done", metrics={"weighted_f1": w}))  # fmt: skip
    study.save(study_dir)
    (row,) = seed_summary(load_study(study_dir), "weighted_f1")
    values = [0.85, *extra]
    assert row["seeds"] == [42, 43, 44, 45]
    assert row["mean"] == pytest.approx(np.mean(values)) and row["stdev"] == pytest.approx(
        np.std(values, ddof=1)
    )
    md = build_study_report(study_dir).markdown.read_text(encoding="utf-8")
    assert "Across seeds (weighted F1)" in md and fmt_metric(np.std(values, ddof=1)) in md


def test_cli_report_on_a_study_dir(study_dir: Path) -> None:
    exe = Path(sys.executable).with_name("loralab")
    p = subprocess.run([str(exe), "report", str(study_dir)], capture_output=True, text=True, timeout=120,
                       check=False)  # fmt: skip
    assert p.returncode == 0, p.stderr
    md = (study_dir / "report" / "report.md").read_text(encoding="utf-8")
    assert md.startswith("# loralab study report: by-hand")


def test_a_missing_run_dir_is_a_note_not_a_crash(study_dir: Path) -> None:
    shutil.rmtree(study_dir / "runs" / "r16-s42" / "run")
    md = build_study_report(study_dir).markdown.read_text(encoding="utf-8")
    assert "r16-s42: run directory not read" in md
    assert "| r16-s42 |" in md  # still a row, from study.json


CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", "--enable-logging=stderr", "--v=0"]  # fmt: skip
PROBE = (
    "<script>window.addEventListener('load', function () {"
    " var imgs = document.images, ok = imgs.length > 0;"
    " for (var k = 0; k < imgs.length; k++) {"
    "   if (!(imgs[k].complete && imgs[k].naturalWidth > 0)) ok = false; }"
    " document.body.dataset.imagesOk = ok ? 'yes' : 'no';"
    " document.body.dataset.imageCount = String(imgs.length); });</script>"
)
CONSOLE_ERROR = re.compile(r"CONSOLE.*|Uncaught", re.IGNORECASE)


def _browser(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [browser, *FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)


def test_study_html_renders_in_headless_chromium(study_dir: Path, tmp_path: Path) -> None:
    browser = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if not browser:
        pytest.skip("chromium is not installed (run scripts/install_browser.sh as root to install Debian's)")
    paths = build_study_report(study_dir, study_dir / "report")
    shot = tmp_path / "screenshot.png"
    res = _browser(browser, tmp_path / "p1", "--window-size=1200,1800", f"--screenshot={shot}",
                   paths.html.as_uri())  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    with PILImage.open(shot) as im:
        assert im.size == (1200, 1800)
        extrema: Any = im.convert("L").getextrema()
        assert extrema[1] - extrema[0] > 100  # text and plots, not a blank page
    assert [line for line in res.stderr.splitlines() if CONSOLE_ERROR.search(line)] == []
    probed = tmp_path / "probed.html"
    probed.write_text(paths.html.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), "utf-8")
    res = _browser(browser, tmp_path / "p2", "--virtual-time-budget=5000", "--dump-dom", probed.as_uri())
    assert res.returncode == 0, res.stderr[-2000:]
    body = re.search(r"<body[^>]*>", res.stdout)
    assert body and 'data-images-ok="yes"' in body.group(0)
    assert f'data-image-count="{len(paths.images)}"' in body.group(0)
    assert "Decision trail" in res.stdout and "bf16-gradscaler" in res.stdout
    assert [line for line in res.stderr.splitlines() if CONSOLE_ERROR.search(line)] == []
