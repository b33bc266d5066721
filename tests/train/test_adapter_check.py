"""The saved-adapter check: the plan's expected tensors equal what PEFT writes, and broken files fire.

The reference is a real `save_pretrained` of tiny random models with PEFT (the names and shapes of
adapter_model.safetensors), so the key format rules in `loralab.train.adapter_check` are checked
against PEFT itself. The broken files imitate what ZeRO-3 / FSDP leave behind (peft #2892,
trl #4416, accelerate #3508): 0-element placeholders, a cut-off file, missing or mis-shaped tensors.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

# The tiny models and their plans are shared with the plan tests (tests/plan/plan_tiny_models.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plan"))
from plan_tiny_models import tiny_peft

from loralab.errors import LoralabError
from loralab.train.adapter_check import (
    ADAPTER_FILE,
    SavedAdapterError,
    check_saved_adapter,
    expected_adapter_tensors,
    read_adapter_header,
    verify_saved_adapter,
)
from loralab.train.session import Session

pytest.importorskip("peft")
torch = pytest.importorskip("torch")
st = pytest.importorskip("safetensors.torch")

CASES: list[tuple[str, str, dict[str, Any]]] = [
    # Linear q/v on two of three layers
    ("llama", "causal-lm", {"r": 4, "target_modules": ["q_proj", "v_proj"], "layers_to_transform": [0, 2]}),
    # Conv1D (fan_in_fan_out) with its bias saved under base_layer
    ("gpt2", "causal-lm", {"r": 4, "target_modules": ["c_attn"], "bias": "lora_only"}),
    # encoder classifier in modules_to_save; bias="all" also saves the wrapper's inner biases
    ("bert", "seq-cls", {"r": 4, "target_modules": ["query", "value"], "modules_to_save": ["classifier"]}),
    ("bert", "seq-cls", {"r": 4, "target_modules": ["query"], "bias": "all"}),
    # embedding adapter + DoRA magnitudes + the embedding's base weights (save_embedding_layers="auto")
    ("llama", "causal-lm", {"r": 4, "target_modules": ["q_proj", "embed_tokens"], "use_dora": True}),
    # lora_bias on lora_B; decoder classification head appended to modules_to_save by PEFT
    ("llama", "seq-cls", {"r": 2, "target_modules": ["o_proj"], "lora_bias": True}),
]


def _save(family: str, task: str, lora: dict[str, Any], folder: Path) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, plan = tiny_peft(family, task, **lora)
        model.save_pretrained(folder, safe_serialization=True)
    return plan


@pytest.mark.parametrize(
    ("family", "task", "lora"), CASES, ids=[f"{f}-{t}-{i}" for i, (f, t, _) in enumerate(CASES)]
)
def test_plan_expects_exactly_what_peft_saves(
    family: str, task: str, lora: dict[str, Any], tmp_path: Path
) -> None:
    plan = _save(family, task, lora, tmp_path)
    got = read_adapter_header(tmp_path / ADAPTER_FILE)
    assert expected_adapter_tensors(plan) == got
    assert check_saved_adapter(tmp_path, plan) == []
    verify_saved_adapter(tmp_path, plan)  # no error


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, dict[str, Any]]:
    """A good Llama adapter (q/v, r=4, layers 0 and 2) and its tensors, to break in each test."""
    folder = tmp_path_factory.mktemp("good")
    plan = _save("llama", "causal-lm", CASES[0][2], folder)
    return folder, plan, st.load_file(str(folder / ADAPTER_FILE))


def _write(folder: Path, tensors: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    st.save_file(tensors, str(folder / ADAPTER_FILE))
    return folder


Q = "base_model.model.model.layers.0.self_attn.q_proj"


def test_truncated_file_fires_with_one_line(saved: tuple[Path, Any, dict[str, Any]], tmp_path: Path) -> None:
    folder, plan, _ = saved
    data = (folder / ADAPTER_FILE).read_bytes()
    for cut in (len(data) // 2, 20, 4):  # in the tensor data, in the header, inside the length prefix
        (tmp_path / ADAPTER_FILE).write_bytes(data[:cut])
        problems = check_saved_adapter(tmp_path, plan)
        assert len(problems) == 1, problems
        assert str(tmp_path / ADAPTER_FILE) in problems[0]
        assert "truncated" in problems[0]


def test_missing_file_and_no_tensors_fire(saved: tuple[Path, Any, dict[str, Any]], tmp_path: Path) -> None:
    _, plan, _ = saved
    assert check_saved_adapter(tmp_path / "nowhere", plan) == [
        f"{tmp_path / 'nowhere' / ADAPTER_FILE}: file missing"
    ]
    _write(tmp_path, {})
    assert check_saved_adapter(tmp_path, plan) == [f"{tmp_path / ADAPTER_FILE}: no tensors at all"]


def test_zero_element_placeholders_fire(saved: tuple[Path, Any, dict[str, Any]], tmp_path: Path) -> None:
    _, plan, tensors = saved
    # What a ZeRO-3 rank without gathering writes: every parameter is an empty shard placeholder.
    _write(tmp_path, {k: torch.empty(0) for k in tensors})
    problems = check_saved_adapter(tmp_path, plan)
    assert len(problems) == len(tensors)
    assert all("0 elements" in p for p in problems)
    # One placeholder among good tensors is reported once, not also as mis-shaped.
    _write(tmp_path / "one", {**tensors, f"{Q}.lora_A.weight": torch.empty(0)})
    assert check_saved_adapter(tmp_path / "one", plan) == [
        f"{Q}.lora_A.weight: 0 elements (shape (0)), a shard placeholder"
    ]


def test_removed_reshaped_and_extra_tensors_fire(
    saved: tuple[Path, Any, dict[str, Any]], tmp_path: Path
) -> None:
    _, plan, tensors = saved
    broken = dict(tensors)
    del broken[f"{Q}.lora_B.weight"]
    broken[f"{Q}.lora_A.weight"] = torch.zeros(2, 64)
    broken["base_model.model.lm_head.weight"] = torch.zeros(256, 64)
    _write(tmp_path, broken)
    assert sorted(check_saved_adapter(tmp_path, plan)) == sorted(
        [
            f"{Q}.lora_B.weight: missing, expected shape (64, 4)",
            f"{Q}.lora_A.weight: shape (2, 64), expected (4, 64)",
            "base_model.model.lm_head.weight: unexpected tensor (shape (256, 64)), not in the plan",
        ]
    )


def test_error_names_file_problems_and_fix(saved: tuple[Path, Any, dict[str, Any]], tmp_path: Path) -> None:
    _, plan, tensors = saved
    _write(tmp_path, {k: torch.empty(0) for k in tensors})
    with pytest.raises(SavedAdapterError) as info:
        verify_saved_adapter(tmp_path, plan)
    err = info.value
    assert isinstance(err, LoralabError)
    text = err.message()
    assert str(tmp_path / ADAPTER_FILE) in text
    assert f"{len(tensors)} problems" in text
    assert f"... and {len(tensors) - 5} more" in text
    assert "stage3_gather_16bit_weights_on_model_save: true" in text
    assert "FULL_STATE_DICT" in text


def test_fit_fails_on_a_placeholder_adapter(saved: tuple[Path, Any, dict[str, Any]], tmp_path: Path) -> None:
    """Session.fit re-reads the adapter it just saved: a ZeRO-3-style empty save fails the run."""
    _, plan, tensors = saved

    def save_placeholders(folder: Path, **_: Any) -> None:
        _write(Path(folder), {k: torch.empty(0) for k in tensors})

    model = SimpleNamespace(save_pretrained=save_placeholders)
    trainer = SimpleNamespace(
        train=lambda resume_from_checkpoint=None: "out",
        model=model,
        args=SimpleNamespace(should_save=True),
        is_deepspeed_enabled=False,
        is_fsdp_enabled=False,
    )
    fake = SimpleNamespace(
        trainer=trainer,
        model=model,
        tokenizer=SimpleNamespace(save_pretrained=lambda folder: None),
        run_dir=tmp_path,
        plan=plan,
    )
    with pytest.raises(SavedAdapterError):
        Session.fit(fake)  # type: ignore[arg-type]


class _Recorder:
    """A stand-in Trainer that records the calls `save_adapter` makes (FSDP needs GPUs: see
    test_fsdp_on_cpu_is_reported_as_ddp)."""

    def __init__(self, *, fsdp: bool = False, deepspeed: bool = False, should_save: bool = True) -> None:
        self.calls: list[str] = []
        self.is_fsdp_enabled, self.is_deepspeed_enabled = fsdp, deepspeed
        self.args = SimpleNamespace(should_save=should_save)
        plugin = SimpleNamespace(set_state_dict_type=lambda t: self.calls.append(f"state_dict_type {t}"))
        self.accelerator = SimpleNamespace(state=SimpleNamespace(fsdp_plugin=plugin))
        self.model = SimpleNamespace(save_pretrained=lambda d, **kw: self.calls.append(f"peft {kw}"))

    def save_model(self, folder: str) -> None:
        self.calls.append("save_model")
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "training_args.bin").write_bytes(b"pickle")


def test_save_adapter_gathers_sharded_states_on_every_rank(tmp_path: Path) -> None:
    from loralab.train.checkpoints import save_adapter

    plain = _Recorder()
    save_adapter(plain, tmp_path / "a")
    assert plain.calls == ["peft {'safe_serialization': True}"]
    other_rank = _Recorder(should_save=False)
    save_adapter(other_rank, tmp_path / "a")
    assert other_rank.calls == []  # DDP: rank 0 holds the whole adapter
    # FSDP: a sharded state dict makes save_model write nothing, so the full one is switched on first,
    # and every rank calls save_model (the gather is a collective)
    for should_save in (True, False):
        fsdp = _Recorder(fsdp=True, should_save=should_save)
        save_adapter(fsdp, tmp_path / f"f{should_save}")
        assert fsdp.calls == ["state_dict_type FULL_STATE_DICT", "save_model"]
    assert not (tmp_path / "fTrue" / "training_args.bin").exists()  # no pickle in the adapter folder
    zero3 = _Recorder(deepspeed=True)
    save_adapter(zero3, tmp_path / "z")
    assert zero3.calls == ["save_model"]
