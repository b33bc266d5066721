"""The planner's counts and matched modules equal PEFT's own on the same model, for many configs.

Reference: `get_peft_model(model, LoraConfig(**cfg)).get_nb_trainable_parameters()` and the tuner's
`targeted_module_names`, on models built on the meta device by transformers directly (not through
loralab's introspection), so both sides of each comparison are computed independently.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import pytest
from plan_tiny_models import TINY, build_reference_model

from loralab.arch.introspect import introspect
from loralab.plan import build_plan

peft = pytest.importorskip("peft")

CASES: list[tuple[str, str, dict[str, Any]]] = [
    # decoder-only, Llama family (separate q/k/v/o, SwiGLU MLP, untied head)
    ("llama", "causal-lm", {"r": 4, "target_modules": ["q_proj", "v_proj"]}),
    ("llama", "causal-lm", {"r": 4, "target_modules": "all-linear"}),
    ("llama", "causal-lm", {"r": 4}),  # PEFT's default targets for llama
    ("llama", "causal-lm", {"r": 4, "target_modules": ["q_proj", "k_proj"], "layers_to_transform": [0, 2]}),
    ("llama", "causal-lm", {"r": 2, "target_modules": "all-linear", "use_dora": True, "bias": "all"}),
    ("llama", "causal-lm", {"r": 2, "target_modules": ["o_proj", "down_proj"], "lora_bias": True}),
    (
        "llama",
        "causal-lm",
        {
            "r": 4,
            "target_modules": ["q_proj", "v_proj", "up_proj"],
            "rank_pattern": {"q_proj": 2, "layers.1.self_attn.v_proj": 16},
            "alpha_pattern": {"up_proj": 32},
        },
    ),
    (
        "llama",
        "causal-lm",
        {"r": 4, "target_modules": ["q_proj"], "exclude_modules": ["model.layers.0.self_attn.q_proj"]},
    ),
    ("llama", "causal-lm", {"r": 4, "target_modules": "all-linear", "exclude_modules": r".*mlp.*"}),
    ("llama", "causal-lm", {"r": 4, "target_modules": r".*layers\.(0|2)\.self_attn\.(q|v)_proj"}),
    ("llama", "causal-lm", {"r": 4, "target_modules": ["embed_tokens", "lm_head"]}),
    (
        "llama",
        "causal-lm",
        {"r": 4, "target_modules": ["q_proj"], "layers_to_transform": 1, "layers_pattern": "layers"},
    ),
    ("llama", "causal-lm", {"r": 4, "target_modules": ["q_proj"], "modules_to_save": ["lm_head"]}),
    ("llama", "causal-lm", {"r": 4, "target_modules": ["q_proj", "embed_tokens"], "use_dora": True}),
    # decoder-only classification: PEFT adds score/classifier to modules_to_save
    (
        "llama",
        "seq-cls",
        {"r": 4, "target_modules": ["q_proj", "v_proj"], "modules_to_save": ["score"], "bias": "lora_only"},
    ),
    ("llama", "seq-cls", {"r": 4, "target_modules": "all-linear"}),
    (
        "qwen3",
        "seq-cls",
        {"r": 8, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"], "layers_to_transform": [1, 2]},
    ),
    ("qwen3", "causal-lm", {"r": 8, "target_modules": "all-linear", "bias": "all"}),
    ("qwen3", "causal-lm", {"r": 8, "target_modules": ["lm_head"]}),  # tied to embed_tokens
    # GPT-2: Conv1D layers, c_proj in both attention and MLP, biases everywhere
    ("gpt2", "causal-lm", {"r": 8, "target_modules": ["c_attn", "c_proj"]}),
    ("gpt2", "causal-lm", {"r": 8, "target_modules": ["c_attn", "attn.c_proj"]}),
    ("gpt2", "causal-lm", {"r": 8, "target_modules": "all-linear", "bias": "all"}),
    ("gpt2", "causal-lm", {"r": 8, "target_modules": ["c_fc"], "bias": "lora_only", "lora_bias": True}),
    ("gpt2", "causal-lm", {"r": 16, "target_modules": ["lm_head"]}),
    ("gpt2", "seq-cls", {"r": 8, "target_modules": ["c_attn"], "bias": "lora_only"}),
    ("gpt2", "seq-cls", {"r": 8, "target_modules": ["c_fc", "wte"], "use_dora": True, "bias": "all"}),
    # encoder: BERT (attention.output.dense vs output.dense, pooler, classifier with bias)
    ("bert", "seq-cls", {"r": 8, "target_modules": ["query", "value"]}),
    ("bert", "seq-cls", {"r": 8, "target_modules": "all-linear", "bias": "all"}),
    ("bert", "seq-cls", {"r": 8, "target_modules": ["dense"], "bias": "lora_only"}),
    (
        "bert",
        "seq-cls",
        {"r": 8, "target_modules": ["query", "key", "value", "dense"], "layers_to_transform": [2]},
    ),
    ("bert", "seq-cls", {"r": 4}),
    # encoder-decoder: BART (self_attn, encoder_attn, fc1/fc2, both stacks numbered from 0)
    ("bart", "seq2seq", {"r": 8, "target_modules": ["q_proj", "v_proj"]}),
    ("bart", "seq2seq", {"r": 8, "target_modules": "all-linear"}),
    ("bart", "seq2seq", {"r": 8, "target_modules": ["q_proj", "fc1"], "layers_to_transform": [1]}),
    ("bart", "seq-cls", {"r": 8, "target_modules": ["q_proj", "v_proj"], "bias": "all"}),
    ("bart", "seq2seq", {"r": 4, "target_modules": ["embed_tokens", "q_proj"], "use_dora": True}),
    # GPT-NeoX (Polyglot-ko, KULLM): fused query_key_value
    ("gpt_neox", "causal-lm", {"r": 8}),
    ("gpt_neox", "causal-lm", {"r": 8, "target_modules": "all-linear", "bias": "lora_only"}),
]

TASK_TYPE = {"causal-lm": "CAUSAL_LM", "seq-cls": "SEQ_CLS", "seq2seq": "SEQ_2_SEQ_LM"}


def peft_reference(config: dict[str, Any], task: str, lora: dict[str, Any], num_labels: int | None):
    model = build_reference_model(config, task, num_labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = peft.get_peft_model(model, peft.LoraConfig(task_type=TASK_TYPE[task], **copy.deepcopy(lora)))
    trainable, _ = pm.get_nb_trainable_parameters()
    targeted = set(pm.base_model.targeted_module_names)
    return trainable, targeted


@pytest.mark.parametrize(
    ("family", "task", "lora"), CASES, ids=[f"{f}-{t}-{i}" for i, (f, t, _) in enumerate(CASES)]
)
def test_planner_equals_peft(family: str, task: str, lora: dict[str, Any]) -> None:
    num_labels = 5 if task == "seq-cls" else None
    config = TINY[family]
    arch = introspect(dict(config), task=task, num_labels=num_labels, model_id=f"tiny-{family}")
    plan = build_plan(arch, {"task_type": TASK_TYPE[task], **copy.deepcopy(lora)}, with_options=False)
    trainable, targeted = peft_reference(config, task, lora, num_labels)
    assert set(plan.match.target_names) == targeted
    assert plan.counts.trainable_params == trainable


# Real architectures on the meta device: the bundled configs of the models our users name.
BUNDLED_CASES = [
    (
        "Qwen/Qwen3-8B",
        "seq-cls",
        260,
        {
            "r": 256,
            "lora_alpha": 512,
            "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
            "layers_to_transform": list(range(25, 36)),
            "modules_to_save": ["score"],
            "bias": "lora_only",
        },
    ),
    ("meta-llama/Llama-3.1-8B", "causal-lm", None, {"r": 16, "target_modules": "all-linear"}),
    (
        "google/gemma-2-9b",
        "causal-lm",
        None,
        {"r": 8, "target_modules": ["q_proj", "v_proj", "gate_proj"], "use_dora": True},
    ),
    ("EleutherAI/polyglot-ko-12.8b", "causal-lm", None, {"r": 8, "bias": "lora_only"}),
    ("openai-community/gpt2", "causal-lm", None, {"r": 8, "target_modules": ["c_attn", "c_proj"]}),
    ("skt/kogpt2-base-v2", "causal-lm", None, {"r": 16, "lora_alpha": 32, "target_modules": ["lm_head"]}),
    ("gogamza/kobart-base-v2", "seq2seq", None, {"r": 8, "target_modules": "all-linear"}),
]


@pytest.mark.parametrize(
    ("model_id", "task", "num_labels", "lora"), BUNDLED_CASES, ids=[c[0] for c in BUNDLED_CASES]
)
def test_planner_equals_peft_on_bundled(
    model_id: str, task: str, num_labels: int | None, lora: dict[str, Any]
) -> None:
    from loralab.arch.cache import get_arch_record
    from loralab.arch.resolve import resolve_model

    arch = get_arch_record(model_id, task=task, num_labels=num_labels)
    plan = build_plan(arch, {"task_type": TASK_TYPE[task], **copy.deepcopy(lora)}, with_options=False)
    config = resolve_model(model_id).config
    trainable, targeted = peft_reference(config, task, lora, num_labels)
    assert set(plan.match.target_names) == targeted
    assert plan.counts.trainable_params == trainable
