"""The LoraConfig / TrainingArguments field snapshot: fresh, used, torch-free, faithful to the libraries."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from loralab.config import load_experiment, schema
from loralab.config.schema import FieldSpec, Schemas, load_schemas, value_matches
from loralab.config.snapshot import SHIPPED_PATH, build_snapshot, dump_snapshot
from loralab.errors import ConfigError

SEED000 = """
model: {name_or_path: Qwen/Qwen3-8B, task: seq-cls, num_labels: 260}
lora:
  enable: true
  config:
    task_type: "SEQ_CLS"
    r: 256
    lora_alpha: 512
    lora_dropout: 0.05
    target_modules: ["q_proj", "k_proj", "v_proj", "o_proj"]
    layers_to_transform: [25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35]
    modules_to_save: ["score"]
    bias: "lora_only"
training_args:
  num_train_epochs: 20
  per_device_train_batch_size: 8
  gradient_accumulation_steps: 8
  learning_rate: 4.0e-5
  eval_strategy: epoch
  save_strategy: epoch
  load_best_model_at_end: true
  metric_for_best_model: weighted_f1
"""

SEED001 = """
model: {name_or_path: Qwen/Qwen3-8B, num_labels: 260}
lora_defaults:
  task_type: SEQ_CLS
  r: 128
  lora_alpha: 256
  lora_dropout: 0.05
  target_modules: [q_proj, k_proj, v_proj, o_proj]
  layers_to_transform: [-6, -5, -4, -3, -2, -1]
training_args:
  num_train_epochs: 3
  per_device_train_batch_size: 32
  learning_rate: 2.0e-5
  weight_decay: 0.01
  warmup_ratio: 0.1
  evaluation_strategy: epoch
  save_strategy: epoch
  group_by_length: true
  overwrite_output_dir: true
  logging_dir: logs
  gradient_checkpointing: true
  lr_scheduler_type: cosine
  report_to: none
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_shipped_snapshot_matches_the_installed_libraries() -> None:
    """Fails after a peft/transformers upgrade: run `python -m loralab.config.snapshot`, commit the file."""
    assert SHIPPED_PATH.read_text(encoding="utf-8") == dump_snapshot(build_snapshot())


