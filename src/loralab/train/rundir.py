"""The run directory and its checkpoints, without torch: what the launcher process, the folder checks
and a study's process need (a launcher that imported torch, transformers and peft to check a folder
would spend seconds and half a GiB per node before starting anything).

Naming the run folder, refusing folders that cannot be used as asked, the process that owns a run,
and whether a checkpoint can resume a run exactly.
"""

from __future__ import annotations

import json
import os
import re
import socket
from datetime import datetime
from pathlib import Path
from typing import Any

from loralab.config.models import ExperimentConfig
from loralab.errors import LoralabError
from loralab.io import safetensors_problem, tensor_names

RUNS_DIR = Path("runs")
CONFIG_HEADER = "# Resolved by loralab from "
# Files loralab writes that may sit in a folder before its run starts (`loralab demo` writes its
# config into the run folder), told apart from a user's file of the same name by their first line.
OWN_HEADERS = {"config.yaml": CONFIG_HEADER, "demo.yaml": "# `loralab demo`"}
# A name becomes one path component of letters (any script), digits and . _ + -; everything else,
# path separators and ".." included, becomes "-". 100 bytes leave room for the time stamp in 255.
_UNSAFE_NAME = re.compile(r"[^\w.+-]+")
_NAME_BYTES = 100


class RunDirRefused(LoralabError):
    """The run directory cannot be used as asked; nothing was written to it."""


def safe_name(name: str) -> str:
    """`name` as one path component that stays inside its parent folder ("" when nothing is left)."""
    text = _UNSAFE_NAME.sub("-", name).strip(".-_+")
    while len(text.encode("utf-8")) > _NAME_BYTES:
        text = text[:-1]
    return text.rstrip(".-_+")


def run_folder_name(cfg: ExperimentConfig) -> tuple[str, str | None]:
    """The run folder's name part (from experiment.name, else the config file's name) and a note when
    the name given could not be used as it is."""
    given = (cfg.experiment or {}).get("name")
    name = safe_name(str(given)) if given is not None else ""
    name = name or safe_name(cfg.source.stem) or "run"
    if given is not None and name != str(given):
        return (
            name,
            f"experiment.name {str(given)!r} is not a plain folder name: the run folder uses {name!r}",
        )
    return name, None


def new_run_dir(cfg: ExperimentConfig, output: Path | None) -> Path:
    """`output`, else a new folder `runs/<time>-<name>` that resolves inside `runs/`."""
    if output is not None:
        return output
    name, _ = run_folder_name(cfg)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = RUNS_DIR / f"{stamp}-{name}"
    n = 2
    while run_dir.exists() or run_dir.is_symlink():  # two runs of one name in the same second
        run_dir = RUNS_DIR / f"{stamp}-{name}-{n}"
        n += 1
    if run_dir.resolve().parent != RUNS_DIR.resolve():
        raise RunDirRefused(f"the run folder {run_dir} would resolve outside {RUNS_DIR}/: give --output DIR")
    return run_dir


def _first_line(path: Path) -> str:
    try:
        with path.open(encoding="utf-8") as f:
            return f.readline()
    except (OSError, UnicodeDecodeError):
        return ""


def _written_by_loralab(path: Path) -> bool:
    header = OWN_HEADERS.get(path.name)
    return header is not None and path.is_file() and _first_line(path).startswith(header)


