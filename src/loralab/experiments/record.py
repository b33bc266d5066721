"""`DIR/study.json`: the machine-readable record of a study (many runs as one experiment).

One writer (the study runner, atomically through `loralab.io.write_json`), many readers (`report`,
`compare`, the decision rules, tests that recompute the decisions). The field names are the ones the
study issue fixes; every metric copied here equals the one in that run's own `metrics.json`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from loralab.errors import LoralabError
from loralab.io import write_json

Status = Literal["done", "failed", "skipped", "running", "queued"]
STATUSES: tuple[Status, ...] = ("done", "failed", "skipped", "running", "queued")
STUDY_FILE = "study.json"
# The scalar metrics a run's record carries (those present in its metrics.json).
CLASSIFICATION_METRICS = ("accuracy", "weighted_f1", "macro_f1", "micro_f1", "tail_f1", "loss")
GENERATION_METRICS = ("rouge1", "rouge2", "rougeL", "bleu", "chrf", "loss", "perplexity")


@dataclass
class Diagnosis:
    """A known failure signature found in a failed run's log: what caused it and how to fix it."""

    signature: str  # a short id, e.g. "bf16-gradscaler"
    cause: str
    fix: str
    evidence: str = ""  # the log line that matched


@dataclass
class RunRecord:
    name: str  # unique within the study; the run folder is runs/<name>-s<seed>
    phase: str | None
    model: str
    seed: int
    overrides: dict[str, Any]  # dotted key -> value, as the study file gives them
    status: Status = "queued"
    run_dir: str | None = None
    key: str | None = None  # hash of the resolved experiment config (changes => not the same run)
    trainable_params: int | None = None
    train_seconds: float | None = None
    metrics: dict[str, float] | None = None
    error: str | None = None
    exit_code: int | None = None
    log: str | None = None  # the run's log file
    diagnosis: Diagnosis | None = None
    reason: str | None = None  # why it was skipped
    mlflow_run_id: str | None = None

    @property
    def id(self) -> str:
        return f"{self.name}-s{self.seed}"

    @staticmethod
    def from_json(d: dict[str, Any]) -> RunRecord:
        d = dict(d)
        diag = d.pop("diagnosis", None)
        rec = RunRecord(**d)
        rec.diagnosis = Diagnosis(**diag) if diag else None
        return rec


@dataclass
class Baseline:
    """Predictions made elsewhere (seed 003's external API) scored with the same metrics."""

    name: str
    predictions: str
    task: str  # classification | generation
    metrics: dict[str, float] | None = None
    error: str | None = None


@dataclass
class Decision:
    """One evaluated rule: after which phase, which rule, the numbers it used, what it decided."""

    after: str
    rule: str
    inputs: dict[str, Any]
    verdict: str


@dataclass
class StudyRecord:
    name: str
    kind: str = "study"  # "study" | "ablate"
    study_file: str | None = None
    created: str = field(default_factory=lambda: datetime.now().isoformat(timespec="seconds"))
    updated: str | None = None
    runs: list[RunRecord] = field(default_factory=list)
    baselines: list[Baseline] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    selected: str | None = None  # the RunRecord.name the rules pick
    mlflow: dict[str, Any] | None = None  # {"experiment", "parent_run_id", "uri" (redacted)}

    def run(self, name: str, seed: int) -> RunRecord | None:
        return next((r for r in self.runs if r.name == name and r.seed == seed), None)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(d: dict[str, Any]) -> StudyRecord:
        d = dict(d)
        runs = [RunRecord.from_json(r) for r in d.pop("runs", [])]
        baselines = [Baseline(**b) for b in d.pop("baselines", [])]
        decisions = [Decision(**x) for x in d.pop("decisions", [])]
        return StudyRecord(**d, runs=runs, baselines=baselines, decisions=decisions)

    def save(self, study_dir: Path) -> None:
        self.updated = datetime.now().isoformat(timespec="seconds")
        write_json(study_dir / STUDY_FILE, self.to_json())


def load_study(study_dir: Path) -> StudyRecord:
    path = study_dir / STUDY_FILE
    if not path.is_file():
        raise LoralabError(f"{study_dir} is not a study directory: {STUDY_FILE} is missing")
    try:
        return StudyRecord.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, TypeError, KeyError) as e:
        raise LoralabError(f"{path}: not a loralab study record ({e})") from e


@dataclass
class PhaseOutcome:
    """What the decision rules say after a phase: the decisions to record, whether later phases are
    skipped (and why), and the run they select so far."""

    decisions: list[Decision] = field(default_factory=list)
    stop: bool = False
    reason: str | None = None
    selected: str | None = None
