"""Architecture configs of popular models, shipped so that `plan` works without the Hugging Face hub.

Each folder is named after a hub id with "/" replaced by "__" (`Qwen__Qwen3-8B`) and holds the model's
`config.json` and a `SOURCE.txt` saying where every value came from (verbatim copy or reconstruction)
and which official parameter count it reproduces. They are facts about public models, not weights.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

_HERE = Path(__file__).resolve().parent


@cache
def bundled_models() -> dict[str, Path]:
    """Hub id ("Qwen/Qwen3-8B") -> folder holding its bundled config.json and SOURCE.txt."""
    out: dict[str, Path] = {}
    for folder in sorted(_HERE.iterdir(), key=lambda p: p.name.lower()):
        if folder.is_dir() and "__" in folder.name and (folder / "config.json").is_file():
            out[folder.name.replace("__", "/", 1)] = folder
    return out


def bundled_ids() -> list[str]:
    return list(bundled_models())


def find_bundled(name: str) -> tuple[str, Path] | None:
    """The bundled (hub id, folder) for `name`, matched case-insensitively as "org/name" or "org__name"."""
    key = name.strip().replace("__", "/", 1).lower()
    for model_id, folder in bundled_models().items():
        if model_id.lower() == key:
            return model_id, folder
    return None