def read_status(run_dir: Path) -> dict[str, Any] | None:
    """The run's status.json when it is loralab's (running | completed | failed), else None."""
    try:
        data = json.loads((run_dir / "status.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(data, dict) and data.get("status") in ("running", "completed", "failed")
    return data if ok else None


def _check_output_path(run_dir: Path) -> None:
    """The nearest existing part of `run_dir` must be a folder (not a file, not a dangling link)."""
    for p in (run_dir, *run_dir.parents):
        try:
            if p.is_dir():
                return
            if p.is_symlink() and not p.exists():
                raise RunDirRefused(f"--output {run_dir}: {p} is a link to nothing")
            if p.exists():
                if p == run_dir:
                    raise RunDirRefused(
                        f"--output {run_dir} is a file, not a folder: give a folder for the run"
                    )
                raise RunDirRefused(f"--output {run_dir}: {p} is a file, so no folder can be made under it")
        except PermissionError:
            raise RunDirRefused(f"--output {run_dir}: permission denied on {p}") from None


def make_run_dir(run_dir: Path) -> bool:
    """Create `run_dir` (and its parents); True when it did not exist before."""
    existed = run_dir.is_dir()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirRefused(f"cannot create the run directory {run_dir}: {e.strerror or e}") from None
    return not existed


def _process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, from /proc; "" where there is no /proc),
    or None when there is no such live process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return None if fields[0] in ("Z", "X") else fields[19]
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return ""  # someone else's process
    return ""


def process_identity() -> dict[str, Any]:
    """What status.json records of a running run, so that a second `loralab train` can tell that the
    folder is still being written to."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": _process_start(os.getpid())}


def _refuse_if_live(run_dir: Path, status: dict[str, Any] | None) -> None:
    if not status or status.get("status") != "running":
        return
    pid = status.get("pid")
    if not isinstance(pid, int) or pid == os.getpid() or status.get("host") != socket.gethostname():
        return
    started = _process_start(pid)
    if started is None or (status.get("started") and started and started != status["started"]):
        return  # ended (killed), or its number now belongs to another process
    raise RunDirRefused(
        f"{run_dir} is in use: loralab process {pid} on this machine is still running it (since "
        f"{status.get('time')}); wait for it to end or stop it, then --resume"
    )


def _failed_how(status: dict[str, Any] | None) -> str:
    if status is None:
        return "no status.json"
    text = f"status {status['status']}"
    if status.get("error"):
        error = str(status["error"]).splitlines()[0]
        text += f": {error[:160]}{'...' if len(error) > 160 else ''}"
    return text


def check_run_dir(run_dir: Path, *, resume: bool) -> list[str]:
    """Refuse a run directory that cannot be used as asked, before anything is written to it. Returns
    one note per checkpoint a resume passes over.

    New or empty folder: a fresh run. A folder with files loralab did not write (the user's own
    config.yaml in `-o proj`): refused. An earlier run: a fresh run is refused (--resume or another
    --output), a resume needs a complete checkpoint and a run that is not still running.
    """
    _check_output_path(run_dir)
    if not run_dir.exists():
        if resume:
            raise RunDirRefused(f"--resume: run directory {run_dir} does not exist")
        return []
    try:
        entries = sorted(e.name for e in run_dir.iterdir())
    except OSError as e:
        raise RunDirRefused(f"cannot read the run directory {run_dir}: {e.strerror or e}") from None
    status = read_status(run_dir)
    if status is None and not _written_by_loralab(run_dir / "config.yaml"):
        if resume:
            raise RunDirRefused(
                f"--resume: {run_dir} is not a loralab run (no status.json or config.yaml of loralab's)"
            )
        foreign = [n for n in entries if not _written_by_loralab(run_dir / n)]
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise RunDirRefused(
                f"--output {run_dir} holds files loralab did not write ({shown}); a run would overwrite "
                "or mix with them: give a new or empty folder"
            )
        return []
    _refuse_if_live(run_dir, status)
    ckpt, skipped = resume_point(run_dir / "checkpoints")
    state = status["status"] if status else "unfinished"
    if ckpt is None and state != "completed":
        why = "; ".join(skipped[:3]) or "none was saved"
        head = (
            f"--resume has nothing to resume from in {run_dir}"
            if resume
            else f"{run_dir} holds a run that stopped before its first complete checkpoint"
        )
        raise RunDirRefused(
            f"{head} ({_failed_how(status)}; no complete checkpoint: {why}); start again with "
            f"--output NEW, or delete {run_dir} and run the same command"
        )
    if not resume:
        hint = (
            f"use --resume to continue it from {ckpt.name}, or another --output"
            if ckpt
            else "give another --output"
        )
        raise RunDirRefused(f"{run_dir} already holds a {state} run; {hint}")
    if ckpt is None:
        raise RunDirRefused(f"--resume: {run_dir} holds a completed run with no checkpoint to resume from")
    return [f"{s}: resuming from {ckpt.name}" for s in skipped]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---- checkpoints ----------------------------------------------------------------------------------

COMPLETE_MARKER = ".complete"  # renamed into place after every other part of a checkpoint is written


def state_problem(path: Path) -> str | None:
    """Why the state saved at `path` cannot be loaded whole, or None: both files present, the tensors
    file not cut short, the skeleton readable and naming only tensors the tensors file holds."""
    st, js = path.with_suffix(".safetensors"), path.with_suffix(".json")
    if not js.is_file():
        return f"{js.name} missing"
    found = safetensors_problem(st)
    if found:
        return found
    try:
        skeleton = json.loads(js.read_text())
    except (OSError, ValueError) as e:
        return f"{js.name} unreadable: {type(e).__name__}"
    if not _refs(skeleton) <= tensor_names(st):
        return f"{js.name} names tensors that {st.name} lacks"
    return None


def _refs(obj: Any) -> set[str]:
    if isinstance(obj, list):
        return set().union(*(_refs(v) for v in obj)) if obj else set()
    if not isinstance(obj, dict):
        return set()
    name = obj.get("__tensor__", obj.get("__ndarray__"))
    if isinstance(name, str):
        return {name}
    return set().union(*(_refs(v) for v in obj.values())) if obj else set()


def _json_problem(path: Path, required_key: str | None = None) -> str | None:
    if not path.is_file():
        return f"{path.name} missing"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return f"{path.name} unreadable: {type(e).__name__}"
    if required_key is not None and (not isinstance(data, dict) or required_key not in data):
        return f"{path.name} has no {required_key}"
    return None


def _weights_problem(ckpt: Path) -> str | None:
    """The model part: a LoRA adapter (adapter_model.safetensors + adapter_config.json), or the whole
    model's safetensors when LoRA is off (one file, or shards listed by an index)."""
    if (ckpt / "adapter_config.json").exists() or (ckpt / "adapter_model.safetensors").exists():
        return _json_problem(ckpt / "adapter_config.json") or safetensors_problem(
            ckpt / "adapter_model.safetensors"
        )
    index = ckpt / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, AttributeError) as e:
            return f"{index.name} unreadable: {type(e).__name__}"
        for shard in sorted(shards):
            found = safetensors_problem(ckpt / shard)
            if found:
                return found
        return None
    if (ckpt / "model.safetensors").exists():
        return safetensors_problem(ckpt / "model.safetensors")
    return "adapter weights missing (no adapter_model.safetensors)"


