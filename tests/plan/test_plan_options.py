"""The option table's target names select exactly the modules of their kind (PEFT's own matching is
the reference), also where one short name covers two kinds (BERT's `output.dense`, GPT-2's `c_proj`)."""

from __future__ import annotations

import copy
import warnings

import pytest
from plan_tiny_models import TINY, build_reference_model

from loralab.arch.introspect import introspect
from loralab.plan.options import option_sets

peft = pytest.importorskip("peft")


CASES = [("bert", "seq-cls"), ("gpt2", "causal-lm"), ("llama", "causal-lm")]


@pytest.mark.parametrize(("family", "task"), CASES)
def test_attention_option_targets_attention_modules_only(family: str, task: str) -> None:
    config, labels = TINY[family], 3 if task == "seq-cls" else None
    record = introspect(copy.deepcopy(config), task=task, num_labels=labels, model_id=family)
    kinds = {m.name: m.kind for m in record.modules}
    rows = dict(option_sets(record))
    attention_only = next(targets for title, targets in rows.items() if title.startswith("attention only"))
    model = build_reference_model(copy.deepcopy(config), task, num_labels=labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wrapped = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=attention_only))
    targeted = wrapped.base_model.targeted_module_names
    assert targeted, attention_only
    # Before the fix BERT's attention option held `output.dense`, which PEFT also applies to the MLP's
    # output projection (`layer.N.output.dense`).
    assert {kinds[name] for name in targeted} == {"attention"}
    attention = {
        n for n, k in kinds.items() if k == "attention" and n in {m.name for m in record.modules if m.linear}
    }
    assert set(targeted) == attention
