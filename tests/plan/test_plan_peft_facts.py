"""Facts the torch-free planner snapshots from PEFT stay true for the installed PEFT, and adapter
sizes equal what PEFT really writes."""

from __future__ import annotations

import json
import warnings
from importlib import resources
from pathlib import Path

import pytest
from plan_tiny_models import TINY, build_reference_model

from loralab.arch.introspect import introspect
from loralab.plan import build_plan

peft = pytest.importorskip("peft")


def test_default_target_modules_snapshot_is_current() -> None:
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as live

    shipped = json.loads(resources.files("loralab.plan").joinpath("peft_defaults.json").read_text())
    assert shipped["lora_target_modules"] == {k: list(v) for k, v in sorted(live.items())}


@pytest.mark.parametrize(
    ("family", "lora", "dtype"),
    [
        ("gpt2", {"r": 16, "target_modules": ["lm_head"]}, "float32"),  # seed 004: lm_head saved whole
        ("llama", {"r": 4, "target_modules": ["q_proj", "v_proj"], "bias": "all"}, "bfloat16"),
        ("qwen3", {"r": 8, "target_modules": ["q_proj"], "modules_to_save": ["score"]}, "bfloat16"),
    ],
)
def test_adapter_bytes_equal_the_saved_safetensors(
    tmp_path: Path, family: str, lora: dict, dtype: str
) -> None:
    import torch
    from safetensors import safe_open

    task = "seq-cls" if "modules_to_save" in lora else "causal-lm"
    num_labels = 3 if task == "seq-cls" else None
    task_type = "SEQ_CLS" if task == "seq-cls" else "CAUSAL_LM"
    cfg = {**TINY[family], "torch_dtype": dtype}
    arch = introspect(dict(cfg), task=task, num_labels=num_labels, model_id=family)
    plan = build_plan(arch, {"task_type": task_type, **lora}, load_dtype=dtype, with_options=False)

    model = build_reference_model(TINY[family], task, num_labels).to_empty(device="cpu")
    model = model.to(getattr(torch, dtype))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = peft.get_peft_model(model, peft.LoraConfig(task_type=task_type, **lora))
        pm.save_pretrained(tmp_path)
    written = 0
    with safe_open(tmp_path / "adapter_model.safetensors", framework="pt") as f:
        for k in f.keys():  # noqa: SIM118 - safe_open has keys(), not iteration
            t = f.get_tensor(k)
            written += t.numel() * t.element_size()
    assert plan.adapter_bytes == written
