"""One owner per default: `plan` estimates the run `train` starts, and a seq-cls config without
`model.num_labels` gets the count of its training labels (as transformers' run_classification does)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from rich.console import Console
from train_fixtures import experiment_yaml, make_data, tiny_bert

from loralab.arch.cache import get_arch_record
from loralab.commands.plan import run_plan
from loralab.config import load_experiment
from loralab.config.models import DEFAULT_MAX_LENGTH
from loralab.data import infer_num_labels
from loralab.errors import ConfigError
from loralab.plan.estimate.setup import Overrides, setup_from_config
from loralab.plan.experiment import plan_experiment
from loralab.train.loading import load_tokenizer
from loralab.train.run import train
from loralab.train.tasks import ClassificationTask


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("defaults")
    model = tiny_bert(root / "model")
    train_csv, test_csv = make_data(root / "data")
    return {"root": root, "model": model, "train": train_csv, "test": test_csv}


def _exp(tiny: dict[str, Path], *without: str, epochs: int = 8) -> Path:
    path = experiment_yaml(tiny["root"], tiny["model"], tiny["train"], tiny["test"], epochs=epochs)
    return _without(path, *without) if without else path


def _without(path: Path, *keys: str) -> Path:
    """The experiment file with `model.num_labels` / `data.max_length` removed."""
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    for key in keys:
        section, name = key.split(".")
        raw[section].pop(name, None)
    out = path.with_name(path.stem + "-" + "-".join(k.split(".")[1] for k in keys) + ".yaml")
    out.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return out


def test_plan_estimates_the_sequence_length_that_train_tokenizes_at(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    # A training row far longer than any default: train truncates it at its max_length.
    long_csv = tmp_path / "long.csv"
    with long_csv.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "category"])
        w.writerows([(" ".join(["card"] * 400), "card"), ("fee fee", "fee"), ("tax", "tax")] * 10)
    cfg_path = _without(experiment_yaml(tiny["root"], tiny["model"], long_csv, long_csv), "data.max_length")
    cfg = load_experiment(cfg_path)
    assert cfg.data.max_length is None
    arch = get_arch_record(str(tiny["model"]), task="seq-cls", num_labels=3)
    setup, notes = setup_from_config(cfg, arch, Overrides())
    assert setup.seq_len == DEFAULT_MAX_LENGTH["seq-cls"] == 128
    assert any("sequence length 128" in n and "train" in n for n in notes)

    task = ClassificationTask(cfg)
    splits = task.prepare_data(load_tokenizer(cfg), tmp_path, seed=0)
    # The longest tokenised training row is exactly the length plan's memory estimate assumed.
    assert max(splits["train"].lengths()) == setup.seq_len
    # 10 long rows, 10% of each class held out for validation (eval_strategy: epoch)
    assert splits["train"].truncated == 9 and splits["validation"].truncated == 1


def test_lm_tasks_share_the_same_owner(tiny: dict[str, Path]) -> None:
    cfg = load_experiment(
        _without(experiment_yaml(tiny["root"], tiny["model"], tiny["train"], tiny["test"]), "data.max_length")
    )
    cfg.model.task = "causal-lm"
    assert cfg.max_length == DEFAULT_MAX_LENGTH["causal-lm"] == 256


def test_num_labels_is_inferred_from_the_training_labels(tiny: dict[str, Path]) -> None:
    cfg_path = _without(
        experiment_yaml(tiny["root"], tiny["model"], tiny["train"], tiny["test"]), "model.num_labels"
    )
    cfg = load_experiment(cfg_path)
    assert cfg.model.num_labels is None
    n, note = infer_num_labels(cfg)
    # make_data writes the three classes card, fee, tax
    assert n == 3 and "3" in note and "category" in note and "train.csv" in note

    # plan: the same head as with num_labels: 3 written out
    given = load_experiment(experiment_yaml(tiny["root"], tiny["model"], tiny["train"], tiny["test"]))
    cfg.model.num_labels = n
    assert plan_experiment(cfg).counts.trainable_params == plan_experiment(given).counts.trainable_params


def test_plan_without_num_labels_says_it_inferred_it(
    tiny: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg_path = _without(
        experiment_yaml(tiny["root"], tiny["model"], tiny["train"], tiny["test"]), "model.num_labels"
    )
    run_plan(cfg_path, as_json=True, with_options=False, out=Console())
    obj = json.loads(capsys.readouterr().out)
    assert obj["model"]["num_labels"] == 3
    assert any("num_labels: 3 (inferred" in n for n in obj["notes"])


def test_train_infers_num_labels_and_writes_it_into_the_run_config(tiny: dict[str, Path]) -> None:
    cfg_path = _without(
        experiment_yaml(tiny["root"], tiny["model"], tiny["train"], tiny["test"], epochs=1),
        "model.num_labels",
    )
    out = tiny["root"] / "run-inferred"
    result = train(cfg_path, output=out, quiet=True)
    assert result is not None
    saved = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
    assert saved["model"]["num_labels"] == 3
    assert len(result.metrics["per_class"]) == 3


def test_a_given_num_labels_too_small_is_still_an_error(tiny: dict[str, Path]) -> None:
    cfg_path = experiment_yaml(tiny["root"], tiny["model"], tiny["train"], tiny["test"], epochs=1)
    text = cfg_path.read_text(encoding="utf-8").replace("num_labels: 3", "num_labels: 2")
    small = cfg_path.with_name("small.yaml")
    small.write_text(text, encoding="utf-8")
    with pytest.raises(Exception, match="num_labels"):
        train(small, output=tiny["root"] / "run-small", quiet=True)


def test_without_num_labels_or_training_labels_the_loader_says_what_to_set(tmp_path: Path) -> None:
    p = tmp_path / "exp.yaml"
    p.write_text("model: {name_or_path: gpt2, task: seq-cls}\nlora: {config: {r: 4}}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"model\.num_labels.*data\.train_file"):
        load_experiment(p)
