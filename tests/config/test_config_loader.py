"""load_experiment: the YAML our users write (seeds 000 and 001), and every way it can be wrong."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from loralab.config import ExperimentConfig, load_experiment
from loralab.errors import ConfigError, Problem

REPO = Path(__file__).resolve().parents[2]

SEED000 = """
model:
  name_or_path: Qwen/Qwen3-8B
  task: seq-cls
  num_labels: 260
# seed 000 §8.1, verbatim
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
"""

SEED001 = """
model:
  name_or_path: Qwen/Qwen3-8B
  num_labels: 260
lora_defaults:
  task_type: SEQ_CLS
  r: 128
  lora_alpha: 256
  layers_to_transform: [-6, -5, -4, -3, -2, -1]
data:
  max_length: 256
training_args:
  num_train_epochs: 3
  per_device_train_batch_size: 32
  learning_rate: 2.0e-5
  weight_decay: 0.01
  warmup_ratio: 0.1
  evaluation_strategy: epoch
  group_by_length: true
  overwrite_output_dir: true
  logging_dir: logs
"""


def write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems_of(path: Path) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    return info.value.problems


def by_key(problems: list[Problem]) -> dict[str, Problem]:
    return {p.key: p for p in problems}


def test_seed000_section_8_1_loads(tmp_path: Path) -> None:
    cfg = load_experiment(write(tmp_path, SEED000))
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.source == tmp_path / "exp.yaml"
    assert cfg.model.name_or_path == "Qwen/Qwen3-8B"
    assert cfg.model.task == "seq-cls"
    assert cfg.model.num_labels == 260
    assert cfg.lora.enable is True
    assert cfg.lora_config_dict() == {
        "task_type": "SEQ_CLS",
        "r": 256,
        "lora_alpha": 512,
        "lora_dropout": 0.05,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
        "layers_to_transform": list(range(25, 36)),
        "modules_to_save": ["score"],
        "bias": "lora_only",
    }
    assert cfg.notes == []
    assert cfg.training_args == {}
    assert cfg.deepspeed is None


def test_lora_config_dict_is_a_copy(tmp_path: Path) -> None:
    cfg = load_experiment(write(tmp_path, SEED000))
    cfg.lora_config_dict()["target_modules"].append("gate_proj")
    assert "gate_proj" not in cfg.lora.config["target_modules"]


def test_seed001_lora_defaults_and_transformers4_training_args(tmp_path: Path) -> None:
    cfg = load_experiment(write(tmp_path, SEED001))
    assert cfg.lora.config["r"] == 128
    assert cfg.lora.config["layers_to_transform"] == [-6, -5, -4, -3, -2, -1]  # the planner resolves these
    assert cfg.model.task == "seq-cls"  # inferred from task_type
    assert cfg.training_args == {
        "num_train_epochs": 3,
        "per_device_train_batch_size": 32,
        "learning_rate": 2.0e-5,
        "weight_decay": 0.01,
        "warmup_steps": 0.1,
        "eval_strategy": "epoch",
        "train_sampling_strategy": "group_by_length",
    }
    legacy = ("warmup_ratio", "evaluation_strategy", "group_by_length", "overwrite_output_dir", "logging_dir")
    for name in legacy:
        assert sum(n.startswith(f"training_args.{name}:") for n in cfg.notes) == 1, (name, cfg.notes)
    expected = "training_args.warmup_ratio: 0.1 -> warmup_steps: 0.1 (transformers 5 takes a fraction in "
    assert expected + "warmup_steps)" in cfg.notes
    assert any(n.startswith("lora_defaults:") for n in cfg.notes)
    assert cfg.data.max_length == 256


def test_fields_directly_under_lora_are_tolerated_with_a_note(tmp_path: Path) -> None:
    cfg = load_experiment(
        write(
            tmp_path,
            """
            model: {name_or_path: gpt2}
            lora:
              r: 256
              lora_alpha: 512
              target_modules: ["q_proj", "k_proj", "v_proj", "o_proj"]
              layers_to_transform: [25, 26]
            """,
        )
    )
    assert cfg.lora.config["r"] == 256
    assert cfg.lora.enable is True
    assert any(n.startswith("lora:") for n in cfg.notes)


def test_many_errors_are_reported_together(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        trainig_args: {}
        model:
          name_or_path: gpt2
          dtyp: bf16
        lora:
          config:
            r: "abc"
            lora_alpah: 16
            lora_dropout: 2
        training_args:
          eval_strategy: epoc
          per_device_train_batch_size: 0
        data:
          train_fil: x.jsonl
        """,
    )
    problems = problems_of(path)
    keys = {p.key for p in problems}
    assert keys >= {
        "trainig_args",
        "model.dtyp",
        "lora.config.r",
        "lora.config.lora_alpah",
        "lora.config.lora_dropout",
        "training_args.eval_strategy",
        "training_args.per_device_train_batch_size",
        "data.train_fil",
    }
    for p in problems:
        assert p.file == str(path)
        assert p.key
        assert p.fix, p
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    assert info.value.message().startswith(f"{len(problems)} problems in the configuration:")


