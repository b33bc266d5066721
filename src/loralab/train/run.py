"""`loralab train`: setup / fit / validate, in a run directory whose file names later commands read.

Run directory (fixed names):
  config.yaml        the experiment as loaded (resolved model path, transformers-5 training_args)
  status.json        running | completed | failed, with the error when it failed
  preflight.json     the checks run before training
  labels.json        label2id / id2label built from the training data
  class_weights.json when class weights are on
  data_report.json   rows read, bad rows, unseen labels, truncation
  checkpoints/       Trainer checkpoints; one counts once its `.complete` marker exists
  adapter/           the final LoRA adapter (safetensors + adapter_config.json)
  tokenizer/         the tokenizer the run used
  train_log.jsonl    one line per logging step and per evaluation
  metrics.json       final metrics on the test split (else validation)
  predictions.csv    id, text, gold, pred, prob, topk for that split
  record.json        the run record of seed 000 §5.4
  environment.json   package versions, git state, hardware
A failed run keeps everything written so far; `--resume` continues from the last complete checkpoint.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from loralab.config import load_experiment
from loralab.config.models import ExperimentConfig
from loralab.data import infer_num_labels
from loralab.errors import LoralabError
from loralab.io import is_main_process, quiet_libraries, write_json
from loralab.train.preflight import PreflightReport, run_preflight
from loralab.train.report import print_preflight
from loralab.train.session import Session

RUNS_DIR = Path("runs")


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]
    record: dict[str, Any]
    seconds: float
    notes: list[str] = field(default_factory=list)


def new_run_dir(cfg: ExperimentConfig, output: Path | None) -> Path:
    if output is not None:
        return output
    name = (cfg.experiment or {}).get("name") or cfg.source.stem
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return RUNS_DIR / f"{stamp}-{name}"


def set_status(run_dir: Path, status: str, **extra: Any) -> None:
    write_json(run_dir / "status.json", {"status": status, "time": datetime.now().isoformat(), **extra})


def save_resolved_config(cfg: ExperimentConfig, run_dir: Path) -> None:
    if not is_main_process():
        return
    raw = dict(cfg.raw)
    raw.pop("lora_defaults", None)
    raw["model"] = {
        **(raw.get("model") or {}),
        "name_or_path": cfg.model.name_or_path,
        "task": cfg.model.task,
    }
    if cfg.model.num_labels is not None:
        raw["model"]["num_labels"] = cfg.model.num_labels
    raw["lora"] = {"enable": cfg.lora.enable, "config": cfg.lora_config_dict()}
    raw["training_args"] = cfg.training_args
    # Data paths absolute: `loralab evaluate RUN_DIR` reads this file from the run directory.
    data = dict(raw.get("data") or {})
    for key in ("train_file", "validation_file", "test_file"):
        if data.get(key):
            data[key] = str(Path(cfg.resolve_path(data[key])).resolve())
    if data:
        raw["data"] = data
    if cfg.deepspeed is not None:
        raw["deepspeed"] = cfg.deepspeed
    text = "# Resolved by loralab from " + str(cfg.source) + "\n" + yaml.safe_dump(raw, allow_unicode=True)
    (run_dir / "config.yaml").write_text(text, encoding="utf-8")


def train(
    config: Path | ExperimentConfig,
    *,
    output: Path | None = None,
    resume: bool = False,
    quiet: bool = False,
    check_only: bool = False,
) -> RunResult | None:
    """Preflight, then setup / fit / validate. Returns None for `check_only`."""
    cfg = config if isinstance(config, ExperimentConfig) else load_experiment(config)
    if cfg.model.task == "seq-cls" and cfg.model.num_labels is None:
        # Inferred before preflight and before config.yaml is written, so both see the number.
        cfg.model.num_labels, note = infer_num_labels(cfg)
        if not quiet and is_main_process():
            Console(stderr=True).print(f"[cyan]note:[/] {note}")
    quiet_libraries()
    # Preflight once per run: under DDP the other ranks trust rank 0's verdict (it runs first,
    # before any process group exists, and a failure stops the launcher).
    report = run_preflight(cfg) if is_main_process() else _skipped_preflight()
    if check_only or not report.ok:
        print_preflight(report)
        if not report.ok:
            raise PreflightFailed(report.lines())
        return None
    run_dir = new_run_dir(cfg, output)
    if resume and not run_dir.is_dir():
        raise LoralabError(f"--resume: run directory {run_dir} does not exist")
    if not resume and is_main_process() and (run_dir / "status.json").exists():
        raise LoralabError(f"{run_dir} already holds a run; use --resume to continue it, or another --output")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_resolved_config(cfg, run_dir)
    write_json(run_dir / "preflight.json", [f.__dict__ for f in report.findings])
    session = Session(cfg, run_dir, quiet=quiet)
    set_status(run_dir, "running")
    t0 = time.perf_counter()
    try:
        session.setup()
        session.fit(resume=resume)
        if not is_main_process():
            return None  # rank 0 evaluates and writes the results
        metrics = session.validate()
    except BaseException as e:
        set_status(run_dir, "failed", error=f"{type(e).__name__}: {e}")
        session.abort(e)
        raise
    record = session.write_record(time.perf_counter() - t0)
    set_status(run_dir, "completed")
    return RunResult(run_dir, metrics, record, time.perf_counter() - t0, session.notes)


def _skipped_preflight() -> PreflightReport:
    return PreflightReport(findings=[])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch_distributed(
    config: Path, *, num_processes: int, output: Path | None, resume: bool, quiet: bool
) -> int:
    """Run `loralab train` in `num_processes` processes (DDP: gloo on CPU, NCCL on GPUs) with torchrun.

    torchrun, not `accelerate launch`: accelerate's launcher runs a single process for `--cpu`, and
    the HF Trainer sets up DDP (and DeepSpeed, from the experiment's deepspeed config) from torchrun's
    environment itself. The run directory is fixed here so that every rank uses the same one.
    """
    cfg = load_experiment(config)
    run_dir = new_run_dir(cfg, output)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(num_processes)]
    cmd += ["--master_addr", "127.0.0.1", "--master_port", str(_free_port())]
    cmd += ["-m", "loralab", "train", str(config), "--output", str(run_dir)]
    cmd += ["--resume"] * resume + ["--quiet"] * quiet
    return subprocess.call(cmd)


class PreflightFailed(LoralabError):
    def __init__(self, lines: list[str]):
        super().__init__("preflight found problems that would fail the run:\n" + "\n".join(lines))
