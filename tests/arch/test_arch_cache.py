"""The record cache: keys, atomic writes, hits without torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from loralab.arch import cache
from loralab.arch.cache import cache_dir, get_arch_record, read_record, record_key, write_record
from loralab.arch.records import ArchRecord

TINY_GPT2 = {
    "model_type": "gpt2",
    "vocab_size": 100,
    "n_embd": 64,
    "n_layer": 2,
    "n_head": 4,
    "n_positions": 32,
}


def test_key_ignores_irrelevant_fields_and_depends_on_the_rest() -> None:
    base = record_key(TINY_GPT2, "causal-lm")
    noisy = {**TINY_GPT2, "_name_or_path": "x", "transformers_version": "4.0", "id2label": {"0": "a"}}
    assert record_key(noisy, "causal-lm") == base
    assert record_key({**TINY_GPT2, "n_layer": 3}, "causal-lm") != base
    assert record_key(TINY_GPT2, "seq-cls") != base
    assert record_key(TINY_GPT2, "causal-lm", {"transformers": "9.9", "torch": "2.13.0"}) != base


def test_miss_introspects_and_writes_then_hits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps(TINY_GPT2))
    first = get_arch_record(str(tmp_path / "m"), task="seq-cls", num_labels=3)
    files = list(cache_dir().glob("*"))
    assert [f.name for f in files] == [f"{record_key(TINY_GPT2, 'seq-cls')}.json.gz"]
    stored = read_record(files[0])
    assert stored is not None and stored.label_dim is not None and stored.label_dim > 1000

    def boom(*args: object, **kwargs: object) -> ArchRecord:
        raise AssertionError("cache hit expected")

    monkeypatch.setattr(cache, "introspect", boom)
    again = get_arch_record(str(tmp_path / "m"), task="seq-cls", num_labels=3)
    assert again.to_json() == first.to_json()
    assert first.num_labels == 3 and first.module("score") is not None
    score = first.module("score")
    assert score is not None and score.out_features == 3
    other = get_arch_record(str(tmp_path / "m"), task="seq-cls", num_labels=11)
    assert other.total_params == first.total_params + 8 * 64
    assert other.model_id == str(tmp_path / "m")


def test_default_num_labels_come_from_the_config(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(
        json.dumps({**TINY_GPT2, "id2label": {"0": "a", "1": "b", "2": "c"}})
    )
    rec = get_arch_record(str(tmp_path), task="seq-cls", num_labels=None)
    assert rec.num_labels == 3


def test_corrupt_cache_file_is_a_miss(tmp_path: Path) -> None:
    path = cache_dir() / f"{record_key(TINY_GPT2, 'causal-lm')}.json.gz"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not gzip")
    assert read_record(path) is None
    (tmp_path / "config.json").write_text(json.dumps(TINY_GPT2))
    rec = get_arch_record(str(tmp_path), task="causal-lm", num_labels=None)
    assert rec.total_params > 0
    assert read_record(path) is not None  # rewritten


def test_write_is_atomic_and_reproducible(tmp_path: Path) -> None:
    rec = get_arch_record("openai-community/gpt2", task="causal-lm", num_labels=None)
    a, b = tmp_path / "a.json.gz", tmp_path / "b.json.gz"
    write_record(a, rec)
    write_record(b, rec)
    assert a.read_bytes() == b.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json.gz", "b.json.gz"]


def test_cache_hit_needs_no_torch(subprocess_env: dict[str, str]) -> None:
    code = (
        "import sys, time\n"
        "t = time.perf_counter()\n"
        "from loralab.arch.cache import get_arch_record\n"
        "r = get_arch_record('Qwen/Qwen3-8B', task='seq-cls', num_labels=260)\n"
        "dt = time.perf_counter() - t\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft') if m in sys.modules]\n"
        "print(r.total_params, dt, heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=subprocess_env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    total, seconds, heavy = out.stdout.split(maxsplit=2)
    assert int(total) == 8_190_735_360 - 151936 * 4096 + 260 * 4096
    assert heavy.strip() == "[]"
    assert float(seconds) < 1.0
