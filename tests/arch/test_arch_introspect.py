"""Meta-device records of tiny models against an independent walk of the real (CPU, random) model."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from torch import nn
from transformers.pytorch_utils import Conv1D

from loralab.arch.introspect import (
    LABEL_SENTINELS,
    RemoteCodeError,
    UnsupportedTaskError,
    introspect,
)
from loralab.arch.records import ArchRecord, peft_layer_index
from loralab.errors import LoralabError

AUTO = {
    "seq-cls": transformers.AutoModelForSequenceClassification,
    "causal-lm": transformers.AutoModelForCausalLM,
    "seq2seq": transformers.AutoModelForSeq2SeqLM,
}


def llama() -> transformers.PretrainedConfig:
    return transformers.LlamaConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        pad_token_id=0,
    )


def qwen3() -> transformers.PretrainedConfig:
    return transformers.Qwen3Config(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        pad_token_id=0,
        tie_word_embeddings=True,
    )


def gpt2() -> transformers.PretrainedConfig:
    return transformers.GPT2Config(
        vocab_size=100, n_embd=64, n_layer=2, n_head=4, n_positions=32, pad_token_id=0
    )


def bert() -> transformers.PretrainedConfig:
    return transformers.BertConfig(
        vocab_size=100,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=32,
    )


def bart() -> transformers.PretrainedConfig:
    return transformers.BartConfig(
        vocab_size=100,
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_position_embeddings=32,
    )


CASES: list[tuple[Callable[[], transformers.PretrainedConfig], str]] = [
    (llama, "causal-lm"),
    (llama, "seq-cls"),
    (qwen3, "causal-lm"),
    (qwen3, "seq-cls"),
    (gpt2, "causal-lm"),
    (gpt2, "seq-cls"),
    (bert, "seq-cls"),
    (bart, "seq2seq"),
    (bart, "seq-cls"),
    (bart, "causal-lm"),
]


def real_model(
    make: Callable[[], transformers.PretrainedConfig], task: str, num_labels: int
) -> transformers.PreTrainedModel:
    cfg = make()
    if task == "seq-cls":
        cfg.num_labels = num_labels
    torch.manual_seed(0)
    model: transformers.PreTrainedModel = AUTO[task].from_config(cfg)
    return model


def record_of(
    make: Callable[[], transformers.PretrainedConfig], task: str, num_labels: int | None
) -> ArchRecord:
    return introspect(make().to_dict(), task=task, num_labels=num_labels, model_id="tiny")


def features(mod: nn.Module) -> tuple[int | None, int | None]:
    if isinstance(mod, Conv1D):
        return mod.weight.shape[0], mod.weight.shape[1]
    if isinstance(mod, nn.Linear):
        return mod.in_features, mod.out_features
    if isinstance(mod, nn.Embedding):
        return mod.num_embeddings, mod.embedding_dim
    return None, None


@pytest.mark.parametrize(("make", "task"), CASES, ids=[f"{m.__name__}-{t}" for m, t in CASES])
def test_record_matches_real_model(make: Callable[[], transformers.PretrainedConfig], task: str) -> None:
    model = real_model(make, task, num_labels=5)
    rec = record_of(make, task, num_labels=5)
    real = dict(model.named_modules())
    assert rec.module_names == list(real)
    assert rec.architecture == type(model).__name__
    assert rec.total_params == sum(p.numel() for p in model.parameters())
    assert rec.total_params == sum(rec.unique_params().values())
    for m in rec.modules:
        mod = real[m.name]
        assert m.cls == type(mod).__name__
        assert (m.in_features, m.out_features) == features(mod), m.name
        assert m.linear == isinstance(mod, (nn.Linear, Conv1D)), m.name
        own = dict(mod.named_parameters(recurse=False))
        assert [p.name for p in m.params] == list(own), m.name
        assert [p.shape for p in m.params] == [tuple(t.shape) for t in own.values()], m.name
        assert m.own_numel == sum(t.numel() for t in own.values()), m.name
        assert m.layer == peft_layer_index(m.name)
    assert rec.input_embedding is not None
    assert real[rec.input_embedding] is model.get_input_embeddings()


def test_tied_weights_point_to_first_name() -> None:
    rec = record_of(gpt2, "causal-lm", None)
    head = rec.module("lm_head")
    assert head is not None and head.kind == "head" and head.linear
    assert head.params[0].tied_to == "transformer.wte.weight"
    assert rec.output_embedding == "lm_head"
    bart_rec = record_of(bart, "seq2seq", None)
    assert bart_rec.input_embedding == "model.shared"
    for name in ("model.encoder.embed_tokens", "model.decoder.embed_tokens", "lm_head"):
        mod = bart_rec.module(name)
        assert mod is not None and mod.params[0].tied_to == "model.shared.weight", name
    qwen = record_of(qwen3, "causal-lm", None)
    lm_head = qwen.module("lm_head")
    assert lm_head is not None and lm_head.params[0].tied_to == "model.embed_tokens.weight"


def test_stacks_and_flags() -> None:
    rec = record_of(bart, "seq2seq", None)
    assert rec.layers_per_stack == {"model.encoder.layers": 2, "model.decoder.layers": 2}
    assert rec.num_layers == 2
    assert rec.is_encoder_decoder
    gpt = record_of(gpt2, "seq-cls", 3)
    assert gpt.layers_per_stack == {"transformer.h": 2}
    assert gpt.seq_cls_head == "score"
    assert gpt.label_dim == 3 and gpt.num_labels == 3
    assert gpt.versions == {"transformers": transformers.__version__, "torch": torch.__version__}


def kinds(rec: ArchRecord) -> dict[str, str]:
    return {m.name: m.kind for m in rec.modules}


def test_kinds_bert() -> None:
    k = kinds(record_of(bert, "seq-cls", 3))
    assert k["bert.embeddings.word_embeddings"] == "embedding"
    assert k["bert.embeddings.LayerNorm"] == "norm"
    assert k["bert.encoder.layer.0.attention.self.query"] == "attention"
    assert k["bert.encoder.layer.0.attention.output.dense"] == "attention"
    assert k["bert.encoder.layer.0.attention.output.LayerNorm"] == "norm"
    assert k["bert.encoder.layer.0.intermediate.dense"] == "mlp"
    assert k["bert.encoder.layer.0.output.dense"] == "mlp"
    assert k["bert.pooler.dense"] == "other"
    assert k["classifier"] == "head"


def test_kinds_bart_and_llama() -> None:
    rec = record_of(bart, "seq-cls", 3)
    k = kinds(rec)
    assert k["model.decoder.layers.1.encoder_attn.k_proj"] == "attention"
    assert k["model.encoder.layers.0.self_attn.out_proj"] == "attention"
    assert k["model.encoder.layers.0.fc1"] == "mlp"
    assert k["model.decoder.layers.0.fc2"] == "mlp"
    assert k["model.encoder.layers.0.self_attn_layer_norm"] == "norm"
    assert (
        k["classification_head"]
        == k["classification_head.dense"]
        == k["classification_head.out_proj"]
        == "head"
    )
    assert rec.seq_cls_head == "classification_head"
    assert any("SEQ_CLS_HEAD_NAMES" in n for n in rec.notes)
    k = kinds(record_of(llama, "causal-lm", None))
    assert k["model.layers.1.self_attn.o_proj"] == "attention"
    assert k["model.layers.1.mlp.down_proj"] == "mlp"
    assert k["model.layers.1.input_layernorm"] == "norm"
    assert k["model.norm"] == "norm"
    assert k["lm_head"] == "head"


@pytest.mark.parametrize("make", [llama, qwen3, gpt2, bert, bart], ids=lambda m: m.__name__)
def test_generic_record_substitutes_num_labels(make: Callable[[], transformers.PretrainedConfig]) -> None:
    generic = record_of(make, "seq-cls", None)
    assert generic.label_dim == LABEL_SENTINELS[0]
    assert generic.num_labels == LABEL_SENTINELS[0]
    explicit = record_of(make, "seq-cls", 260)
    substituted = generic.with_num_labels(260)
    assert substituted.modules == explicit.modules
    assert substituted.total_params == explicit.total_params
    assert substituted.to_json() == explicit.to_json()


def test_sentinel_colliding_with_a_real_dimension_is_skipped() -> None:
    cfg = llama().to_dict()
    cfg["vocab_size"] = LABEL_SENTINELS[0]
    generic = introspect(cfg, task="seq-cls", num_labels=None, model_id="tiny")
    assert generic.label_dim == LABEL_SENTINELS[1]
    assert (
        generic.with_num_labels(4).to_json()
        == introspect(cfg, task="seq-cls", num_labels=4, model_id="tiny").to_json()
    )


def test_explicit_num_labels_equal_to_a_real_dimension_is_not_substitutable() -> None:
    rec = record_of(bert, "seq-cls", 2)  # BERT's token_type_embeddings has 2 rows too
    assert rec.label_dim is None


def test_unsupported_task() -> None:
    with pytest.raises(UnsupportedTaskError, match="seq2seq") as exc:
        record_of(llama, "seq2seq", None)
    assert isinstance(exc.value, LoralabError)
    with pytest.raises(UnsupportedTaskError, match="unknown task"):
        record_of(llama, "token-cls", None)


def test_unknown_model_type_requires_trust_remote_code() -> None:
    cfg: dict[str, Any] = {"model_type": "brand-new-arch", "hidden_size": 64}
    with pytest.raises(RemoteCodeError, match="trust_remote_code") as exc:
        introspect(cfg, task="causal-lm", num_labels=None, model_id="org/brand-new")
    assert "model.trust_remote_code: true" in str(exc.value)
    assert isinstance(exc.value, LoralabError)


def test_introspect_leaves_the_config_untouched() -> None:
    cfg = llama().to_dict()
    cfg["rope_scaling"] = {"rope_type": "linear", "factor": 2.0}
    before = json.dumps(cfg, sort_keys=True, default=str)
    introspect(cfg, task="causal-lm", num_labels=None, model_id="tiny")
    assert json.dumps(cfg, sort_keys=True, default=str) == before


REMOTE_CONFIG = """from transformers import LlamaConfig


