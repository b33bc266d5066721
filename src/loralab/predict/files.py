"""What `loralab evaluate RUN_DIR` reads, checked before torch, transformers or PEFT are imported: a
user's damaged or planted run directory is named in a second, not after the libraries load."""

from __future__ import annotations

import json
from pathlib import Path

from loralab.errors import Problem, RunDirError
from loralab.io import safetensors_problem

ADAPTER_WEIGHTS = "adapter_model.safetensors"
# Weight files that torch.load or pickle would read: unpickling a planted file runs its code, and
# PEFT falls back to adapter_model.bin when the safetensors file is missing.
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"}
FIX_RUN = "evaluate a run directory that `loralab train` finished, or train it again"
FIX_CONFIG = "evaluate the adapter with the config.yaml it was trained with"


def _json_object_problem(path: Path) -> str | None:
    if not path.is_file():
        return "missing"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return f"unreadable ({type(e).__name__}: {e})"
    return None if isinstance(data, dict) else "not a JSON object"


def check_run_files(run_dir: Path) -> None:
    """What `evaluate RUN_DIR` reads, checked before any library sees it: the folder, its config, the
    tokenizer, and an adapter of safetensors only. A missing or cut-short adapter would otherwise
    surface as a hub lookup ("Repo id must be ...") or a SafetensorError that names no file."""
    if not run_dir.exists():
        raise RunDirError(Problem(str(run_dir), "", "no such run directory", FIX_RUN))
    if not run_dir.is_dir():
        raise RunDirError(Problem(str(run_dir), "", "is a file, not a run directory", FIX_RUN))
    if not (run_dir / "config.yaml").is_file():
        raise RunDirError(
            Problem(str(run_dir / "config.yaml"), "", "missing, so this is not a run directory", FIX_RUN)
        )
    adapter = run_dir / "adapter"
    if not adapter.is_dir():
        what = "missing: the run has no saved adapter (training writes it at its end)"
        fix = (
            "resume the run with `loralab train CONFIG --output RUN_DIR --resume`, or evaluate a finished run"
        )
        raise RunDirError(Problem(str(adapter), "", what, fix))
    pickles = sorted(p.name for p in adapter.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        what = (
            f"pickle weights in the adapter folder ({', '.join(pickles)}); loralab loads adapters from "
            "safetensors only, because unpickling a file can run any code in it"
        )
        fix = f"delete {'them' if len(pickles) > 1 else 'it'} and keep {ADAPTER_WEIGHTS}"
        raise RunDirError(Problem(str(adapter / pickles[0]), "", what, fix))
    found = _json_object_problem(adapter / "adapter_config.json")
    if found:
        raise RunDirError(Problem(str(adapter / "adapter_config.json"), "", found, FIX_RUN))
    weights = adapter / ADAPTER_WEIGHTS
    found = safetensors_problem(weights)
    if found:
        what = "missing" if not weights.is_file() else found.removeprefix(f"{weights.name} ")
        raise RunDirError(
            Problem(str(weights), "", what, "restore the adapter from a backup, or train the run again")
        )
    for name in ("labels.json", "train_counts.json"):  # written for classification runs only
        found = _json_object_problem(run_dir / name) if (run_dir / name).exists() else None
        if found:
            raise RunDirError(Problem(str(run_dir / name), "", found, FIX_RUN))
    tokenizer = run_dir / "tokenizer"
    if not any((tokenizer / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        raise RunDirError(
            Problem(
                str(tokenizer), "", "missing or empty: the run's tokenizer is needed to score it", FIX_RUN
            )
        )
