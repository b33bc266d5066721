#!/usr/bin/env bash
# The main job: `loralab demo` fine-tunes MiniLM-L6 on Banking77 on the CPU and prints its scores.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
scripts/bootstrap.sh train,evaluate
.venv/bin/loralab demo "$@"
