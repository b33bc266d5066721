"""`loralab ablate` end to end on a tiny BERT (one epoch per phase): the study file it writes, the
phases it trains, and decisions that follow from study.json and the runs' own files."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from sklearn.metrics import f1_score
from train_fixtures import experiment_yaml, make_data, tiny_bert

from loralab.commands.ablate import previous_options
from loralab.config import load_experiment
from loralab.experiments.ablate import ablate_study, existing_rules, rules_callback, write_study
from loralab.experiments.phases import PHASES, plan_phases
from loralab.experiments.record import load_study
from loralab.experiments.rules import RulesConfig, decide_all
from loralab.experiments.runner import run_study


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("ablate")
    model = tiny_bert(tmp / "model")
    train, test = make_data(tmp / "data", n_train=60, n_test=30)
    return experiment_yaml(tmp, model, train, test, epochs=1, extra="experiment: {name: tiny}")


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


def test_study_file_is_an_ordinary_ablate_study(base: Path, tmp_path: Path) -> None:
    phases, _ = plan_phases(load_experiment(base))
    rules = RulesConfig(adopt_gain=0.03)
    path = write_study(
        tmp_path, ablate_study(base, phases, rules=rules, seeds=[1, 2], early_stopping_patience=5)
    )
    study = yaml.safe_load(path.read_text(encoding="utf-8"))["study"]
    assert (
        study["kind"] == "ablate"
        and Path(study["base"]) == base.resolve()
        and Path(study["base"]).is_absolute()
    )
    assert study["seeds"] == [1, 2]
    assert [r["phase"] for r in study["runs"]] == list(PHASES)
    assert [r["overrides"]["lora.config.target_modules"] for r in study["runs"]] == [
        p.target_modules for p in phases
    ]
    assert RulesConfig.from_mapping(study["rules"]) == rules
    assert study["early_stopping"] == {"patience": 5, "threshold": rules.min_gain}


@pytest.mark.slow
def test_three_phase_ablate_end_to_end(base: Path, tmp_path: Path) -> None:
    out = tmp_path / "study"
    p = _loralab("ablate", str(base), "--out", str(out), "--all-phases", "--quiet", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    phases, _ = plan_phases(load_experiment(base))
    # the table comes before anything trains: every phase with its trainable parameters
    for ph in phases:
        assert ph.name in p.stdout and f"{ph.trainable_params:,}" in p.stdout
    record = load_study(out)
    assert record.kind == "ablate"
    assert [(r.phase, r.status) for r in record.runs] == [(ph, "done") for ph in PHASES]
    for run, ph in zip(record.runs, phases, strict=True):
        experiment = yaml.safe_load((out / "runs" / run.id / "experiment.yaml").read_text(encoding="utf-8"))
        assert experiment["lora"]["config"]["target_modules"] == ph.target_modules
        run_dir = Path(str(run.run_dir))
        run_dir = run_dir if run_dir.is_absolute() else out / run_dir
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
        assert run.metrics is not None and run.metrics["weighted_f1"] == metrics["weighted_f1"]
        assert run.trainable_params == ph.trainable_params
    # one decision per phase, the same as recomputing the rules from study.json now
    assert [d.after for d in record.decisions] == list(PHASES)
    again = decide_all(load_study(out), out, RulesConfig())
    assert [d.verdict for d in again.decisions] == [d.verdict for d in record.decisions]
    assert record.selected == again.selected and record.selected in PHASES
    for d, run in zip(record.decisions, record.runs, strict=True):
        run_dir = Path(str(run.run_dir))
        run_dir = run_dir if run_dir.is_absolute() else out / run_dir
        with (run_dir / "predictions.csv").open(encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        gold, pred = [r["gold"] for r in rows], [r["pred"] for r in rows]
        assert d.inputs["weighted_f1"]["mean"] == pytest.approx(f1_score(gold, pred, average="weighted"))
        assert d.verdict.split(" —")[0].split(":")[0] in (
            "stop",
            "advance",
            "adopt",
            "keep previous",
            "not significant",
        )


@pytest.mark.slow
def test_a_stop_rule_skips_later_phases_with_the_reason(base: Path, tmp_path: Path) -> None:
    phases, _ = plan_phases(load_experiment(base), ["attention", "all-linear"])
    rules = RulesConfig.from_mapping({"target_weighted_f1": 0.0, "target_tail_f1": 0.0})
    out = tmp_path / "study"
    study = write_study(out, ablate_study(base, phases, rules=rules))
    record = run_study(study, out, resume=False, force=False, executor="local", max_parallel=1,
                       after_phase=rules_callback(rules), quiet=True)  # fmt: skip
    first, second = record.runs
    assert first.status == "done" and second.status == "skipped"
    assert record.decisions[0].verdict.startswith("stop: target met")
    assert second.reason and "stop: target met" in second.reason
    assert record.selected == "attention"


def test_resume_reuses_the_written_phases_seeds_patience_and_edited_rules(base: Path, tmp_path: Path) -> None:
    phases, _ = plan_phases(load_experiment(base), ["all-linear", "attention"])
    write_study(
        tmp_path, ablate_study(base, phases, rules=RulesConfig(), seeds=[3, 4], early_stopping_patience=2)
    )
    path = tmp_path / "study.yaml"
    edited = yaml.safe_load(path.read_text(encoding="utf-8"))
    edited["study"]["rules"]["adopt_gain"] = 0.04  # a user's edit before --resume
    path.write_text(yaml.safe_dump(edited), encoding="utf-8")
    assert previous_options(path) == {"phases": ["all-linear", "attention"], "seeds": [3, 4], "patience": 2}
    assert existing_rules(tmp_path) == RulesConfig(adopt_gain=0.04)