class TinyCustomConfig(LlamaConfig):
    model_type = "tinycustom"
"""
REMOTE_MODELING = """from transformers import LlamaForCausalLM

from .configuration_tinycustom import TinyCustomConfig


class TinyCustomForCausalLM(LlamaForCausalLM):
    config_class = TinyCustomConfig
"""


def test_remote_code_runs_only_when_trusted(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    repo = tmp_path / "tinycustom"
    repo.mkdir()
    (repo / "configuration_tinycustom.py").write_text(REMOTE_CONFIG)
    (repo / "modeling_tinycustom.py").write_text(REMOTE_MODELING)
    config = {k: v for k, v in llama().to_dict().items() if k not in ("model_type", "architectures")}
    config["model_type"] = "tinycustom"
    config["auto_map"] = {
        "AutoConfig": "configuration_tinycustom.TinyCustomConfig",
        "AutoModelForCausalLM": "modeling_tinycustom.TinyCustomForCausalLM",
    }
    (repo / "config.json").write_text(json.dumps(config))
    # A child process, so that transformers copies the repository code into a temporary module cache.
    code = (
        "import sys\n"
        "from loralab.arch.cache import get_arch_record\n"
        "from loralab.errors import LoralabError\n"
        "for trust, task in [(False, 'causal-lm'), (True, 'seq-cls'), (True, 'causal-lm')]:\n"
        "    try:\n"
        "        r = get_arch_record(sys.argv[1], task=task, num_labels=None, trust_remote_code=trust)\n"
        "        print('OK', r.architecture, r.total_params)\n"
        "    except LoralabError as e:\n"
        "        print('ERR', type(e).__name__)\n"
    )
    env = {**subprocess_env, "HF_MODULES_CACHE": str(tmp_path / "modules")}
    out = subprocess.run(
        [sys.executable, "-c", code, str(repo)], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    expected_total = sum(p.numel() for p in real_model(llama, "causal-lm", 2).parameters())
    assert out.stdout.splitlines() == [
        "ERR RemoteCodeError",
        "ERR UnsupportedTaskError",
        f"OK TinyCustomForCausalLM {expected_total}",
    ]
