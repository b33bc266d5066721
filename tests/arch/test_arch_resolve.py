"""Bundled configs and model resolution (torch-free)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from loralab.arch.bundled import bundled_ids, bundled_models, find_bundled
from loralab.arch.resolve import resolve_model
from loralab.errors import ModelResolutionError

EXPECTED_BUNDLED = {
    "EleutherAI/polyglot-ko-12.8b",
    "LGAI-EXAONE/EXAONE-3.5-7.8B-Instruct",
    "Qwen/Qwen2.5-7B-Instruct",
    "Qwen/Qwen3-0.6B",
    "Qwen/Qwen3-14B",
    "Qwen/Qwen3-4B-Instruct-2507",
    "Qwen/Qwen3-8B",
    "gogamza/kobart-base-v2",
    "google/gemma-2-9b",
    "meta-llama/Llama-3.1-8B",
    "meta-llama/Llama-3.2-3B",
    "mistralai/Mistral-7B-v0.3",
    "nlpai-lab/kullm-polyglot-12.8b-v2",
    "openai-community/gpt2",
    "skt/kogpt2-base-v2",
    "upstage/SOLAR-10.7B-v1.0",
}


def test_bundled_models_have_config_and_source() -> None:
    models = bundled_models()
    assert set(models) == EXPECTED_BUNDLED
    for model_id, folder in models.items():
        assert folder.name == model_id.replace("/", "__")
        config = json.loads((folder / "config.json").read_text())
        assert isinstance(config.get("model_type"), str)
        assert (folder / "SOURCE.txt").read_text().startswith(model_id)


@pytest.mark.parametrize("name", ["Qwen/Qwen3-8B", "qwen/qwen3-8b", "Qwen__Qwen3-8B", "QWEN__QWEN3-8B"])
def test_find_bundled_is_case_insensitive_and_accepts_folder_names(name: str) -> None:
    found = find_bundled(name)
    assert found is not None
    assert found[0] == "Qwen/Qwen3-8B"
    assert find_bundled("Qwen/Qwen3-9B") is None


def test_resolve_local_folder_and_file(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 2}))
    by_folder = resolve_model(str(tmp_path))
    assert by_folder.source == "local"
    assert by_folder.config["n_layer"] == 2
    assert by_folder.path == tmp_path / "config.json"
    by_file = resolve_model(str(tmp_path / "config.json"))
    assert by_file.source == "local"
    assert by_file.config == by_folder.config


def test_resolve_folder_without_config(tmp_path: Path) -> None:
    with pytest.raises(ModelResolutionError, match=r"has no config\.json"):
        resolve_model(str(tmp_path))


@pytest.mark.parametrize("rel", ["missing-folder/model", "./missing", "nowhere/config.json"])
def test_resolve_missing_local_path_names_it(tmp_path: Path, rel: str) -> None:
    name = str(tmp_path / rel) if not rel.startswith("./") else rel
    with pytest.raises(ModelResolutionError, match="does not exist") as exc:
        resolve_model(name)
    assert Path(name).name in str(exc.value)


def test_resolve_bundled_when_offline() -> None:
    resolved = resolve_model("qwen/qwen3-8b")
    assert resolved.source == "bundled"
    assert resolved.model_id == "qwen/qwen3-8b"
    assert resolved.config["num_hidden_layers"] == 36
    assert resolve_model("Qwen__Qwen3-8B").source == "bundled"


def test_unknown_id_offline_lists_bundled_ids() -> None:
    with pytest.raises(ModelResolutionError) as exc:
        resolve_model("some-org/not-a-model")
    msg = exc.value.message()
    assert "\n" not in msg
    assert "some-org/not-a-model" in msg
    assert "HF_HUB_OFFLINE" in msg
    for model_id in bundled_ids():
        assert model_id in msg


def test_unreachable_hub_falls_back_quickly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    start = time.perf_counter()
    resolved = resolve_model("openai-community/gpt2")
    assert resolved.source == "bundled"
    with pytest.raises(ModelResolutionError, match="unreachable"):
        resolve_model("some-org/not-a-model")
    assert time.perf_counter() - start < 10


def test_hub_cache_is_used_offline(tmp_path: Path) -> None:
    # huggingface_hub's cache layout: refs/<revision> names a snapshot folder holding the files.
    repo = tmp_path / "hf-hub" / "models--some-org--cached-model"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 3}))
    resolved = resolve_model("some-org/cached-model")
    assert resolved.source == "hub"
    assert resolved.config["n_layer"] == 3