def test_misspelled_lora_field_suggests_the_real_one(tmp_path: Path) -> None:
    path = write(tmp_path, SEED000.replace("lora_alpha: 512", "lora_alpah: 512"))
    problem = by_key(problems_of(path))["lora.config.lora_alpah"]
    assert "did you mean `lora_alpha`?" in problem.message
    assert "lora_alpha" in problem.fix


def test_misspelled_section_suggests_training_args(tmp_path: Path) -> None:
    path = write(tmp_path, SEED000 + "trainig_args:\n  learning_rate: 1.0e-4\n")
    problem = by_key(problems_of(path))["trainig_args"]
    assert "did you mean `training_args`?" in problem.message


def test_misspelled_training_arg_and_choice(tmp_path: Path) -> None:
    path = write(tmp_path, SEED000 + "training_args:\n  learnig_rate: 1.0e-4\n  lr_scheduler_type: cosin\n")
    problems = by_key(problems_of(path))
    assert "did you mean `learning_rate`?" in problems["training_args.learnig_rate"].message
    assert "did you mean `cosine`?" in problems["training_args.lr_scheduler_type"].message


def test_bad_types(tmp_path: Path) -> None:
    text = SEED000.replace("r: 256", 'r: "abc"').replace("lora_dropout: 0.05", "lora_dropout: 2")
    problems = by_key(problems_of(write(tmp_path, text)))
    assert "expects int" in problems["lora.config.r"].message
    assert "'abc'" in problems["lora.config.r"].message
    assert "[0, 1)" in problems["lora.config.lora_dropout"].message


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("r: 0", "lora.config.r"),
        ("r: true", "lora.config.r"),
        ("lora_alpha: -1", "lora.config.lora_alpha"),
        ("bias: lora", "lora.config.bias"),
        ("target_modules: []", "lora.config.target_modules"),
        ("layers_to_transform: [1, x]", "lora.config.layers_to_transform"),
        ("task_type: TOKEN_CLS", "lora.config.task_type"),
        ("task_type: SEQ_CLASSIFICATION", "lora.config.task_type"),
    ],
)
def test_lora_field_rules(tmp_path: Path, line: str, key: str) -> None:
    field = line.split(":")[0]
    lines = [ln for ln in SEED000.splitlines() if not ln.strip().startswith(f"{field}:")]
    text = "\n".join(lines) + f"\n    {line}\n"
    assert key in by_key(problems_of(write(tmp_path, text)))


def test_layers_pattern_needs_layers_to_transform(tmp_path: Path) -> None:
    text = SEED000.replace(
        "layers_to_transform: [25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35]", "layers_pattern: layers"
    )
    assert "lora.config.layers_pattern" in by_key(problems_of(write(tmp_path, text)))


@pytest.mark.parametrize("layers", ["-1", "[-6, -5, -4, -3, -2, -1]", "7"])
def test_layers_to_transform_accepts_single_and_negative_ints(tmp_path: Path, layers: str) -> None:
    text = SEED000.replace("[25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35]", layers)
    cfg = load_experiment(write(tmp_path, text))
    assert cfg.lora.config["layers_to_transform"] == json.loads(layers)


def test_task_type_must_match_model_task(tmp_path: Path) -> None:
    text = SEED000.replace("task: seq-cls", "task: causal-lm")
    problem = by_key(problems_of(write(tmp_path, text)))["lora.config.task_type"]
    assert "SEQ_CLS" in problem.message and "causal-lm" in problem.message


