"""Bundled models: official parameter counts, known shapes, and the shipped records."""

from __future__ import annotations

import json
from typing import Any

import pytest

from loralab.arch.bundled import bundled_models
from loralab.arch.cache import SHIPPED_DIR, get_arch_record, read_record, record_key
from loralab.arch.records import ArchRecord


def config_of(model_id: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((bundled_models()[model_id] / "config.json").read_text())
    return data


def shipped_tasks(config: dict[str, Any]) -> list[str]:
    return ["causal-lm", "seq-cls", *(["seq2seq"] if config["model_type"] == "bart" else [])]


def non_embedding(rec: ArchRecord) -> int:
    return rec.total_params - sum(
        p.numel
        for m in rec.modules
        if m.kind == "embedding" or m.name == rec.output_embedding
        for p in m.params
        if p.tied_to is None
    )


# Exact figures quoted in the SOURCE.txt files (causal-lm unless noted; tied heads counted once).
EXACT = {
    ("Qwen/Qwen3-8B", "causal-lm"): 8_190_735_360,
    ("Qwen/Qwen3-0.6B", "causal-lm"): 596_049_920,  # KerasHub preset count
    ("openai-community/gpt2", "causal-lm"): 124_439_808,
    ("gogamza/kobart-base-v2", "seq2seq"): 123_859_968,
    ("google/gemma-2-9b", "causal-lm"): 9_241_705_984,
    ("meta-llama/Llama-3.1-8B", "causal-lm"): 8_030_261_248,
    ("LGAI-EXAONE/EXAONE-3.5-7.8B-Instruct", "causal-lm"): 7_818_448_896,
    # Not the model card's 12,898,631,680: SOURCE.txt explains why that figure is inconsistent.
    ("EleutherAI/polyglot-ko-12.8b", "causal-lm"): 12_893_603_840,
    ("nlpai-lab/kullm-polyglot-12.8b-v2", "causal-lm"): 12_893_603_840,
}
# Rounded figures in billions from model cards / hub pages: (figure, half of its last digit).
ROUNDED = {
    "Qwen/Qwen2.5-7B-Instruct": (7.61, 0.01),
    "Qwen/Qwen3-14B": (14.8, 0.05),
    "Qwen/Qwen3-4B-Instruct-2507": (4.0, 0.05),
    "meta-llama/Llama-3.2-3B": (3.21, 0.005),
    "mistralai/Mistral-7B-v0.3": (7.25, 0.005),
    "upstage/SOLAR-10.7B-v1.0": (10.73, 0.005),
    "skt/kogpt2-base-v2": (0.125, 0.0005),
}
NON_EMBEDDING = {
    "Qwen/Qwen3-8B": (6.95, 0.005),
    "Qwen/Qwen2.5-7B-Instruct": (6.53, 0.005),
    "Qwen/Qwen3-14B": (13.2, 0.05),
    "Qwen/Qwen3-0.6B": (0.44, 0.005),
    "Qwen/Qwen3-4B-Instruct-2507": (3.6, 0.05),
    "LGAI-EXAONE/EXAONE-3.5-7.8B-Instruct": (6.979588096, 1e-9),
    "google/gemma-2-9b": (8.324201984, 1e-9),
}


@pytest.mark.parametrize(("model_id", "task"), list(EXACT), ids=[f"{m}-{t}" for m, t in EXACT])
def test_exact_official_totals(model_id: str, task: str) -> None:
    assert get_arch_record(model_id, task=task, num_labels=None).total_params == EXACT[(model_id, task)]


@pytest.mark.parametrize("model_id", list(ROUNDED))
def test_rounded_official_totals(model_id: str) -> None:
    figure, tol = ROUNDED[model_id]
    total = get_arch_record(model_id, task="causal-lm", num_labels=None).total_params
    assert abs(total / 1e9 - figure) <= tol + 1e-12


@pytest.mark.parametrize("model_id", list(NON_EMBEDDING))
def test_non_embedding_figures(model_id: str) -> None:
    figure, tol = NON_EMBEDDING[model_id]
    rec = get_arch_record(model_id, task="causal-lm", num_labels=None)
    assert abs(non_embedding(rec) / 1e9 - figure) <= tol + 1e-12


def test_qwen3_8b_shapes() -> None:
    rec = get_arch_record("Qwen/Qwen3-8B", task="seq-cls", num_labels=260)
    assert rec.num_layers == 36 and rec.layers_per_stack == {"model.layers": 36}
    expected = {
        "self_attn.q_proj": (4096, 4096, "attention"),
        "self_attn.k_proj": (4096, 1024, "attention"),
        "self_attn.v_proj": (4096, 1024, "attention"),
        "self_attn.o_proj": (4096, 4096, "attention"),
        "mlp.gate_proj": (4096, 12288, "mlp"),
        "mlp.up_proj": (4096, 12288, "mlp"),
        "mlp.down_proj": (12288, 4096, "mlp"),
    }
    for suffix, (fin, fout, kind) in expected.items():
        m = rec.module(f"model.layers.25.{suffix}")
        assert m is not None and m.linear and m.layer == 25
        assert (m.in_features, m.out_features, m.kind) == (fin, fout, kind), suffix
        assert not m.has_bias
    score = rec.module("score")
    assert score is not None
    assert (score.in_features, score.out_features, score.kind, score.has_bias) == (4096, 260, "head", False)
    assert rec.seq_cls_head == "score" and rec.num_labels == 260 and rec.output_embedding is None
    assert rec.total_params == 8_190_735_360 - 151936 * 4096 + 260 * 4096
    assert rec.model_id == "Qwen/Qwen3-8B" and rec.config_dtype == "bfloat16"


def test_gpt2_conv1d_shapes() -> None:
    rec = get_arch_record("openai-community/gpt2", task="causal-lm", num_labels=None)
    for name, fin, fout, kind in [
        ("transformer.h.3.attn.c_attn", 768, 2304, "attention"),
        ("transformer.h.3.attn.c_proj", 768, 768, "attention"),
        ("transformer.h.3.mlp.c_fc", 768, 3072, "mlp"),
        ("transformer.h.3.mlp.c_proj", 3072, 768, "mlp"),
    ]:
        m = rec.module(name)
        assert m is not None and m.cls == "Conv1D" and m.linear
        assert (m.in_features, m.out_features, m.kind) == (fin, fout, kind), name
        assert m.has_bias and m.bias_numel == fout


def test_exaone_uses_real_module_names() -> None:
    rec = get_arch_record("LGAI-EXAONE/EXAONE-3.5-7.8B-Instruct", task="seq-cls", num_labels=3)
    names = set(rec.module_names)
    for suffix in [
        "attn.attention.q_proj",
        "attn.attention.out_proj",
        "mlp.c_fc_0",
        "mlp.c_fc_1",
        "mlp.c_proj",
    ]:
        assert f"transformer.h.31.{suffix}" in names
    assert {
        "transformer.wte",
        "transformer.ln_f",
        "transformer.h.0.ln_1",
        "transformer.h.0.ln_2",
        "score",
    } <= names
    assert not any("self_attn" in n or "gate_proj" in n or n.startswith("model.") for n in names)
    k_proj = rec.module("transformer.h.7.attn.attention.k_proj")
    assert k_proj is not None and (k_proj.in_features, k_proj.out_features, k_proj.layer) == (4096, 1024, 7)
    assert rec.architecture == "ExaoneForSequenceClassification" and rec.model_type == "exaone"
    assert rec.layers_per_stack == {"transformer.h": 32} and rec.seq_cls_head == "score"


def test_every_bundled_model_has_shipped_records() -> None:
    missing = []
    for model_id in bundled_models():
        config = config_of(model_id)
        for task in shipped_tasks(config):
            if read_record(SHIPPED_DIR / f"{record_key(config, task)}.json.gz") is None:
                missing.append(f"{model_id} {task}")
    assert not missing, f"run `python -m loralab.arch.build_records` (missing: {missing})"


@pytest.mark.parametrize(
    ("model_id", "task"),
    [
        ("Qwen/Qwen3-8B", "seq-cls"),
        ("gogamza/kobart-base-v2", "seq2seq"),
        ("LGAI-EXAONE/EXAONE-3.5-7.8B-Instruct", "causal-lm"),
    ],
)
def test_shipped_record_equals_fresh_introspection(model_id: str, task: str) -> None:
    from loralab.arch.introspect import introspect

    config = config_of(model_id)
    shipped = read_record(SHIPPED_DIR / f"{record_key(config, task)}.json.gz")
    fresh = introspect(config, task=task, num_labels=None, model_id=model_id)
    assert shipped is not None
    assert shipped.to_json() == fresh.to_json()
