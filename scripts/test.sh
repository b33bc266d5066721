#!/usr/bin/env bash
# Lint, format check, type check and the test suite, in .venv.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
scripts/bootstrap.sh dev,train,evaluate,ui,ray
# DeepSpeed, for the ZeRO-2/3 tests on CPU (gloo; not a loralab dependency). Its sdist's setup.py
# imports torch, so it is built against the CPU torch already here, not in an isolated build that
# would pull a CUDA torch. DS_BUILD_SHM_COMM compiles its CPU comm op once at install (about 75 s)
# instead of in the first test that starts DeepSpeed; no cached wheel without the op is reused.
DS_BUILD_SHM_COMM=1 .venv/bin/python -m pip install -q --no-cache-dir --no-build-isolation \
  -c constraints.txt "deepspeed==0.19.8"
# Debian's chromium for the report's headless-browser test (skipped with a reason when unavailable).
bash scripts/install_browser.sh || true
.venv/bin/ruff check src tests benchmarks
.venv/bin/ruff format --check src tests benchmarks
.venv/bin/mypy
# The stages import one way: the layers contract in pyproject.toml ([tool.importlinter]).
.venv/bin/lint-imports --no-cache
.venv/bin/python -m pytest "$@"
