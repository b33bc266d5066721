"""The study file (issue 11): validation (every problem at once, with key and fix), the expansion of
runs x grid x seeds, each run's experiment.yaml and its key."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from train_fixtures import experiment_yaml, make_data

from loralab.config import load_experiment
from loralab.errors import ConfigError
from loralab.experiments.runs import expand, run_key, write_experiment
from loralab.experiments.spec import load_study_file


@pytest.fixture
def base(tmp_path: Path) -> Path:
    """A base experiment in its own folder with relative data paths (the model needs no weights here)."""
    folder = tmp_path / "base"
    folder.mkdir()
    train, test = make_data(folder / "data", n_train=30, n_test=9)
    path = experiment_yaml(folder, Path("bert-base-uncased"), train, test, epochs=1)
    text = path.read_text(encoding="utf-8").replace(str(folder) + "/", "")
    path.write_text(text, encoding="utf-8")
    assert "train_file: data/train.csv" in text
    return path


def _study(tmp_path: Path, study: dict[str, Any], name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"study": study}, sort_keys=False), encoding="utf-8")
    return path


def _problems(path: Path) -> list[tuple[str, str, str]]:
    with pytest.raises(ConfigError) as e:
        load_study_file(path)
    return [(p.key, p.message, p.fix) for p in e.value.problems]


RUN = {"name": "a", "overrides": {"lora.config.r": 8}}


def S(study: dict[str, Any]) -> dict[str, Any]:  # the study mapping over the shared base
    return {"base": "base/exp.yaml", **study}


BAD = [
    # (study mapping, expected key part, expected message or fix part)
    (S({"sedes": [1], "runs": [RUN]}), "study.sedes", "did you mean `seeds`"),
    (S({"runs": [{"name": "a", "overides": {}}]}), "study.runs[0].overides", "overrides"),
    ({"runs": [RUN]}, "study.base", "base experiment is missing"),
    ({"base": "nope.yaml", "runs": [RUN]}, "study.base", "not found"),
    (S({"kind": "ablation", "runs": [RUN]}), "study.kind", "unknown kind"),
    (S({"seeds": [1, "x"], "runs": [RUN]}), "study.seeds[1]", "integer"),
    (S({"runs": [RUN, RUN]}), "study.runs", "two runs are named 'a'"),
    (S({"runs": [{"name": "a/b"}]}), "study.runs[0].name", "folder name"),
    (S({"runs": [RUN], "grid": {"lora.config.r": 8}}), "study.grid.lora.config.r", "list"),
    (S({"runs": [RUN], "grid": {"lora.config.r": [4]}}), "overrides.lora.config.r", "grid"),
    (S({"runs": [RUN], "rules": {"adopt_gian": 0.02}}), "study.rules.adopt_gian", "adopt_gain"),
    (S({"runs": [RUN], "rules": {"adopt_gain": 2}}), "study.rules.adopt_gain", "0 to 1"),
    (S({"runs": [RUN], "early_stopping": {"patience": 0}}), "patience", ">= 1"),
    (
        S({"runs": [RUN], "baselines": [{"name": "api", "predictions": "x.csv"}]}),
        "study.baselines[0].predictions",
        "not found",
    ),
    # Overrides are checked by loading the base with them: the run and the override key are named.
    (
        S({"runs": [{"name": "r1", "overrides": {"lora.config.lora_alpah": 16}}]}),
        "run r1: overrides.lora.config.lora_alpah",
        "did you mean `lora_alpha`",
    ),
    (
        S({"runs": [{"name": "r1", "overrides": {"trainig_args.learning_rate": 0.1}}]}),
        "run r1: overrides.trainig_args.learning_rate",
        "training_args",
    ),
    (
        S({"runs": [{"name": "r1", "overrides": {"model.name_or_path.x": 1}}]}),
        "run r1",
        "not a mapping",
    ),
    (
        S({"runs": [{"name": "r1", "overrides": {"training_args.learning_rate": "x"}}]}),
        "run r1: overrides.training_args.learning_rate",
        "learning_rate",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("study", "key", "text"), BAD, ids=[b[1] for b in BAD])
def test_a_bad_study_file_names_the_key_and_a_fix(
    tmp_path: Path, base: Path, study: dict[str, Any], key: str, text: str
) -> None:
    problems = _problems(_study(tmp_path, study))
    assert any(key in k and (text in m or text in f) for k, m, f in problems), problems
    assert all(f for _, _, f in problems)  # every problem says how to fix it


def test_every_problem_is_reported_at_once(tmp_path: Path, base: Path) -> None:
    study = {
        "base": "base/exp.yaml",
        "kind": "x",
        "seeds": ["a"],
        "runs": [{"name": "a", "overrides": {"lora.config.lora_alpah": 1}}],
        "rules": {"min_gian": 0.1},
    }
    keys = [k for k, _, _ in _problems(_study(tmp_path, study))]
    assert {"study.kind", "study.seeds[0]", "study.rules.min_gian"} <= set(keys)
    assert "run a: overrides.lora.config.lora_alpah" in keys


def test_the_study_is_read_into_typed_runs(tmp_path: Path, base: Path) -> None:
    study = {
        "base": "base/exp.yaml",
        "runs": [{"name": "attn", "phase": "attention", "overrides": {"training_args.learning_rate": 0.01}}],
        "grid": {"lora.config.r": [2, 4]},
    }
    spec = load_study_file(_study(tmp_path, study))
    assert spec.name == "s" and spec.kind == "study"  # the name defaults to the file's stem
    assert spec.base == base.resolve()
    assert spec.seeds == [7]  # the base's training_args.seed
    assert [(r.name, r.phase, r.overrides["lora.config.r"]) for r in spec.runs] == [
        ("attn-r2", "attention", 2),
        ("attn-r4", "attention", 4),
    ]


def _planned(tmp_path: Path, study: dict[str, Any], name: str = "s.yaml") -> list[Any]:
    spec = load_study_file(_study(tmp_path, study, name))
    return expand(spec, tmp_path / "out")


def test_each_run_writes_the_experiment_it_trains(tmp_path: Path, base: Path) -> None:
    study = {
        "base": "base/exp.yaml",
        "seeds": [1, 2],
        "runs": [
            {"name": "a", "phase": "p1", "overrides": {"lora.config.r": 2}},
            {"name": "b", "overrides": {"training_args.learning_rate": 0.05}},
        ],
        "early_stopping": {"patience": 3, "threshold": 0.005},
    }
    planned = _planned(tmp_path, study)
    assert [p.id for p in planned] == ["a-s1", "a-s2", "b-s1", "b-s2"]
    for p in planned:
        path = write_experiment(tmp_path / "out", p)
        assert path == tmp_path / "out" / "runs" / p.id / "experiment.yaml"
        written = yaml.safe_load(path.read_text(encoding="utf-8"))
        # the key, recomputed from the file: sha256 of its canonical JSON, tracking left out
        content = {k: v for k, v in written.items() if k != "tracking"}
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert p.record.key == hashlib.sha256(canonical.encode()).hexdigest() == run_key(written)
        cfg = load_experiment(path)  # loads as `loralab train` will, from its own folder
        assert Path(cfg.data.train_file or "") == (base.parent / "data" / "train.csv").resolve()
        assert cfg.training_args["seed"] == p.record.seed
        assert cfg.experiment is not None and cfg.experiment["name"] == f"s-{p.record.name}-s{p.record.seed}"
        assert cfg.experiment.get("phase") == p.record.phase
        # early stopping the way train's session reads it
        assert cfg.experiment["early_stopping_patience"] == 3
        assert cfg.training_args["load_best_model_at_end"] is True
        assert cfg.training_args["save_strategy"] == cfg.training_args["eval_strategy"]
        assert cfg.tracking == {"backend": "none"}
    a1 = load_experiment(tmp_path / "out" / "runs" / "a-s1" / "experiment.yaml")
    assert a1.lora.config["r"] == 2
    assert p.record.run_dir == str(tmp_path / "out" / "runs" / p.id / "run")


def test_a_changed_override_changes_exactly_that_runs_key(tmp_path: Path, base: Path) -> None:
    def study(lr: float) -> dict[str, Any]:
        return {
            "name": "st",  # the study's name is part of each run's experiment name, hence of its key
            "base": "base/exp.yaml",
            "seeds": [1, 2],
            "runs": [
                {"name": "a", "overrides": {"lora.config.r": 2}},
                {"name": "b", "overrides": {"training_args.learning_rate": lr}},
            ],
        }

    before = {p.id: p.record.key for p in _planned(tmp_path, study(0.05))}
    after = {p.id: p.record.key for p in _planned(tmp_path, study(0.06), "s2.yaml")}
    assert len(set(before.values())) == 4  # seeds differ, so do keys
    assert {i for i in before if before[i] != after[i]} == {"b-s1", "b-s2"}
    again = {p.id: p.record.key for p in _planned(tmp_path, study(0.05), "s3.yaml")}
    assert again == before
