"""`loralab --version`: what a bug report and environment.json quote."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys

import loralab
from loralab.train.record import environment


def test_version_prints_the_installed_version_and_exits_0() -> None:
    p = subprocess.run(
        [sys.executable, "-m", "loralab", "--version"], capture_output=True, text=True, check=False
    )
    assert p.returncode == 0, p.stderr
    # The package metadata pip installed and the module's constant are the same release.
    assert p.stdout == f"loralab {importlib.metadata.version('loralab')}\n"
    assert loralab.__version__ == importlib.metadata.version("loralab")


def test_environment_json_names_the_same_version() -> None:
    env = environment()
    assert env["packages"]["loralab"] == loralab.__version__
    json.dumps(env)  # it is written as JSON
