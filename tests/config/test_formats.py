"""Other tools' files read as loralab experiments: Axolotl, LLaMA-Factory, DeepSpeed, TrainingArguments.

Each file is written here in the tool's own spelling; the expected values are that tool's defaults as its
source sets them (cited in loralab/config/formats/*.py) and the HF Trainer's DeepSpeed fill rules.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from loralab.config import load_experiment
from loralab.config.formats import detect_format, from_axolotl, resolve_auto
from loralab.config.formats.convert import convert_file
from loralab.errors import ConfigError

DS_AUTO = {
    "train_micro_batch_size_per_gpu": "auto",
    "gradient_accumulation_steps": "auto",
    "train_batch_size": "auto",
    "gradient_clipping": "auto",
    "zero_optimization": {"stage": 2},
    "bf16": {"enabled": "auto"},
    "optimizer": {
        "type": "AdamW",
        "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"},
    },
    "scheduler": {
        "type": "WarmupCosineLR",
        "params": {"warmup_min_lr": "auto", "warmup_max_lr": "auto", "warmup_num_steps": "auto"},
    },
    "steps_per_print": 10,
}
AXOLOTL = {
    "base_model": "tiny/llama",
    "adapter": "qlora",
    "load_in_4bit": True,
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    "lora_target_linear": True,
    "lora_modules_to_save": ["lm_head"],
    "micro_batch_size": 2,
    "gradient_accumulation_steps": 4,
    "num_epochs": 3,
    "learning_rate": "2e-4",
    "sequence_len": 1024,
    "bf16": True,
    "datasets": [{"path": "data.jsonl", "type": "alpaca"}],
    "chat_template": "chatml",
    "frobnicate": 3,
}
LLAMAFACTORY = {
    "model_name_or_path": "tiny/llama",
    "stage": "sft",
    "do_train": True,
    "finetuning_type": "lora",
    "lora_rank": 16,
    "additional_target": "embed_tokens,lm_head",
    "quantization_bit": 4,
    "dataset": "alpaca_en_demo",
    "template": "llama3",
    "cutoff_len": 512,
    "per_device_train_batch_size": 2,
    "gradient_accumulation_steps": 8,
    "learning_rate": 1.0e-4,
    "num_train_epochs": 3.0,
    "lr_scheduler_type": "cosine",
    "warmup_ratio": 0.1,
    "bf16": True,
}


def write(tmp_path: Path, name: str, data: dict[str, Any]) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data) if name.endswith(".json") else yaml.safe_dump(data, sort_keys=False))
    return path


def test_axolotl_qlora_target_linear_and_defaults(tmp_path: Path) -> None:
    cfg = load_experiment(write(tmp_path, "axolotl.yml", AXOLOTL))
    assert cfg.source_format == "axolotl"
    assert cfg.model.name_or_path == "tiny/llama" and cfg.model.task == "causal-lm"
    lora = cfg.lora.config
    assert lora["target_modules"] == "all-linear"  # lora_target_linear: every linear layer but the head
    assert (lora["r"], lora["lora_alpha"], lora["lora_dropout"]) == (16, 32, 0.05)
    assert lora["modules_to_save"] == ["lm_head"] and lora["task_type"] == "CAUSAL_LM"
    quant = cfg.model.quantization or {}
    assert quant["load_in_4bit"] is True and quant["bnb_4bit_quant_type"] == "nf4"
    assert quant["bnb_4bit_use_double_quant"] is True
    args = cfg.training_args
    assert args["per_device_train_batch_size"] == 2 and args["gradient_accumulation_steps"] == 4
    assert args["num_train_epochs"] == 3 and args["learning_rate"] == 2e-4
    assert args["lr_scheduler_type"] == "cosine"  # Axolotl's default, not transformers' linear
    assert args["warmup_steps"] == 0.03
    assert cfg.data.max_length == 1024
    assert "unknown key frobnicate (from Axolotl): not used" in cfg.notes
    assert any(n.startswith("chat_template (from Axolotl): 'chatml'") for n in cfg.notes)
    assert any(n.startswith("datasets (from Axolotl)") for n in cfg.notes)
    assert ("lora_r", "lora.config.r") in cfg.mapped


def test_axolotl_defaults_without_the_keys(tmp_path: Path) -> None:
    cfg = load_experiment(write(tmp_path, "a.yml", {"base_model": "m", "adapter": "lora", "lora_r": 8}))
    args = cfg.training_args
    assert args["lr_scheduler_type"] == "cosine" and args["per_device_train_batch_size"] == 1
    assert args["num_train_epochs"] == 1.0 and cfg.data.max_length == 512
    assert cfg.model.quantization is None and cfg.lora.config["lora_dropout"] == 0.0
    assert "target_modules" not in cfg.lora.config  # neither key: PEFT's per-model default


def test_llamafactory_all_additional_target_qlora(tmp_path: Path) -> None:
    cfg = load_experiment(write(tmp_path, "lf.yaml", LLAMAFACTORY))
    assert cfg.source_format == "llamafactory"
    lora = cfg.lora.config
    assert lora["target_modules"] == "all-linear"  # lora_target defaults to "all"
    assert lora["r"] == 16 and lora["lora_alpha"] == 32  # lora_alpha defaults to 2 x rank
    assert lora["lora_dropout"] == 0.0
    assert lora["modules_to_save"] == ["embed_tokens", "lm_head"]
    quant = cfg.model.quantization or {}
    assert quant["load_in_4bit"] is True and quant["bnb_4bit_quant_type"] == "nf4"
    assert quant["bnb_4bit_compute_dtype"] == "bfloat16"
    assert cfg.model.torch_dtype == "bfloat16" and cfg.data.max_length == 512
    assert cfg.training_args["warmup_steps"] == 0.1  # warmup_ratio, in transformers 5's spelling
    assert cfg.training_args["gradient_accumulation_steps"] == 8
    assert any(n.startswith("template (from LLaMA-Factory): 'llama3'") for n in cfg.notes)
    assert any(n.startswith("stage (from LLaMA-Factory): 'sft'") for n in cfg.notes)


def test_llamafactory_explicit_targets(tmp_path: Path) -> None:
    raw = {
        "model_name_or_path": "m",
        "finetuning_type": "lora",
        "lora_target": "q_proj, v_proj",
        "lora_alpha": 8,
    }
    cfg = load_experiment(write(tmp_path, "lf.yaml", raw))
    assert cfg.lora.config["target_modules"] == ["q_proj", "v_proj"]
    assert (cfg.lora.config["r"], cfg.lora.config["lora_alpha"]) == (8, 8)
    assert cfg.data.max_length == 2048


def test_deepspeed_auto_resolved_to_the_trainers_values(tmp_path: Path) -> None:
    write(tmp_path, "ds.json", DS_AUTO)
    cfg = load_experiment(write(tmp_path, "lf.yaml", {**LLAMAFACTORY, "deepspeed": "ds.json"}))
    assert cfg.deepspeed is not None and cfg.deepspeed_file == (tmp_path / "ds.json").resolve()
    assert any('train_batch_size: "auto" -> 16' in n for n in cfg.notes)
    defaults = {"max_grad_norm": 1.0, "adam_beta1": 0.9, "adam_beta2": 0.999, "adam_epsilon": 1e-8}
    resolved, notes, mismatches = resolve_auto(
        cfg.deepspeed, cfg.training_args, defaults, world_size=4, num_training_steps=100
    )
    assert not mismatches and notes
    assert resolved["train_micro_batch_size_per_gpu"] == 2 and resolved["gradient_accumulation_steps"] == 8
    assert resolved["train_batch_size"] == 4 * 2 * 8
    assert resolved["gradient_clipping"] == 1.0
    assert resolved["optimizer"]["params"]["lr"] == 1.0e-4
    assert resolved["optimizer"]["params"]["betas"] == [0.9, 0.999]
    assert resolved["scheduler"]["params"]["warmup_max_lr"] == 1.0e-4
    assert resolved["scheduler"]["params"]["warmup_min_lr"] == 0
    assert resolved["scheduler"]["params"]["warmup_num_steps"] == 10  # ceil(100 x 0.1)
    assert "total_num_steps" not in resolved["scheduler"]["params"]  # not in the file: not added
    assert resolved["bf16"]["enabled"] is True


def test_deepspeed_explicit_mismatch_reported(tmp_path: Path) -> None:
    write(tmp_path, "ds.json", {**DS_AUTO, "train_micro_batch_size_per_gpu": 4, "gradient_clipping": 0.5})
    with pytest.raises(ConfigError) as info:
        load_experiment(write(tmp_path, "ax.yml", {**AXOLOTL, "deepspeed": "ds.json"}))
    text = str(info.value)
    assert "Please correct the following DeepSpeed config values that mismatch TrainingArguments" in text
    assert "train_micro_batch_size_per_gpu is 4 but training_args.per_device_train_batch_size is 2" in text
    assert "gradient_clipping is 0.5" in text
    _, _, mismatches = resolve_auto(
        {"train_batch_size": 10},
        {},
        {"per_device_train_batch_size": 8, "gradient_accumulation_steps": 1},
        world_size=1,
    )
    assert mismatches == ["- ds train_batch_size=10 vs hf train_batch_size (calculated)=8"]


def test_deepspeed_alone_needs_a_model_but_diff_reads_it(tmp_path: Path) -> None:
    explicit = {
        **DS_AUTO,
        "train_micro_batch_size_per_gpu": 4,
        "gradient_accumulation_steps": 2,
        "train_batch_size": 32,
        "optimizer": {"type": "AdamW", "params": {"lr": 3e-5}},
    }
    path = write(tmp_path, "ds_z2.json", explicit)
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    assert len(info.value.problems) == 1
    line = info.value.problems[0].line()
    assert "ds_z2.json" in line and "model is needed" in line and "\n" not in line
    cfg = load_experiment(path, require_model=False)
    assert cfg.has_model is False and cfg.source_format == "deepspeed"
    assert cfg.deepspeed_file == path.absolute()
    assert cfg.training_args["per_device_train_batch_size"] == 4
    assert cfg.training_args["gradient_accumulation_steps"] == 2
    assert cfg.training_args["learning_rate"] == 3e-5
    assert any("train_batch_size 32 = 4 processes x 4 x 2" in n for n in cfg.notes)
    assert any(n.startswith("steps_per_print (from DeepSpeed)") for n in cfg.notes)


def test_training_args_file(tmp_path: Path) -> None:
    raw = {
        "output_dir": "out",
        "per_device_train_batch_size": 16,
        "learning_rate": 5e-5,
        "seed": 42,
        "hub_token": "<HUB_TOKEN>",
        "mystery": 1,
    }
    path = write(tmp_path, "training_args.json", raw)
    assert detect_format(raw) == "training_args"
    cfg = load_experiment(path, require_model=False)
    assert cfg.training_args["per_device_train_batch_size"] == 16 and "seed" not in cfg.raw["training_args"]
    assert "unknown key mystery (from TrainingArguments): not used" in cfg.notes
    with pytest.raises(ConfigError, match="names no model"):
        load_experiment(path)


def test_detection_and_format_override(tmp_path: Path) -> None:
    assert detect_format(AXOLOTL) == "axolotl"
    assert detect_format(LLAMAFACTORY) == "llamafactory"
    assert detect_format(DS_AUTO) == "deepspeed"
    assert detect_format({"model": {"name_or_path": "gpt2"}, "lora": {"r": 8}}) == "loralab"
    with pytest.raises(ConfigError, match="cannot tell which tool") as info:
        detect_format({"something": 1}, "x.yml")
    assert "axolotl" in str(info.value) and "--format" in str(info.value)
    # LLaMA-Factory's markers (finetuning_type, lora_rank, stage, ...) are all defaults here, so the keys
    # read as TrainingArguments; --format says LLaMA-Factory, whose defaults then apply.
    path = write(tmp_path, "x.yml", {"model_name_or_path": "m", "learning_rate": 1e-4})
    assert load_experiment(path, require_model=False).source_format == "training_args"
    cfg = load_experiment(path, fmt="LLaMA-Factory")
    assert cfg.source_format == "llamafactory" and cfg.model.name_or_path == "m"
    assert cfg.lora.config["target_modules"] == "all-linear" and cfg.lora.config["lora_alpha"] == 16
    with pytest.raises(ConfigError, match="unknown format"):
        load_experiment(path, fmt="ludwig")


def test_problem_named_by_the_users_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_experiment(write(tmp_path, "a.yml", {"base_model": "m", "adapter": "lora", "lora_r": 0}))
    assert info.value.problems[0].key == "lora_r (read as lora.config.r)"
    with pytest.raises(ConfigError) as info:
        load_experiment(write(tmp_path, "b.yml", {"adapter": "lora", "lora_r": 8}))
    assert info.value.problems[0].key == "base_model (read as model.name_or_path)"


def test_convert_comments_and_loads_back(tmp_path: Path) -> None:
    write(tmp_path, "ds.json", DS_AUTO)
    source = write(tmp_path, "ax.yml", {**AXOLOTL, "deepspeed": "ds.json"})
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    text = convert_file(source, None, out_dir)
    assert "  r: 16  # from lora_r" in text
    assert "target_modules: all-linear  # from lora_target_linear" in text
    assert "#   unknown key frobnicate (from Axolotl): not used" in text
    assert "deepspeed: ../ds.json" in text
    converted = out_dir / "experiment.yaml"
    converted.write_text(text)
    a, b = load_experiment(source), load_experiment(converted)
    assert b.source_format == "loralab"
    for part in ("model", "lora", "training_args", "data", "deepspeed", "deepspeed_file"):
        assert getattr(a, part) == getattr(b, part), part
    lf = convert_file(write(tmp_path, "lf.yaml", LLAMAFACTORY), "llamafactory")
    (tmp_path / "lf-loralab.yaml").write_text(lf)
    c, d = load_experiment(tmp_path / "lf.yaml"), load_experiment(tmp_path / "lf-loralab.yaml")
    assert (c.model, c.lora, c.training_args, c.data) == (d.model, d.lora, d.training_args, d.data)


def test_converter_is_pure_and_unpacks() -> None:
    mapping, notes, mapped = from_axolotl({"base_model": "m", "adapter": "lora", "x": 1}, {})
    assert mapping["model"]["name_or_path"] == "m"
    assert (
        "unknown key x (from Axolotl): not used" in notes and ("base_model", "model.name_or_path") in mapped
    )


def _tiny() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "plan_tiny_models", Path(__file__).parents[1] / "plan" / "plan_tiny_models.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("axolotl.yml", {"base_model": "tiny", "adapter": "lora", "lora_r": 4, "lora_target_linear": True}),
        (
            "lf.yaml",
            {"model_name_or_path": "tiny", "finetuning_type": "lora", "additional_target": "lm_head"},
        ),
        (
            "lf2.yaml",
            {"model_name_or_path": "tiny", "stage": "sft", "lora_target": "q_proj,v_proj", "lora_rank": 2},
        ),
    ],
)
def test_plan_of_converted_file_equals_peft(tmp_path: Path, name: str, raw: dict[str, Any]) -> None:
    """`plan`'s trainable count of the converted LoRA config equals PEFT's on the same tiny model, and
    the all-linear PEFT resolves to is what Axolotl's / LLaMA-Factory's linear-layer finders pick."""
    peft = pytest.importorskip("peft")
    from loralab.arch.introspect import introspect
    from loralab.plan import build_plan

    tiny = _tiny()
    config = dict(tiny.TINY["llama"])
    cfg = load_experiment(write(tmp_path, name, raw))
    lora = cfg.lora_config_dict()
    arch = introspect(dict(config), task="causal-lm", num_labels=None, model_id="tiny-llama")
    plan = build_plan(arch, lora, with_options=False)
    model = tiny.build_reference_model(config, "causal-lm")
    trainable, _ = peft.get_peft_model(model, peft.LoraConfig(**lora)).get_nb_trainable_parameters()
    assert plan.counts.trainable_params == trainable
    if lora.get("target_modules") == "all-linear":
        # adapter.py find_all_linear_names / model_utils/misc.py find_all_linear_modules: the last name of
        # every Linear but lm_head, on a fresh model.
        import torch

        fresh = tiny.build_reference_model(config, "causal-lm")
        names = sorted(
            {n.split(".")[-1] for n, m in fresh.named_modules() if isinstance(m, torch.nn.Linear)}
            - {"lm_head"}
        )
        explicit = peft.get_peft_model(fresh, peft.LoraConfig(**{**lora, "target_modules": names}))
        assert explicit.get_nb_trainable_parameters()[0] == trainable


def test_deepspeed_text_where_a_number_belongs(tmp_path: Path) -> None:
    """LLaMA-Factory #1116: "lr": "2e-5" is text; the Trainer or DeepSpeed fails on it. Every such
    value is one problem naming the key and the Trainer's value, reported with the other problems."""
    ds = tmp_path / "ds.json"
    ds.write_text(
        json.dumps(
            {
                "train_micro_batch_size_per_gpu": "16",
                "gradient_accumulation_steps": 2,
                "zero_optimization": {"stage": 2},
                "optimizer": {"type": "AdamW", "params": {"lr": "2e-5", "betas": ["0.9", 0.999]}},
            }
        )
    )
    exp = tmp_path / "exp.yaml"
    exp.write_text(
        "model: {name_or_path: gpt2, task: causal-lm}\n"
        "training_args:\n"
        "  {per_device_train_batch_size: 16, gradient_accumulation_steps: 4, learning_rate: 1.0e-5}\n"
        "deepspeed: ds.json\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as e:
        load_experiment(exp)
    keys = sorted(p.key for p in e.value.problems)
    assert keys == [
        "deepspeed.gradient_accumulation_steps",  # 2 vs 4: the mismatch transformers refuses
        "deepspeed.optimizer.params.betas",
        "deepspeed.optimizer.params.lr",
        "deepspeed.train_micro_batch_size_per_gpu",
    ]
    lr = next(p for p in e.value.problems if p.key == "deepspeed.optimizer.params.lr")
    assert "text '2e-5'" in lr.message and "learning_rate=1e-05" in lr.message and "auto" in lr.fix