def checkpoint_problems(ckpt: Path) -> list[str]:
    """What keeps `ckpt` from resuming the run exactly, one entry per missing or unreadable part; empty
    when it is whole. The Trainer itself resumes without a word from a checkpoint that lacks its
    optimizer, scheduler or RNG state (fresh ones instead), which silently changes the run.

    loralab's own format holds: the `.complete` marker (written last), adapter weights, trainer state,
    optimizer, scheduler and RNG state (one per process under DDP), and a loss scaler when present.
    DeepSpeed and FSDP keep weights, optimizer and RNG in their own layouts; for those the marker,
    the trainer state and that their state is there (DeepSpeed's `latest` folder, FSDP's optimizer)
    are checked.
    """
    if not (ckpt / COMPLETE_MARKER).exists():
        return ["no .complete marker: its save was interrupted"]
    found = [_json_problem(ckpt / "trainer_state.json", "global_step")]
    latest = ckpt / "latest"
    if latest.is_file() or any(ckpt.glob("global_step*")):  # DeepSpeed
        tag = latest.read_text(encoding="utf-8").strip() if latest.is_file() else ""
        if not tag or not (ckpt / tag).is_dir():
            found.append(f"DeepSpeed state folder {tag or '(latest)'} missing")
    elif any(ckpt.glob("pytorch_model_fsdp*")) or any(ckpt.glob("optimizer_0*")):  # FSDP
        if not any(ckpt.glob("optimizer_0*")) and not (ckpt / "optimizer.bin").is_file():
            found.append("FSDP optimizer state missing")
    else:
        found += [_weights_problem(ckpt), state_problem(ckpt / "optimizer")]
        found.append(state_problem(ckpt / "scheduler"))
        rng = sorted(p.with_suffix("") for p in ckpt.glob("rng_state*.json"))
        found += [state_problem(p) for p in rng] if rng else ["RNG state missing (rng_state.*)"]
        if (ckpt / "scaler.json").exists() or (ckpt / "scaler.safetensors").exists():
            found.append(state_problem(ckpt / "scaler"))
    return [f for f in found if f]


def _checkpoints(output_dir: Path) -> list[Path]:
    """Every `checkpoint-<step>` folder, oldest first (a stray `checkpoint-x` is not one)."""
    if not output_dir.is_dir():
        return []
    found = [p for p in output_dir.glob("checkpoint-*") if p.is_dir() and p.name[11:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[11:]))


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """Checkpoints that can resume the run exactly (marker, weights, optimizer, scheduler, trainer and
    RNG state all present and readable: `checkpoint_problems`), oldest first."""
    return [p for p in _checkpoints(output_dir) if not checkpoint_problems(p)]


def resume_point(output_dir: Path) -> tuple[Path | None, list[str]]:
    """The newest complete checkpoint (None if there is none), and one line for each newer checkpoint
    passed over, naming what it lacks: a resume that quietly went further back would look like a
    fresh start of those steps."""
    skipped: list[str] = []
    for ckpt in reversed(_checkpoints(output_dir)):
        problems = checkpoint_problems(ckpt)
        if not problems:
            return ckpt, skipped
        skipped.append(f"{ckpt.name} skipped: {'; '.join(problems)}")
    return None, skipped
