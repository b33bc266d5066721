"""`loralab train` with the prefix cache, end to end on a tiny Llama classifier: the run with the
cache ends with the metrics of the run without it; a second run in a shared cache folder reuses it; the
record says what was cached."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from train_fixtures import experiment_yaml, make_data, tiny_bert

from loralab.train.run import train


def tiny_llama_classifier(folder: Path) -> Path:
    """A random 4-layer Llama (hidden 32) with tiny_bert's word tokenizer (pad id 0)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    tiny_bert(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, initializer_range=0.3,
        num_labels=3,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForSequenceClassification(cfg).save_pretrained(folder)
    return folder


LORA = """
lora:
  config:
    task_type: SEQ_CLS
    r: 4
    lora_alpha: 8
    lora_dropout: 0.0
    target_modules: [q_proj, v_proj, down_proj]
    layers_to_transform: [2, 3]
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("pc")
    model = tiny_llama_classifier(root / "model")
    train_csv, test_csv = make_data(root / "data", n_train=60, n_test=30)
    return root, model, experiment_yaml(root, model, train_csv, test_csv, epochs=2)


def _config(root: Path, base: Path, name: str, extra: str = "") -> Path:
    text = base.read_text(encoding="utf-8")
    head, _, rest = text.partition("lora:")
    rest = rest.split("data:", 1)[1]
    p = root / f"{name}.yaml"
    p.write_text(head + LORA.strip() + "\ndata:" + rest + extra, encoding="utf-8")
    return p


def test_cached_run_matches_the_uncached_run(setup: tuple[Path, Path, Path]) -> None:
    root, _, base = setup
    off = train(_config(root, base, "off", "prefix_cache: off\n"), output=root / "run-off", quiet=True)
    on = train(_config(root, base, "auto"), output=root / "run-auto", quiet=True)
    assert off is not None and on is not None
    rec_off, rec_on = off.record["prefix_cache"], on.record["prefix_cache"]
    assert rec_off["used"] is False and rec_off["reason"] == "prefix_cache: off"
    assert rec_on["used"] is True and rec_on["boundary_layer"] == 2  # layers 0-1 frozen
    assert rec_on["splits"] == ["train: built", "validation: built", "test: built"]
    for key in ("accuracy", "macro_f1", "loss"):
        assert on.metrics[key] == pytest.approx(off.metrics[key], abs=1e-4), key
    saved = json.loads((root / "run-auto" / "record.json").read_text(encoding="utf-8"))
    assert saved["prefix_cache"]["bytes_on_disk"] > 0
    assert (root / "run-auto" / "prefix_cache").is_dir()


def test_runs_in_one_cache_folder_share_it(setup: tuple[Path, Path, Path]) -> None:
    root, _, base = setup
    shared = root / "shared-cache"
    cfg = _config(root, base, "shared")
    first = train(cfg, output=root / "s1", quiet=True, prefix_cache_dir=shared)
    second = train(cfg, output=root / "s2", quiet=True, prefix_cache_dir=shared)
    assert first is not None and second is not None
    assert [e.split(":")[1].split()[0] for e in second.record["prefix_cache"]["splits"]] == ["reused"] * 3
    assert second.metrics["accuracy"] == pytest.approx(first.metrics["accuracy"])
    # another max_length cuts the rows differently: rebuilt, not reused
    short = (
        _config(root, base, "short").read_text(encoding="utf-8").replace("max_length: 32", "max_length: 5")
    )
    (root / "short.yaml").write_text(short, encoding="utf-8")
    third = train(root / "short.yaml", output=root / "s3", quiet=True, prefix_cache_dir=shared)
    assert third is not None
    assert third.record["prefix_cache"]["splits"][0] == "train: built"


def test_a_resumed_run_reuses_its_cache(setup: tuple[Path, Path, Path]) -> None:
    root, _, base = setup
    cfg = _config(root, base, "resume")
    first = train(cfg, output=root / "r1", quiet=True)
    assert first is not None and first.record["prefix_cache"]["used"]
    again = train(cfg, output=root / "r1", quiet=True, resume=True)
    assert again is not None
    assert all(" reused " in e for e in again.record["prefix_cache"]["splits"])
    assert again.metrics["accuracy"] == pytest.approx(first.metrics["accuracy"])


def test_preflight_says_whether_the_prefix_is_cached(setup: tuple[Path, Path, Path]) -> None:
    from loralab.config import load_experiment
    from loralab.train.preflight import run_preflight

    root, _, base = setup
    found = run_preflight(load_experiment(_config(root, base, "pre")), with_twin=False).findings
    (pc,) = [f for f in found if f.check == "prefix_cache"]
    assert pc.severity == "info" and "layers 0-1" in pc.message and "predicted" in pc.message
    off = run_preflight(
        load_experiment(_config(root, base, "pre-off", "prefix_cache: off\n")), with_twin=False
    )
    (pc_off,) = [f for f in off.findings if f.check == "prefix_cache"]
    assert "prefix_cache: off" in pc_off.message
    # every layer adapted: nothing to cache and nothing said
    every = _config(root, base, "pre-all").read_text(encoding="utf-8").replace("[2, 3]", "[0, 1, 2, 3]")
    (root / "pre-all.yaml").write_text(every, encoding="utf-8")
    assert not [f for f in run_preflight(load_experiment(root / "pre-all.yaml"), with_twin=False).findings
                if f.check == "prefix_cache"]  # fmt: skip


def test_evaluate_reads_the_runs_cache(
    setup: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`loralab evaluate RUN_DIR` scores the test split again from the run's cache, with the metrics
    the run wrote; a file the run never cached is scored through the whole model."""
    import loralab.train.prefix_cache as pc
    from loralab.predict.run import evaluate_run

    root, _, base = setup
    run = train(_config(root, base, "ev"), output=root / "ev", quiet=True)
    assert run is not None
    read: list[list[str]] = []
    install = pc.PrefixCache.install

    def spy(self: pc.PrefixCache, model: object) -> None:
        read.append(list(self.splits))
        install(self, model)

    monkeypatch.setattr(pc.PrefixCache, "install", spy)
    metrics, _ = evaluate_run(root / "ev")
    assert read == [["test"]]
    for key in ("accuracy", "macro_f1", "loss"):
        assert metrics[key] == pytest.approx(run.metrics[key], abs=1e-5), key
    other = root / "data" / "other.csv"
    other.write_text("text,category\ncard lost please,card\nfee charge why,fee\n", encoding="utf-8")
    evaluate_run(root / "ev", data=other)
    assert read == [["test"]]  # nothing cached for that file: no cache installed
