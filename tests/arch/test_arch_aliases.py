"""The hub's legacy ids without an organisation (`gpt2`) find the bundled config of their org id (issue 9)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from loralab.arch import resolve
from loralab.arch.bundled import LEGACY_HUB_IDS, bundled_ids, find_bundled_or_legacy, legacy_hub_target
from loralab.arch.resolve import resolve_model
from loralab.errors import ModelResolutionError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(autouse=True)
def fresh_lookups(monkeypatch: pytest.MonkeyPatch) -> None:
    # resolve_model remembers answers per process; each test must look the name up itself.
    monkeypatch.setattr(resolve, "_RESOLVED", {})


def test_legacy_table_maps_org_less_ids_to_the_same_name_under_an_org() -> None:
    assert LEGACY_HUB_IDS["gpt2"] == "openai-community/gpt2"
    assert LEGACY_HUB_IDS["bert-base-uncased"] == "google-bert/bert-base-uncased"
    assert LEGACY_HUB_IDS["roberta-base"] == "FacebookAI/roberta-base"
    assert LEGACY_HUB_IDS["t5-small"] == "google-t5/t5-small"
    assert LEGACY_HUB_IDS["distilbert-base-uncased"] == "distilbert/distilbert-base-uncased"
    for legacy, org_id in LEGACY_HUB_IDS.items():
        assert "/" not in legacy
        org, _, name = org_id.partition("/")
        assert org and name == legacy, (legacy, org_id)


def test_legacy_lookup_is_case_insensitive_and_ignores_org_ids() -> None:
    assert legacy_hub_target(" GPT2 ") == "openai-community/gpt2"
    assert legacy_hub_target("openai-community/gpt2") is None
    assert legacy_hub_target("not-a-legacy-model") is None
    assert find_bundled_or_legacy("openai-community/gpt2") is not None
    found = find_bundled_or_legacy("gpt2")
    assert found is not None and found[0] == "openai-community/gpt2" and found[2] is True


def test_gpt2_offline_resolves_to_the_bundled_openai_community_config() -> None:
    resolved = resolve_model("gpt2")
    org = resolve_model("openai-community/gpt2")
    assert resolved.source == "bundled"
    assert resolved.model_id == "gpt2"  # the id the user wrote
    assert resolved.alias_of == "openai-community/gpt2"
    assert resolved.config == org.config and resolved.path == org.path
    assert resolved.note == "gpt2 is the hub's legacy name of openai-community/gpt2 (bundled config used)"
    assert org.alias_of is None and org.note is None


def test_unknown_org_less_id_still_lists_the_bundled_ids() -> None:
    with pytest.raises(ModelResolutionError) as exc:
        resolve_model("gpt7-super")
    msg = exc.value.message()
    assert "\n" not in msg
    assert "cannot find model 'gpt7-super'" in msg
    assert "local folder" in msg
    for model_id in bundled_ids():
        assert model_id in msg


def test_legacy_id_of_a_model_that_is_not_bundled_names_its_org_id() -> None:
    with pytest.raises(ModelResolutionError, match=r"legacy name of google-bert/bert-base-uncased"):
        resolve_model("bert-base-uncased")


def test_plan_of_seed002_written_gpt2_counts_like_openai_community_gpt2(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    text = (EXAMPLES / "seed002-gpt2-attention.yaml").read_text(encoding="utf-8")
    legacy = tmp_path / "seed002-legacy.yaml"
    legacy.write_text(
        text.replace("name_or_path: openai-community/gpt2", "name_or_path: gpt2"), encoding="utf-8"
    )
    assert "name_or_path: gpt2\n" in legacy.read_text(encoding="utf-8")

    def plan(path: Path) -> dict[str, object]:
        p = subprocess.run(
            [sys.executable, "-m", "loralab", "plan", str(path), "--json"],
            capture_output=True,
            text=True,
            env={**subprocess_env, "HF_HUB_OFFLINE": "1"},
            check=False,
        )
        assert p.returncode == 0, p.stderr
        out: dict[str, object] = json.loads(p.stdout)
        return out

    got, want = plan(legacy), plan(EXAMPLES / "seed002-gpt2-attention.yaml")
    assert got["trainable_params"] == want["trainable_params"] == 811_008
