#!/usr/bin/env bash
# The main job: until `loralab demo` lands (issue 3), plan seed 000's baseline on Qwen3-8B.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
scripts/bootstrap.sh
.venv/bin/loralab plan examples/seed000-qwen3-8b-phase1-attention.yaml
