"""`ablate`'s phases: targets named by module kind for each family, counted like PEFT counts them.

The reference is PEFT itself on the same tiny models: the modules it wraps for each phase's
target_modules (classified here by their full names, written by hand per family) and its trainable
parameter count; and seed 000's own hand formula for Qwen3-8B (§2.3).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from loralab.config import load_experiment
from loralab.errors import UsageError
from loralab.experiments.phases import PHASES, parse_phases, plan_phases
from loralab.experiments.rules import RulesConfig
from loralab.experiments.spec import load_study_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plan"))
from plan_tiny_models import TINY

ROOT = Path(__file__).resolve().parents[2]
SEED000 = ROOT / "examples" / "seed000-qwen3-8b-phase1-attention.yaml"

# Each family's block linear modules by class, from their full names (the model's own layout).
CLASSES = {
    "bert": {
        "attention": r"attention\.(self\.(query|key|value)|output\.dense)$",
        "mlp-in": r"intermediate\.dense$",
        "mlp-out": r"layer\.\d+\.output\.dense$",
    },
    "gpt2": {"attention": r"attn\.(c_attn|c_proj)$", "mlp-in": r"mlp\.c_fc$", "mlp-out": r"mlp\.c_proj$"},
    "llama": {
        "attention": r"self_attn\.[qkvo]_proj$",
        "mlp-in": r"mlp\.(gate|up)_proj$",
        "mlp-out": r"mlp\.down_proj$",
    },
}
EXPECTED = {
    "bert": (["query", "key", "value", "attention.output.dense"], ["intermediate.dense"], ["output.dense"]),
    "gpt2": (["c_attn", "attn.c_proj"], ["c_fc"], ["mlp.c_proj"]),
    "llama": (["q_proj", "k_proj", "v_proj", "o_proj"], ["gate_proj", "up_proj"], ["down_proj"]),
}
PHASE_CLASSES = {"attention": 1, "attention+mlp-in": 2, "all-linear": 3}
LAYERS = [1, 2]  # of 3: the phases keep the base config's layers


def _experiment(tmp: Path, family: str) -> Path:
    from transformers import AutoConfig

    cfg = dict(TINY[family])
    folder = tmp / family
    AutoConfig.for_model(cfg.pop("model_type"), **cfg).save_pretrained(folder)
    path = tmp / f"{family}.yaml"
    path.write_text(
        f"""
model: {{name_or_path: {folder}, task: seq-cls, num_labels: 3}}
lora:
  config:
    task_type: SEQ_CLS
    r: 4
    lora_alpha: 8
    target_modules: [{EXPECTED[family][0][0]}]
    layers_to_transform: {LAYERS}
""",
        encoding="utf-8",
    )
    return path


def _peft(folder: Path, targets: list[str]) -> tuple[int, list[str], set[int]]:
    """PEFT's trainable parameters, wrapped module names and LoRA ranks for these targets."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForSequenceClassification

    c = AutoConfig.from_pretrained(folder, num_labels=3)
    if c.pad_token_id is None:
        c.pad_token_id = 0
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(c)
    lc = LoraConfig(
        task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=targets, layers_to_transform=LAYERS
    )
    model = get_peft_model(model, lc)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    wrapped = [n for n, m in model.named_modules() if hasattr(m, "lora_A")]
    ranks = {m.lora_A["default"].out_features for _, m in model.named_modules() if hasattr(m, "lora_A")}
    return trainable, wrapped, ranks


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_phases_wrap_exactly_their_module_classes(tmp_path: Path, family: str) -> None:
    cfg = load_experiment(_experiment(tmp_path, family))
    phases, _ = plan_phases(cfg)
    assert [p.name for p in phases] == list(PHASES)
    attention, mlp_in, mlp_out = EXPECTED[family]
    assert [p.target_modules for p in phases] == [attention, attention + mlp_in, attention + mlp_in + mlp_out]
    assert [p.added for p in phases] == [attention, mlp_in, mlp_out]
    for p in phases:
        trainable, wrapped, ranks = _peft(tmp_path / family, p.target_modules)
        assert p.trainable_params == trainable, p.name
        assert ranks == {4}  # the base's rank
        kinds = list(CLASSES[family].items())[: PHASE_CLASSES[p.name]]
        want = {
            n
            for n in _block_linears(tmp_path / family)
            if any(re.search(rx, n) for _, rx in kinds) and _layer(n) in LAYERS
        }
        assert set(wrapped) == {"base_model.model." + n for n in want}, p.name
        assert p.modules == len(want)


