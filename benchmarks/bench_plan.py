"""Speed and memory of `loralab plan`, against the by-hand baseline measured in the same run.

Targets (issue 2): a plan of a bundled or previously seen architecture answers in under 1 s without
importing torch; a first plan of an unseen 8B architecture stays under 15 s and 1.5 GB.
Baseline: what a user does today to get the same number: import torch + transformers + peft, build
the model on the meta device, `get_peft_model`, `get_nb_trainable_parameters()`.

Each measurement runs in a fresh process (wall time and peak RSS of that process).
Run: .venv/bin/python benchmarks/bench_plan.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "seed000-qwen3-8b-phase1-attention.yaml"
QWEN3_8B = ROOT / "src" / "loralab" / "arch" / "bundled" / "Qwen__Qwen3-8B" / "config.json"

BASELINE = """
import json, torch
from transformers import AutoConfig, AutoModelForSequenceClassification
from peft import LoraConfig, get_peft_model
cfg = json.load(open({config!r}))
c = AutoConfig.for_model(**cfg); c.num_labels = 260
with torch.device("meta"):
    m = AutoModelForSequenceClassification.from_config(c)
lc = LoraConfig(task_type="SEQ_CLS", r=256, lora_alpha=512,
                target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                layers_to_transform=list(range(25, 36)), modules_to_save=["score"], bias="lora_only")
print(get_peft_model(m, lc).get_nb_trainable_parameters()[0])
"""

LORALAB = """
import sys
from loralab.plan.experiment import plan_from_config
plan, _ = plan_from_config(__import__("pathlib").Path({config!r}))
assert "torch" not in sys.modules, "plan imported torch"
print(plan.counts.trainable_params)
"""


def run(code: str, env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MiB) and last result line of `python -c code` in a fresh process."""
    code += "\nimport resource\nprint(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    t0 = time.perf_counter()
    p = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
    )
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(p.stderr)
    *_, result, peak_kib = p.stdout.strip().splitlines()
    return wall, int(peak_kib) / 1024, result


def unseen_config(tmp: Path) -> Path:
    """Qwen3-8B with one field changed, so no shipped or cached record exists for it."""
    cfg = json.loads(QWEN3_8B.read_text())
    cfg["vocab_size"] = cfg["vocab_size"] + 64  # e.g. a tokenizer with added tokens
    folder = tmp / "qwen3-8b-resized"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(cfg))
    text = EXAMPLE.read_text().replace("name_or_path: Qwen/Qwen3-8B", f"name_or_path: {folder}")
    ds = EXAMPLE.parent / "deepspeed" / "seed000-zero2.json"
    text = text.replace("deepspeed: deepspeed/seed000-zero2.json", f"deepspeed: {ds}")
    exp = tmp / "unseen.yaml"
    exp.write_text(text)
    return exp


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        cache = {"LORALAB_CACHE_DIR": str(tmp / "cache"), "HF_HUB_OFFLINE": "1"}
        base_wall, base_rss, base_n = run(BASELINE.format(config=str(QWEN3_8B)), cache)
        rows.append(("baseline: torch+transformers+peft on meta", base_wall, base_rss, base_n))
        exp = unseen_config(tmp)
        cold_code = LORALAB.replace('assert "torch" not in sys.modules, "plan imported torch"\n', "")
        cold_wall, cold_rss, cold_n = run(cold_code.format(config=str(exp)), cache)
        rows.append(("loralab, unseen 8B architecture (introspect)", cold_wall, cold_rss, cold_n))
        warm_wall, warm_rss, warm_n = run(LORALAB.format(config=str(exp)), cache)
        rows.append(("loralab, same architecture again (cached)", warm_wall, warm_rss, warm_n))
        bundled_wall, bundled_rss, bundled_n = run(LORALAB.format(config=str(EXAMPLE)), cache)
        rows.append(("loralab, bundled Qwen3-8B (shipped record)", bundled_wall, bundled_rss, bundled_n))
    print(f"{'case':48} {'wall s':>8} {'peak MiB':>9} {'trainable':>12} {'vs baseline':>12}")
    for name, wall, rss, n in rows:
        print(f"{name:48} {wall:8.2f} {rss:9.0f} {n:>12} {base_wall / wall:11.1f}x")
    ok = (
        bundled_wall < 1.0
        and warm_wall < 1.0
        and cold_wall < 15.0
        and cold_rss < 1536
        and len({bundled_n, base_n}) == 1
    )
    print(
        "targets (cached < 1 s, unseen 8B < 15 s and < 1.5 GiB, same count as PEFT):",
        "met" if ok else "MISSED",
    )
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
