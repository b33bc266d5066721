"""`loralab ablate`: seed 000's staged target-module ablation written as a study and run by the study
runner, with the decision rules evaluated after each phase.

The study file it writes (DIR/study.yaml) is an ordinary one (`kind: ablate`): the base experiment by
absolute path, one run per phase overriding only `lora.config.target_modules`, and the rules, so
`loralab study DIR/study.yaml` runs the same ablation and a user may edit the thresholds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from loralab.config.loader import read_yaml
from loralab.errors import ConfigError, Problem
from loralab.experiments.phases import TARGET_KEY, PhasePlan
from loralab.experiments.record import StudyRecord
from loralab.experiments.rules import RulesConfig, rules_callback, rules_from_study
from loralab.experiments.runner import run_study
from loralab.experiments.spec import safe_part

STUDY_YAML = "study.yaml"


def ablate_study(
    base: Path,
    phases: list[PhasePlan],
    *,
    rules: RulesConfig,
    seeds: list[int] | None = None,
    name: str | None = None,
    early_stopping_patience: int | None = None,
) -> dict[str, Any]:
    """The study file's content for these phases (the `study:` mapping of the shared format)."""
    study: dict[str, Any] = {
        "name": name or safe_part(f"{base.stem}-ablate"),
        "kind": "ablate",
        "base": str(base.expanduser().resolve()),
    }
    if seeds:
        study["seeds"] = list(seeds)
    study["runs"] = [
        {"name": p.name, "phase": p.name, "overrides": {TARGET_KEY: list(p.target_modules)}} for p in phases
    ]
    study["rules"] = rules.study_mapping()
    if early_stopping_patience is not None:
        # seed 000 §5.2: stop a run when 5 epochs gain less than 0.5 point (the rules' min_gain)
        study["early_stopping"] = {"patience": early_stopping_patience, "threshold": rules.min_gain}
    return {"study": study}


def existing_rules(out: Path) -> RulesConfig | None:
    """The rules of an earlier DIR/study.yaml (a user may have edited the thresholds before --resume)."""
    path = out / STUDY_YAML
    if not path.is_file():
        return None
    return rules_from_study(read_yaml(path), str(path))


def write_study(out: Path, content: dict[str, Any]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / STUDY_YAML
    text = yaml.safe_dump(content, sort_keys=False, allow_unicode=True, default_flow_style=None)
    path.write_text(
        "# written by `loralab ablate`; `loralab study` runs it as well\n" + text, encoding="utf-8"
    )
    return path


def run_ablate(
    base: Path,
    out: Path,
    phases: list[PhasePlan],
    *,
    seeds: list[int] | None = None,
    resume: bool = False,
    force: bool = False,
    executor: str = "local",
    max_parallel: int = 1,
    all_phases: bool = False,
    early_stopping_patience: int | None = None,
    quiet: bool = False,
) -> StudyRecord:
    """Write DIR/study.yaml and run it, the rules deciding after each phase."""
    if early_stopping_patience is not None and early_stopping_patience < 1:
        raise ConfigError(
            [Problem("--early-stopping-patience", "", f"{early_stopping_patience} epochs", "give 1 or more")]
        )
    rules = (existing_rules(out) if resume else None) or RulesConfig()
    content = ablate_study(
        base, phases, rules=rules, seeds=seeds, early_stopping_patience=early_stopping_patience
    )
    study_file = write_study(out, content)
    return run_study(
        study_file,
        out,
        resume=resume,
        force=force,
        executor=executor,
        max_parallel=max_parallel,
        after_phase=rules_callback(rules),
        all_phases=all_phases,
        quiet=quiet,
    )
