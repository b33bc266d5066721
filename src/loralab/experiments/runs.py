"""A study's runs: runs x grid x seeds as RunRecords, each with the experiment it trains (written to
`DIR/runs/<name>-s<seed>/experiment.yaml`) and its key, the sha256 of that experiment's canonical
JSON. Two runs with the same key train the same thing, so `--resume` keeps a finished run only while
its key is unchanged.

`tracking` is left out of the key: it says where metrics go, not what is trained (train's own
`--resume` compares configs the same way).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from loralab.experiments.record import RunRecord
from loralab.experiments.spec import StudySpec, resolve_run
from loralab.io import flatten

RUNS_DIR = "runs"
EXPERIMENT_FILE = "experiment.yaml"
RUN_SUBDIR = "run"  # the `loralab train` run directory inside a run's folder
LOG_FILE = "train.log"
HEADER = "# Written by `loralab study` for run "


@dataclass
class PlannedRun:
    record: RunRecord
    experiment: dict[str, Any]  # the resolved experiment file's content

    @property
    def id(self) -> str:
        return self.record.id


def run_key(experiment: dict[str, Any]) -> str:
    content = {k: v for k, v in experiment.items() if k != "tracking"}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def run_folder(out: Path, run_id: str) -> Path:
    return out / RUNS_DIR / run_id


def expand(spec: StudySpec, out: Path) -> list[PlannedRun]:
    """Every run of the study in order: for each run (grid included), each seed."""
    planned = []
    for run in spec.runs:
        for seed in spec.seeds:
            experiment, problems = resolve_run(spec, run, seed)
            assert not problems, problems  # load_study_file checked every run
            model = experiment.get("model")
            rec = RunRecord(
                name=run.name,
                phase=run.phase,
                model=str(model.get("name_or_path", "")) if isinstance(model, dict) else str(model),
                seed=seed,
                overrides=dict(run.overrides),
                key=run_key(experiment),
            )
            rec.run_dir = str(run_folder(out, rec.id) / RUN_SUBDIR)
            rec.log = str(run_folder(out, rec.id) / LOG_FILE)
            planned.append(PlannedRun(rec, experiment))
    return planned


def experiment_text(p: PlannedRun) -> str:
    return f"{HEADER}{p.id} (key {p.record.key})\n" + yaml.safe_dump(
        p.experiment, allow_unicode=True, sort_keys=False
    )


def write_experiment(out: Path, p: PlannedRun) -> Path:
    folder = run_folder(out, p.id)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / EXPERIMENT_FILE
    path.write_text(experiment_text(p), encoding="utf-8")
    return path


def read_experiment(out: Path, run_id: str) -> dict[str, Any] | None:
    """The experiment a run was written with (None when its file is missing or unreadable)."""
    try:
        data = yaml.safe_load((run_folder(out, run_id) / EXPERIMENT_FILE).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


_ABSENT = "(absent)"


def changed_keys(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """`key: old -> new` for each dotted key whose value differs (tracking left out, as in the key)."""
    if old is None:
        return ["experiment.yaml: missing or unreadable"]
    # Through YAML both ways so both sides have the types YAML gives.
    a = flatten({k: v for k, v in old.items() if k != "tracking"})
    b = flatten(yaml.safe_load(yaml.safe_dump({k: v for k, v in new.items() if k != "tracking"})))
    return [
        f"{k}: {json.dumps(a.get(k, _ABSENT), default=str)} -> {json.dumps(b.get(k, _ABSENT), default=str)}"
        for k in sorted(a.keys() | b.keys())
        if a.get(k, _ABSENT) != b.get(k, _ABSENT)
    ]
