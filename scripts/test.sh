#!/usr/bin/env bash
# Lint, format check, type check and the test suite, in .venv.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
scripts/bootstrap.sh dev,train,evaluate,ui,ray
# Debian's chromium for the report's headless-browser test (skipped with a reason when unavailable).
bash scripts/install_browser.sh || true
.venv/bin/ruff check src tests benchmarks
.venv/bin/ruff format --check src tests benchmarks
.venv/bin/mypy
# The stages import one way: the layers contract in pyproject.toml ([tool.importlinter]).
.venv/bin/lint-imports --no-cache
.venv/bin/python -m pytest "$@"