def test_task_inferred_both_ways(tmp_path: Path) -> None:
    cfg = load_experiment(
        write(tmp_path, "model: {name_or_path: gpt2}\nlora: {config: {task_type: causal_lm}}\n")
    )
    assert cfg.model.task == "causal-lm"
    assert cfg.lora.config["task_type"] == "CAUSAL_LM"  # upper-cased, with a note
    cfg = load_experiment(write(tmp_path, "model: {name_or_path: t5-small, task: seq2seq}\n"))
    assert cfg.lora_config_dict()["task_type"] == "SEQ_2_SEQ_LM"
    assert any("task_type" in n for n in cfg.notes)
    cfg = load_experiment(write(tmp_path, "model: gpt2\n"))
    assert (cfg.model.task, cfg.lora.config["task_type"]) == ("causal-lm", "CAUSAL_LM")


def test_model_section_rules(tmp_path: Path) -> None:
    problems = by_key(
        problems_of(
            write(
                tmp_path,
                """
                model:
                  task: seq-cls
                  torch_dtype: bfloat16
                  dtype: float16
                  attn_implementation: flash_atention_2
                  revision: 1234567
                  quantization: {load_in_4bit: true, load_in_8bit: true}
                """,
            )
        )
    )
    assert set(problems) >= {
        "model.name_or_path",
        "model.num_labels",
        "model.dtype",
        "model.attn_implementation",
        "model.revision",
        "model.quantization.load_in_8bit",
    }
    assert "did you mean `flash_attention_2`?" in problems["model.attn_implementation"].message


def test_missing_model_section(tmp_path: Path) -> None:
    assert "model" in by_key(problems_of(write(tmp_path, "lora: {config: {r: 8}}\n")))


def test_dtype_spellings(tmp_path: Path) -> None:
    cfg = load_experiment(write(tmp_path, "model: {name_or_path: gpt2, dtype: bf16}\n"))
    assert cfg.model.torch_dtype == cfg.model.dtype == "bfloat16"
    cfg = load_experiment(write(tmp_path, "model: {name_or_path: gpt2, torch_dtype: float16}\n"))
    assert cfg.model.dtype == "float16"
    assert not any("dtype" in n for n in cfg.notes)  # torch_dtype is a documented key, not a legacy one


def test_both_lora_forms_is_a_problem(tmp_path: Path) -> None:
    text = SEED000 + "lora_defaults:\n  r: 8\n"
    assert "lora_defaults" in by_key(problems_of(write(tmp_path, text)))


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    problems = problems_of(missing)
    assert len(problems) == 1
    assert problems[0].file == str(missing)
    assert "does not exist" in problems[0].message


def test_yaml_syntax_error_has_a_line_number(tmp_path: Path) -> None:
    path = write(tmp_path, "model:\n  name_or_path: gpt2\nlora:\n  config: [r: 8\n")
    (problem,) = problems_of(path)
    assert "syntax error at line" in problem.message
    assert problem.file == str(path)


def test_python_tags_are_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "model: !!python/object/apply:os.system ['echo pwned > pwned.txt']\n")
    (problem,) = problems_of(path)
    assert "tag" in problem.message
    assert "safe_load" in problem.fix
    assert not (tmp_path / "pwned.txt").exists()


@pytest.mark.parametrize(
    ("text", "expected"), [("", "empty"), ("- a\n- b\n", "mapping"), ("42\n", "mapping")]
)
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str, expected: str) -> None:
    (problem,) = problems_of(write(tmp_path, text))
    assert expected in problem.message


def test_duplicate_keys_are_problems(tmp_path: Path) -> None:
    text = SEED000.replace("r: 256", "r: 256\n    r: 128")
    problem = by_key(problems_of(write(tmp_path, text)))["lora.config.r"]
    assert "twice" in problem.message


def test_exponent_without_dot_is_read_as_float(tmp_path: Path) -> None:
    cfg = load_experiment(write(tmp_path, SEED000 + "training_args:\n  learning_rate: 1e-5\n"))
    assert cfg.training_args["learning_rate"] == pytest.approx(1e-5)
    assert any("learning_rate" in n for n in cfg.notes)


def test_top_level_seed_fills_training_args_seed(tmp_path: Path) -> None:
    cfg = load_experiment(write(tmp_path, SEED000 + "seed: 7\n"))
    assert cfg.seed == 7
    assert cfg.training_args["seed"] == 7


def test_deepspeed_json_path_relative_to_the_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "ds.json").write_text('{"zero_optimization": {"stage": 2}}', encoding="utf-8")
    path = write(tmp_path / "conf", SEED000 + "deepspeed: ds.json\n")
    monkeypatch.chdir(tmp_path)  # the path must not depend on the working directory
    cfg = load_experiment(path)
    assert cfg.deepspeed == {"zero_optimization": {"stage": 2}}
    assert cfg.deepspeed_file == (tmp_path / "conf" / "ds.json").resolve()


