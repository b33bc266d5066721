"""`loralab train`: setup / fit / validate, in a run directory whose file names later commands read.

Run directory (fixed names):
  config.yaml        the experiment as loaded (resolved model path, transformers-5 training_args)
  status.json        running (with the process) | completed | failed, with the error when it failed
  preflight.json     the checks run before training
  labels.json        label2id / id2label built from the training data
  class_weights.json when class weights are on
  data_report.json   rows read, bad rows, unseen labels, truncation
  data_files.json    size and sha256 of each data file at the start (`--resume` compares them)
  checkpoints/       Trainer checkpoints; one counts once its `.complete` marker exists
  adapter/           the final LoRA adapter (safetensors + adapter_config.json)
  tokenizer/         the tokenizer the run used
  train_log.jsonl    one line per logging step and per evaluation
  metrics.json       final metrics on the test split (else validation)
  predictions.csv    id, text, gold, pred, prob, topk for that split
  record.json        the run record of seed 000 §5.4
  environment.json   package versions, git state, hardware
A failed run keeps everything written so far; `--resume` continues from the last complete checkpoint.

What a run may write and where: the folder is `--output` or `runs/<time>-<experiment.name>`, the name
made one plain path component; an existing folder is used only when it is empty or an earlier run of
loralab's, and `--resume` only when the config and data are the run's own. Refusals happen before
anything is written. Secrets (URI passwords, tokens) are redacted in every file and message.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.markup import escape

from loralab.config import load_experiment
from loralab.config.loader import PREFIX_CACHE_MODES
from loralab.config.models import ExperimentConfig
from loralab.config.resolved import resolved_config
from loralab.data import infer_num_labels
from loralab.errors import LoralabError
from loralab.io import flatten, is_main_process, quiet_libraries, redact_secrets, write_json
from loralab.train.preflight import PreflightReport, run_preflight
from loralab.train.ranks import data_fingerprints
from loralab.train.report import print_preflight
from loralab.train.rundir import (
    CONFIG_HEADER,
    RunDirRefused,
    check_run_dir,
    free_port,
    make_run_dir,
    new_run_dir,
    process_identity,
    run_folder_name,
)
from loralab.train.session import Session


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]
    record: dict[str, Any]
    seconds: float
    notes: list[str] = field(default_factory=list)


# ---- where a run goes -----------------------------------------------------------------------------


# ---- what a run is --------------------------------------------------------------------------------


def save_resolved_config(cfg: ExperimentConfig, run_dir: Path) -> None:
    if not is_main_process():
        return
    raw = resolved_config(cfg)
    text = CONFIG_HEADER + str(cfg.source) + "\n" + yaml.safe_dump(raw, allow_unicode=True)
    (run_dir / "config.yaml").write_text(text, encoding="utf-8")


def _show(v: Any) -> str:
    if v is _ABSENT:
        return "nothing"
    text = json.dumps(v, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


_ABSENT = object()


def config_differences(cfg: ExperimentConfig, run_dir: Path) -> tuple[list[str], list[str]]:
    """(what differs between `cfg` and the run's own config and data, one line per key; notes).

    `tracking` is not compared: it says where metrics go, not what is trained (and the run's copy
    of the URI is redacted). Data files are compared by content as well as by path.
    """
    try:
        stored = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        return [f"{run_dir / 'config.yaml'} cannot be read ({type(e).__name__}): nothing to compare with"], []
    # Through YAML both ways, so that both sides have the types YAML gives (tuples, numbers).
    now = yaml.safe_load(yaml.safe_dump(resolved_config(cfg), allow_unicode=True))
    old_flat = {k: v for k, v in flatten(stored).items() if k.split(".")[0] != "tracking"}
    new_flat = {k: v for k, v in flatten(now).items() if k.split(".")[0] != "tracking"}
    diffs = []
    for k in sorted(old_flat.keys() | new_flat.keys()):
        was, now_v = old_flat.get(k, _ABSENT), new_flat.get(k, _ABSENT)
        if was != now_v:
            diffs.append(f"{k}: the run has {_show(was)}, this config has {_show(now_v)}")
    notes: list[str] = []
    try:
        recorded = json.loads((run_dir / "data_files.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        notes.append(
            f"{run_dir} has no data_files.json (an older loralab wrote it): data content not compared"
        )
        return diffs, notes
    for key, fp in data_fingerprints(cfg).items():
        old = recorded.get(key) if isinstance(recorded, dict) else None
        if not isinstance(old, dict) or "sha256" not in old:
            continue
        if "sha256" not in fp:
            diffs.append(f"{key}: {fp['path']} cannot be read now ({fp['error']})")
        elif fp["sha256"] != old["sha256"]:
            diffs.append(
                f"{key}: {fp['path']} changed since the run started ({old.get('bytes')} -> "
                f"{fp['bytes']} bytes, sha256 {old['sha256'][:12]}... -> {fp['sha256'][:12]}...)"
            )
    return diffs, notes


def refuse_changed_config(cfg: ExperimentConfig, run_dir: Path) -> list[str]:
    """Resume only the run this config describes: a changed rank would load mismatched weights, a
    changed learning rate or data file would continue a different experiment without a word."""
    diffs, notes = config_differences(cfg, run_dir)
    if diffs:
        lines = "\n".join(f"  - {d}" for d in diffs)
        raise RunDirRefused(
            f"--resume: the config differs from the run's ({run_dir / 'config.yaml'}):\n{lines}\n"
            f"resume with the run's own config (loralab train {run_dir / 'config.yaml'} --output {run_dir} "
            "--resume), or start a new run with another --output"
        )
    return notes


def set_status(run_dir: Path, status: str, **extra: Any) -> None:
    # An error's text can quote a URI with its password (a tracking or hub request that failed).
    entry = {"status": status, "time": datetime.now().isoformat(), **redact_secrets(extra)}
    write_json(run_dir / "status.json", entry)


# ---- the run --------------------------------------------------------------------------------------


def train(
    config: Path | ExperimentConfig,
    *,
    output: Path | None = None,
    resume: bool = False,
    quiet: bool = False,
    check_only: bool = False,
    prefix_cache: str | None = None,
    prefix_cache_dir: Path | None = None,
    fmt: str | None = None,
) -> RunResult | None:
    """Preflight, then setup / fit / validate. Returns None for `check_only`.

    `prefix_cache` (auto | on | off) overrides the config's; it is recorded in config.yaml like any
    setting, since `on` can change what is trained. `prefix_cache_dir`: where the cache goes (a study
    passes one folder to all its runs)."""
    cfg = config if isinstance(config, ExperimentConfig) else load_experiment(config, fmt=fmt)
    if prefix_cache is not None:
        override_prefix_cache(cfg, prefix_cache)
    console = Console(stderr=True, quiet=quiet or not is_main_process())
    if cfg.model.task == "seq-cls" and cfg.model.num_labels is None:
        # Inferred before preflight and before config.yaml is written, so both see the number.
        cfg.model.num_labels, note = infer_num_labels(cfg)
        console.print(f"[cyan]note:[/] {escape(note)}")
    quiet_libraries()
    run_dir: Path | None = None
    start_notes: list[str] = []
    created = False
    if not check_only:
        if resume and output is None:
            raise RunDirRefused("--resume continues the run in --output: give --output RUN_DIR")
        run_dir = new_run_dir(cfg, output)
        if output is None:
            start_notes += [n for n in run_folder_name(cfg)[1:] if n]
        if is_main_process():
            # Every refusal comes before preflight and before anything is written to the folder.
            start_notes += check_run_dir(run_dir, resume=resume)
            if resume:
                start_notes += refuse_changed_config(cfg, run_dir)
            created = make_run_dir(run_dir)
    # Preflight once per run: under DDP the other ranks trust rank 0's verdict (it runs first,
    # before any process group exists, and a failure stops the launcher).
    report = run_preflight(cfg) if is_main_process() else _skipped_preflight()
    if check_only or not report.ok:
        print_preflight(report)
        if not report.ok:
            if created and run_dir is not None and not any(run_dir.iterdir()):
                run_dir.rmdir()  # a run that never started leaves no folder behind
            raise PreflightFailed(report.lines())
        return None
    assert run_dir is not None
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        # A resumed run keeps the config and data fingerprints it started with (they were compared).
        save_resolved_config(cfg, run_dir)
        if is_main_process():
            write_json(run_dir / "data_files.json", data_fingerprints(cfg))
    write_json(run_dir / "preflight.json", redact_secrets([f.__dict__ for f in report.findings]))
    for n in start_notes:
        console.print(f"[cyan]note:[/] {escape(n)}")
    if cfg.deepspeed is not None and "RANK" not in os.environ:
        one_process_group()
    set_status(run_dir, "running", **process_identity())
    t0 = time.perf_counter()
    session: Session | None = None
    try:
        session = Session(cfg, run_dir, quiet=quiet, prefix_cache_dir=prefix_cache_dir)
        session.notes.extend(start_notes)
        session.setup()
        session.fit(resume=resume)
        if not is_main_process():
            if session.sharded:
                session.validate()  # rank 0's forward passes need this rank's shards
            session.close()
            return None  # rank 0 evaluates and writes the results
        metrics = session.validate()
    except BaseException as e:
        set_status(run_dir, "failed", error=f"{type(e).__name__}: {e}")
        if session is not None:
            session.abort(e)
        raise
    record = session.write_record(time.perf_counter() - t0)
    session.close()
    set_status(run_dir, "completed")
    return RunResult(run_dir, metrics, record, time.perf_counter() - t0, session.notes)


def override_prefix_cache(cfg: ExperimentConfig, mode: str) -> None:
    if mode not in PREFIX_CACHE_MODES:
        raise LoralabError(f"--prefix-cache {mode!r}: use one of {', '.join(PREFIX_CACHE_MODES)}")
    cfg.prefix_cache = mode
    cfg.raw["prefix_cache"] = mode


def one_process_group() -> None:
    """torchrun's environment for a world of one process. DeepSpeed needs a process group even for one
    process, and without these variables it looks for MPI instead (ModuleNotFoundError: mpi4py)."""
    port = str(free_port())
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_WORLD_SIZE", "1"),
                       ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", port)):  # fmt: skip
        os.environ.setdefault(key, value)


def _skipped_preflight() -> PreflightReport:
    return PreflightReport(findings=[])


class PreflightFailed(LoralabError):
    def __init__(self, lines: list[str]):
        super().__init__("preflight found problems that would fail the run:\n" + "\n".join(lines))