def test_snapshot_covers_every_init_field() -> None:
    from peft import LoraConfig
    from transformers import TrainingArguments

    shipped = json.loads(SHIPPED_PATH.read_text(encoding="utf-8"))
    for cls, name in ((LoraConfig, "LoraConfig"), (TrainingArguments, "TrainingArguments")):
        expected = {f.name for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_")}
        assert set(shipped[name]) == expected


def _custom_schemas(drop_lora: str = "", add_training: FieldSpec | None = None) -> Schemas:
    base = load_schemas()
    lora = {k: v for k, v in base.lora.items() if k != drop_lora}
    training = dict(base.training)
    if add_training is not None:
        training[add_training.name] = add_training
    return dataclasses.replace(base, lora=lora, training=training)


def test_validation_uses_the_snapshot(tmp_path: Path) -> None:
    path = write(tmp_path, SEED000)
    load_experiment(path)  # valid against the shipped snapshot
    with pytest.raises(ConfigError) as info:
        load_experiment(path, schemas=_custom_schemas(drop_lora="lora_dropout"))
    assert [p.key for p in info.value.problems] == ["lora.config.lora_dropout"]
    extra = write(tmp_path, SEED000 + "  brand_new_arg: 3\n")
    with pytest.raises(ConfigError):
        load_experiment(extra)
    cfg = load_experiment(
        extra, schemas=_custom_schemas(add_training=FieldSpec("brand_new_arg", "int | None"))
    )
    assert cfg.training_args["brand_new_arg"] == 3


def test_version_mismatch_regenerates_into_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LORALAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(schema, "installed_versions", lambda: ("9.9.9", "99.0.0"))
    schema._load_schemas_cached.cache_clear()
    try:
        regenerated = load_schemas()  # slow: a subprocess imports peft and transformers
        target = tmp_path / "cache" / "fields-peft9.9.9-transformers99.0.0.json"
        assert regenerated.source == target and target.is_file()
        assert regenerated.notes == ()
        shipped = json.loads(SHIPPED_PATH.read_text(encoding="utf-8"))
        assert set(regenerated.lora) == set(shipped["LoraConfig"])  # same libraries underneath

        schema._load_schemas_cached.cache_clear()
        monkeypatch.setattr(
            schema, "_regenerate", lambda _t: pytest.fail("the cached snapshot should be reused")
        )
        # The cache file records the versions it was generated from; pretend those are the fake ones.
        data = json.loads(target.read_text(encoding="utf-8"))
        data.update(peft="9.9.9", transformers="99.0.0")
        target.write_text(json.dumps(data), encoding="utf-8")
        assert load_schemas().source == target
    finally:
        schema._load_schemas_cached.cache_clear()


def test_failed_regeneration_falls_back_with_a_note(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LORALAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(schema, "installed_versions", lambda: ("9.9.9", "99.0.0"))
    monkeypatch.setattr(schema, "_regenerate", lambda _t: "no torch here")
    schema._load_schemas_cached.cache_clear()
    try:
        cfg = load_experiment(write(tmp_path, SEED000))
        assert any("no torch here" in n and "9.9.9" in n for n in cfg.notes)
    finally:
        schema._load_schemas_cached.cache_clear()


@pytest.mark.parametrize(
    ("value", "annotation", "ok"),
    [
        (3, "int", True),
        (True, "int", False),
        (3, "float", True),
        (3.5, "int", False),
        ("x", "str | None", True),
        (None, "str | None", True),
        (None, "int", False),
        (["a"], "str | list[str] | None", True),
        ([1, "a"], "list[int] | int | None", False),
        (-2, "list[int] | int | None", True),
        ({"a": [1]}, "list[int] | dict[str, list[int]] | None", True),
        ({"a": ["x"]}, "list[int] | dict[str, list[int]] | None", False),
        ([[0, 4], [2, 6]], "list[tuple[int, int]] | None", True),
        ([[0, 4, 1]], "list[tuple[int, int]] | None", False),
        ("none", "Literal['none', 'all', 'lora_only']", True),
        ("some", "Literal['none', 'all', 'lora_only']", False),
        ("pissa_niter_16", "bool | Literal['gaussian', 'pissa_niter_[number of iters]']", True),
        (False, "str | None | Literal[False]", True),
        (True, "str | None | Literal[False]", False),
        ({"anything": object}, "peft.tuners.lora.config.LoftQConfig | dict", True),
        ("steps", "transformers.trainer_utils.IntervalStrategy | str", True),
        ([1], "Optional[Union[List[int], int]]", True),
        ("x", "Optional[Union[List[int], int]]", False),
        (1, "Any", True),
        (1, "not a [valid annotation", True),
    ],
)
def test_value_matches(value: Any, annotation: str, ok: bool) -> None:
    assert value_matches(value, annotation) is ok


def test_loading_does_not_import_torch(tmp_path: Path) -> None:
    path = write(tmp_path, SEED001)
    code = textwrap.dedent(
        f"""
        import sys, time
        t = time.perf_counter()
        import loralab.config
        cfg = loralab.config.load_experiment({str(path)!r})
        took = time.perf_counter() - t
        heavy = sorted(m for m in ("torch", "peft", "transformers") if m in sys.modules)
        print(heavy, round(took, 3))
        assert not heavy, heavy
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("text", [SEED000, SEED001], ids=["seed000", "seed001"])
def test_normalised_config_builds_the_real_objects(tmp_path: Path, text: str) -> None:
    from peft import LoraConfig
    from transformers import TrainingArguments

    cfg = load_experiment(write(tmp_path, text))
    lora = LoraConfig(**cfg.lora_config_dict())
    assert lora.r == cfg.lora.config["r"]
    args = TrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, **cfg.training_args)
    assert args.learning_rate == cfg.training_args["learning_rate"]
    if "warmup_ratio" in text:
        assert args.warmup_steps == 0.1
        assert args.get_warmup_steps(1000) == 100
        assert args.train_sampling_strategy == "group_by_length"
        assert args.eval_strategy == "epoch"
