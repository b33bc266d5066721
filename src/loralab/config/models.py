"""The validated, normalised experiment configuration that the rest of loralab codes against."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Task = Literal["seq-cls", "causal-lm", "seq2seq"]
TASKS: tuple[Task, ...] = ("seq-cls", "causal-lm", "seq2seq")

# PEFT TaskType name -> loralab task. Other TaskTypes (TOKEN_CLS, QUESTION_ANS, FEATURE_EXTRACTION) are
# valid for PEFT but loralab has no training loop for them.
TASK_TYPE_TO_TASK: dict[str, Task] = {
    "SEQ_CLS": "seq-cls",
    "CAUSAL_LM": "causal-lm",
    "SEQ_2_SEQ_LM": "seq2seq",
}
TASK_TO_TASK_TYPE: dict[Task, str] = {v: k for k, v in TASK_TYPE_TO_TASK.items()}
# Tokens per example when data.max_length is not set: the one owner of this default, read by `train`,
# `evaluate RUN_DIR` and `plan` alike, so a plan estimates the run that train starts. Short texts
# (classification) get 128; prompt + response (LM tasks) 256.
DEFAULT_MAX_LENGTH: dict[Task, int] = {"seq-cls": 128, "causal-lm": 256, "seq2seq": 256}


def lm_validation_rows(rows: int) -> int:
    """Training rows an LM run (causal-lm, seq2seq) without data.validation_file sets aside as its
    validation split: the first 10%, at least one. One owner: train splits by it and `recommend`
    counts the optimizer steps of what is left."""
    return max(1, rows // 10)


def carves_validation(cfg: ExperimentConfig) -> bool:
    """Whether `train` sets training rows aside as the validation split: with no data.validation_file,
    an LM run always does (lm_validation_rows), a seq-cls run when it evaluates during training
    (a stratified 10%). One owner: train splits by it, plan and diff count the rows that are left."""
    if cfg.data.validation_file:
        return False
    return cfg.model.task != "seq-cls" or str(cfg.training_args.get("eval_strategy", "no")) != "no"


def default_tracking_uri() -> str:
    """Where runs are tracked when `tracking.uri` is not set: `mlflow.db` in the working directory. One
    owner, read by train, studies and `loralab ui` (which must not import train's torch to know it)."""
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


PEFT_TASK_TYPES = ("SEQ_CLS", "CAUSAL_LM", "SEQ_2_SEQ_LM", "TOKEN_CLS", "QUESTION_ANS", "FEATURE_EXTRACTION")


@dataclass
class ModelConfig:
    """`model:` — which checkpoint to load and how."""

    name_or_path: str
    task: Task = "causal-lm"
    num_labels: int | None = None  # required (>= 2) for seq-cls
    torch_dtype: str | None = None  # float32 / float16 / bfloat16 / auto; transformers 5 calls it `dtype`
    trust_remote_code: bool = False
    attn_implementation: str | None = None
    revision: str | None = None
    quantization: dict[str, Any] | None = None  # from_pretrained quantization kwargs (load_in_4bit, ...)
    device_map: str | dict[str, Any] | None = None  # from_pretrained device_map ("auto" offloads to disk)

    @property
    def dtype(self) -> str | None:
        """The transformers-5 name of `torch_dtype`."""
        return self.torch_dtype


@dataclass
class LoraSection:
    """`lora:` — whether to apply LoRA and the `peft.LoraConfig` keyword arguments, verbatim."""

    enable: bool = True
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class ClassWeights:
    """Inverse-frequency class weights for seq-cls: weight_c = (1 / freq_c) ** alpha."""

    enable: bool = False
    alpha: float = 1.0  # 0 = uniform, 1 = plain inverse frequency; seed 000 used 0.4


@dataclass
class DataConfig:
    """`data:` — where the examples are and how to turn them into model inputs.

    File paths are kept as written; relative ones are relative to the YAML file's folder
    (`ExperimentConfig.resolve_path`).
    """

    train_file: str | None = None
    validation_file: str | None = None
    test_file: str | None = None
    text_field: str | None = None
    text_template: str | None = None  # e.g. "{account_name}: {description}", instead of text_field
    label_field: str | None = None
    prompt_field: str | None = None  # causal-lm / seq2seq
    response_field: str | None = None  # causal-lm / seq2seq
    max_length: int | None = None
    extract_ratio: float | None = None  # fraction of the data to use, in (0, 1]
    seed: int | None = None
    class_weights: ClassWeights | None = None


@dataclass
class ExperimentConfig:
    """One experiment file, validated and normalised to transformers 5 / the installed PEFT."""

    source: Path  # the YAML file, absolute
    model: ModelConfig
    lora: LoraSection = field(default_factory=LoraSection)
    training_args: dict[str, Any] = field(
        default_factory=dict
    )  # TrainingArguments kwargs, transformers-5 names
    data: DataConfig = field(default_factory=DataConfig)
    deepspeed: dict[str, Any] | None = None  # loaded DeepSpeed config (from a file or inline)
    deepspeed_file: Path | None = None  # where `deepspeed` was read from, when it was a path
    tracking: dict[str, Any] | None = None  # {backend: mlflow, uri, experiment_name, run_name, tags}
    experiment: dict[str, Any] | None = None  # {name, phase, ...}, free-form
    seed: int | None = None
    # auto | on | off: compute the frozen layers below the lowest adapter once (loralab.train.prefix_cache)
    prefix_cache: str = "auto"
    notes: list[str] = field(default_factory=list)  # one line per legacy field mapped, default filled, ...
    raw: dict[str, Any] = field(default_factory=dict)  # the mapping as read (loralab's form), for `diff`
    # The tool the file was written for (loralab.config.formats): loralab, axolotl, llamafactory,
    # deepspeed or training_args; for the others `raw` is the converted mapping, `original` the file's,
    # `mapped` each (their key, our dotted key).
    source_format: str = "loralab"
    original: dict[str, Any] | None = None
    mapped: list[tuple[str, str]] = field(default_factory=list)
    # False for a DeepSpeed or TrainingArguments file read with require_model=False (`diff`): then
    # model.name_or_path is "" and nothing that needs the model may run on it.
    has_model: bool = True

    def lora_config_dict(self) -> dict[str, Any]:
        """Keyword arguments for `peft.LoraConfig(**kwargs)` (a copy; safe to modify)."""
        return copy.deepcopy(self.lora.config)

    @property
    def max_length(self) -> int:
        """Tokens per example: data.max_length, else the task's default (DEFAULT_MAX_LENGTH)."""
        return int(self.data.max_length or DEFAULT_MAX_LENGTH[self.model.task])

    def resolve_path(self, path: str | Path) -> Path:
        """A path from the config, made absolute relative to the YAML file's folder."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.source.parent / p).resolve()