def _block_linears(folder: Path) -> list[str]:
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification
    from transformers.pytorch_utils import Conv1D

    c = AutoConfig.from_pretrained(folder, num_labels=3)
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(c)
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear | Conv1D) and _layer(n) >= 0]


def _layer(name: str) -> int:
    m = re.search(r"\.(\d+)\.", name)
    return int(m.group(1)) if m else -1


def test_phases_selects_and_reorders(tmp_path: Path) -> None:
    cfg = load_experiment(_experiment(tmp_path, "llama"))
    phases, _ = plan_phases(cfg, parse_phases("all-linear, attention"))
    assert [p.name for p in phases] == ["all-linear", "attention"]
    # each phase's targets are its own, whatever the order
    assert phases[1].target_modules == EXPECTED["llama"][0]
    assert len(phases[0].target_modules) == 7


def test_unknown_phase_lists_the_valid_ones() -> None:
    with pytest.raises(UsageError) as e:
        parse_phases("attention,mlp")
    assert "unknown phase 'mlp'" in e.value.message()
    assert all(p in e.value.message() for p in PHASES)
    assert parse_phases(None) is None


def test_seed000_phases_equal_the_seeds_hand_count() -> None:
    # seed 000 §2.3: r x (in + out) per module, 11 layers, plus the 260 x 4096 score head
    r, h, kv, ffn, layers, head = 256, 4096, 1024, 12288, 11, 260 * 4096
    attn = r * (h + h) * 2 + r * (h + kv) * 2
    gate_up = r * (h + ffn) * 2
    down = r * (ffn + h)
    phases, _ = plan_phases(load_experiment(SEED000))
    assert [p.trainable_params for p in phases] == [
        layers * attn + head,
        layers * (attn + gate_up) + head,
        layers * (attn + gate_up + down) + head,
    ]
    assert phases[0].trainable_params == 11 * 6_815_744 + 1_064_960 == 76_038_144


def _loralab(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "250"}
    return subprocess.run(
        [sys.executable, "-m", "loralab", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        check=False,
    )


def test_dry_run_prints_phases_params_and_memory_and_writes_nothing(tmp_path: Path) -> None:
    p = _loralab("ablate", str(SEED000), "--out", str(tmp_path / "study"), "--dry-run", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    phases, _ = plan_phases(load_experiment(SEED000))
    rows = [line for line in p.stdout.splitlines() if line.startswith("│ ") and line.split("│")[1].strip()]
    named = [r.split("│") for r in rows if r.split("│")[1].strip() in PHASES]
    assert [r[1].strip() for r in named] == list(PHASES)
    for cells, phase in zip(named, phases, strict=True):
        assert f"{phase.trainable_params:,}" in [c.strip() for c in cells]
        gib = float(cells[8].strip())  # memory per device, GiB: bigger adapters need more
        assert gib > 16  # at least the bf16 weights of an 8B model
    mems = [float(r[8].strip()) for r in named]
    assert mems == sorted(mems)
    assert list(tmp_path.iterdir()) == []  # nothing written, not even the study directory


def test_unknown_phase_on_the_command_line(tmp_path: Path) -> None:
    p = _loralab("ablate", str(SEED000), "--out", str(tmp_path / "s"), "--phases", "attn", cwd=tmp_path)
    assert p.returncode == 2
    assert "unknown phase 'attn'" in p.stderr and "attention+mlp-in" in p.stderr


def test_seed000_example_study_is_what_ablate_writes() -> None:
    spec = load_study_file(ROOT / "examples" / "seed000-study" / "study.yaml")
    assert spec.kind == "ablate" and spec.base == SEED000.resolve()
    phases, _ = plan_phases(load_experiment(spec.base))
    assert [(r.name, r.phase) for r in spec.runs] == [(p.name, p.name) for p in phases]
    assert [r.overrides["lora.config.target_modules"] for r in spec.runs] == [
        p.target_modules for p in phases
    ]
    assert RulesConfig.from_mapping(spec.rules) == RulesConfig()  # seed 000's preset
