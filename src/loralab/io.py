"""The bottom of loralab: process rank, JSON files and stdout, library chatter.

Every stage may import this module; it imports nothing of loralab's.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any


def rank() -> int:
    """This process's rank under torchrun/accelerate launch (0 when not distributed)."""
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


def dumps(obj: Any) -> str:
    """loralab's one JSON text form: indented, Korean kept readable (no \\uXXXX), dates as strings."""
    return json.dumps(obj, indent=2, ensure_ascii=False, default=str)


def write_json(path: Path, obj: Any) -> None:
    """Write `obj` to `path` atomically (a reader never sees half a file); rank 0 only."""
    if not is_main_process():
        return  # one writer per run directory: rank 0
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(dumps(obj) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def print_json(obj: Any) -> None:
    """One JSON object on stdout, for `--json` (machine-read: no console wrapping or colour)."""
    sys.stdout.write(dumps(obj) + "\n")


def quiet_libraries() -> None:
    """Library chatter (load reports, deprecation notices, MLflow's INFO lines) would bury loralab's
    own progress and findings; their warnings that matter are re-stated by preflight."""
    # transformers is heavy (~2 s): imported only by the commands that load a model anyway.
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")
