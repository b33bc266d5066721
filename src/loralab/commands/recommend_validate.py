"""`loralab recommend --validate`: the short study (experiments.tune) run on the recommendation, its
winner written into the YAML with the study's table as the reason. Kept apart from commands/recommend
because the study runner loads torch, transformers and matplotlib, which a plain `recommend` never
needs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from loralab.experiments.spec import set_dotted
from loralab.experiments.tune import Validation, table_lines, validate_recommendation
from loralab.plan.recommend import Recommendation


def validation_folder(out_path: str | None) -> Path:
    """Beside the YAML: rec.yaml -> rec-validate/ (the current folder without --out)."""
    if out_path:
        p = Path(out_path).expanduser().absolute()
        return p.parent / f"{p.stem}-validate"
    return Path.cwd() / "recommend-validate"


def validator(
    budget_s: float, out_path: str | None, console: Any, *, quiet: bool
) -> Callable[[Recommendation], None]:
    def run(rec: Recommendation) -> None:
        v = validate_recommendation(
            rec.config, budget_s=budget_s, out_dir=validation_folder(out_path), console=console, quiet=quiet
        )
        apply_validation(rec, v)

    return run


def apply_validation(rec: Recommendation, v: Validation) -> None:
    """The chosen trial's overrides into the YAML mapping and the choices, with the reason."""
    rec.validation = v
    by_key = {c.key: c for c in rec.choices}
    for key, value in v.best.overrides.items():
        set_dotted(rec.config, key, value)
        if key in by_key:
            by_key[key].value = value
            by_key[key].reason = f"--validate: {v.reason}"
    sign = "higher" if v.higher_is_better else "lower"
    rec.validation_table = [
        f"--validate: {len(v.trials)} trials of {v.steps} steps on {v.train_rows:,} training rows, scored "
        f"on {v.heldout_rows:,} held-out training rows ({v.metric}, {sign} is better); "
        f"{v.seconds:.0f} s of a {v.budget_s:.0f} s budget, measured",
        *table_lines(v),
        v.reason,
    ]
