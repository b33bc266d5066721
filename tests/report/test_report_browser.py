"""Open the HTML report in a real headless browser (Debian's chromium): it renders, every embedded
image decodes, and the page logs no console errors. Skips when chromium is not installed
(scripts/install_browser.sh installs it)."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from loralab.report import build_report

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--enable-logging=stderr",
    "--v=0",
]
# Marks <body data-images-ok="yes"> once every <img> has decoded; injected into a copy of the report
# only, because the report itself carries no scripts.
PROBE = (
    "<script>window.addEventListener('load', function () {"
    " var imgs = document.images, ok = imgs.length > 0;"
    " for (var k = 0; k < imgs.length; k++) {"
    "   if (!(imgs[k].complete && imgs[k].naturalWidth > 0)) ok = false; }"
    " document.body.dataset.imagesOk = ok ? 'yes' : 'no';"
    " document.body.dataset.imageCount = String(imgs.length); });</script>"
)
CONSOLE_ERROR = re.compile(r"CONSOLE.*|Uncaught", re.IGNORECASE)


def _chromium() -> str:
    path = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if not path:
        pytest.skip("chromium is not installed (run scripts/install_browser.sh as root to install Debian's)")
    return path


def _run(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [browser, *FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)


def _console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if CONSOLE_ERROR.search(line)]


def test_html_report_renders_in_headless_chromium(make_run: Callable[..., Path], tmp_path: Path) -> None:
    browser = _chromium()
    a = make_run("baseline")
    b = make_run("ffn", seed=2, accuracy_shift=0.1)
    paths = build_report([a, b], tmp_path / "report", n_resamples=200)

    shot = tmp_path / "screenshot.png"
    res = _run(browser, tmp_path / "profile-shot", "--window-size=1200,1800", f"--screenshot={shot}",
               paths.html.as_uri())  # fmt: skip
    print(f"screenshot: {shot}")
    assert res.returncode == 0, res.stderr[-2000:]
    assert shot.stat().st_size > 20_000
    with PILImage.open(shot) as im:
        pixels = np.asarray(im.convert("L"), dtype=float)
    assert pixels.shape == (1800, 1200)
    assert pixels.std() > 10  # text, tables and plots, not a blank page
    assert _console_errors(res.stderr) == []

    probed = tmp_path / "probed.html"
    probed.write_text(paths.html.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), "utf-8")
    res = _run(browser, tmp_path / "profile-dom", "--virtual-time-budget=5000", "--dump-dom", probed.as_uri())
    assert res.returncode == 0, res.stderr[-2000:]
    body = re.search(r"<body[^>]*>", res.stdout)
    assert body, res.stdout[:500]
    assert 'data-images-ok="yes"' in body.group(0)
    assert f'data-image-count="{len(paths.images)}"' in body.group(0)
    assert "Comparison with baseline" in res.stdout
    assert _console_errors(res.stderr) == []


def test_console_error_detection_catches_a_broken_page(tmp_path: Path) -> None:
    """Negative control: the check above would see a script error if the report had one."""
    browser = _chromium()
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><p>x</p><script>missingFunction();</script></body></html>", "utf-8")
    res = _run(browser, tmp_path / "profile", "--dump-dom", bad.as_uri())
    assert any("Uncaught ReferenceError" in line for line in _console_errors(res.stderr)), res.stderr[-2000:]