def test_deepspeed_yaml_inline_and_in_training_args(tmp_path: Path) -> None:
    (tmp_path / "ds.yaml").write_text("zero_optimization:\n  stage: 3\n", encoding="utf-8")
    cfg = load_experiment(write(tmp_path, SEED000 + "training_args:\n  deepspeed: ds.yaml\n"))
    assert cfg.deepspeed == {"zero_optimization": {"stage": 3}}
    assert "deepspeed" not in cfg.training_args
    assert any(n.startswith("training_args.deepspeed:") for n in cfg.notes)
    cfg = load_experiment(write(tmp_path, SEED000 + "deepspeed:\n  zero_optimization: {stage: 1}\n"))
    assert cfg.deepspeed == {"zero_optimization": {"stage": 1}}
    assert cfg.deepspeed_file is None


def test_deepspeed_problems(tmp_path: Path) -> None:
    problem = by_key(problems_of(write(tmp_path, SEED000 + "deepspeed: missing.json\n")))["deepspeed"]
    assert "not found" in problem.message
    (tmp_path / "bad.json").write_text('{"a": 1,\n "b": }', encoding="utf-8")
    problem = by_key(problems_of(write(tmp_path, SEED000 + "deepspeed: bad.json\n")))["deepspeed"]
    assert "line 2" in problem.message
    (tmp_path / "ds.json").write_text('{"train_micro_batch_size_per_gpu": 16}', encoding="utf-8")
    text = SEED000 + "deepspeed: ds.json\ntraining_args:\n  per_device_train_batch_size: 32\n"
    problem = by_key(problems_of(write(tmp_path, text)))["deepspeed.train_micro_batch_size_per_gpu"]
    assert '"auto"' in problem.fix


def test_data_section(tmp_path: Path) -> None:
    text = SEED000 + textwrap.dedent(
        """
        data:
          train_file: data/train.jsonl
          text_template: "적요: {memo}"
          label_field: account
          max_length: 256
          extract_ratio: 0.1
          seed: 42
          use_class_weights: true
          class_weight_alpha: 0.4
        """
    )
    cfg = load_experiment(write(tmp_path, text))
    assert cfg.data.class_weights is not None
    assert (cfg.data.class_weights.enable, cfg.data.class_weights.alpha) == (True, 0.4)
    assert cfg.data.extract_ratio == 0.1
    assert cfg.resolve_path(cfg.data.train_file or "") == tmp_path / "data" / "train.jsonl"
    assert any(n.startswith("data:") for n in cfg.notes)
    bad = (
        SEED000
        + "data:\n  extract_ratio: 2\n  class_weights: {alpah: 0.4}\n  text_field: t\n  text_template: x\n"
    )
    problems = by_key(problems_of(write(tmp_path, bad)))
    assert set(problems) >= {"data.extract_ratio", "data.class_weights.alpah", "data.text_template"}


def test_tracking_and_experiment(tmp_path: Path) -> None:
    text = SEED000 + textwrap.dedent(
        """
        experiment: {name: account_classification_lora_ablation, phase: baseline}
        tracking:
          mlflow: {uri: "file:./mlruns", experiment_name: account_classification_lora_ablation}
        """
    )
    cfg = load_experiment(write(tmp_path, text))
    assert cfg.experiment == {"name": "account_classification_lora_ablation", "phase": "baseline"}
    assert cfg.tracking == {
        "backend": "mlflow",
        "uri": "file:./mlruns",
        "experiment_name": "account_classification_lora_ablation",
    }
    problems = by_key(problems_of(write(tmp_path, SEED000 + "tracking: {experiment_nam: x}\n")))
    assert "did you mean `experiment_name`?" in problems["tracking.experiment_nam"].message


def test_load_best_model_needs_matching_strategies(tmp_path: Path) -> None:
    text = (
        SEED000
        + "training_args:\n  load_best_model_at_end: true\n  eval_strategy: epoch\n  save_strategy: steps\n"
    )
    assert "training_args.load_best_model_at_end" in by_key(problems_of(write(tmp_path, text)))


EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_shipped_examples_load(path: Path) -> None:
    import yaml

    if "model" not in (yaml.safe_load(path.read_text(encoding="utf-8")) or {}):
        pytest.skip("a DeepSpeed config, not an experiment file")
    cfg = load_experiment(path)
    assert cfg.model.name_or_path
