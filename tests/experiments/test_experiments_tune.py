"""`loralab recommend --validate`'s engine (experiments/tune.py): a short study of the recommendation
within a time budget, on a held-out slice of the training file (never the test file).

One validation of a tiny BERT is run once for the module (about 4 `loralab train` processes); the
choice rule, the step planning, the rank scaling and the splits are tested as pure functions.
"""

from __future__ import annotations

import csv
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from train_fixtures import make_data, tiny_bert

from loralab.data import Row, read_rows
from loralab.errors import ConfigError
from loralab.experiments import tune
from loralab.experiments.jobs import Job
from loralab.experiments.tune import (
    BUDGET_STATUS,
    BudgetExecutor,
    Calibration,
    Trial,
    Validation,
    choose,
    plan_steps,
    rank_overrides,
    split_rows,
    table_lines,
    validate_recommendation,
    warmup_fraction,
    write_rows,
)

# Generous: the trials stop at 30 steps whatever the budget, so a larger one costs no time; it only
# keeps the test from failing on a machine that other work slows down.
BUDGET_S = 150.0


def recommendation(model: Path, train: Path, test: Path) -> dict[str, Any]:
    """A mapping shaped like `loralab recommend`'s YAML for the tiny classifier."""
    return {
        "model": {"name_or_path": str(model), "task": "seq-cls", "num_labels": 3, "torch_dtype": "float32"},
        "lora": {
            "enable": True,
            "config": {
                "task_type": "SEQ_CLS",
                "r": 4,
                "lora_alpha": 8,
                "lora_dropout": 0.0,
                "target_modules": ["query", "key", "value", "dense"],
            },
        },
        "data": {
            "train_file": str(train),
            "test_file": str(test),
            "text_field": "text",
            "label_field": "category",
            "max_length": 32,
        },
        "training_args": {
            "per_device_train_batch_size": 8,
            "gradient_accumulation_steps": 1,
            "learning_rate": 2e-2,
            "lr_scheduler_type": "cosine",
            "warmup_steps": 0.05,
            "num_train_epochs": 3,
            "use_cpu": True,
        },
    }


@pytest.fixture(scope="module")
def validated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Validation, dict[str, Any], Path, list[str]]:
    root = tmp_path_factory.mktemp("tune")
    model = tiny_bert(root / "model")
    train, _ = make_data(root / "data")
    # A test file no run could read (train refuses .xlsx): selecting on it would leak the test split.
    poison = root / "data" / "test.xlsx"
    poison.write_bytes(b"not a workbook")
    config = recommendation(model, train, poison)
    read: list[str] = []
    real_read_rows = tune.read_rows

    def spy(path: Any, **kwargs: Any) -> Any:
        read.append(str(path))
        return real_read_rows(path, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tune, "RANK_FACTORS", ())  # two more runs would double the test's time
        mp.setattr(tune, "read_rows", spy)
        v = validate_recommendation(config, budget_s=BUDGET_S, out_dir=root / "val", quiet=True)
    return v, config, root, read


def test_the_three_learning_rates_are_scored_within_the_budget(validated: Any) -> None:
    v, _config, _root, _read = validated
    assert [t.name for t in v.trials] == ["lr=1e-2", "lr=2e-2", "lr=4e-2"]
    assert all(t.status == "done" and t.metric is not None and t.seconds for t in v.trials), v.trials
    assert v.baseline.name == "lr=2e-2" and v.baseline.overrides == {}
    assert v.trials[0].overrides == {"training_args.learning_rate": 0.01}
    assert v.best in v.trials
    assert v.metric == "weighted_f1" and v.higher_is_better
    assert v.steps >= tune.MIN_STEPS
    assert v.seconds <= v.budget_s == BUDGET_S
    assert v.reason and str(v.heldout_rows) in v.reason
    assert (v.study_dir / "study.json").is_file()
    lines = table_lines(v)
    assert len(lines) == 4 and "weighted F1" in lines[0] and "(plain)" in "".join(lines)


def test_the_test_file_is_never_read(validated: Any) -> None:
    _v, config, root, read = validated
    poison = config["data"]["test_file"]
    assert poison not in read and read == [config["data"]["train_file"]]
    for path in (root / "val").rglob("*.yaml"):
        assert poison not in path.read_text(encoding="utf-8"), path


def test_heldout_and_pool_partition_the_training_file_stratified(validated: Any) -> None:
    v, config, root, _read = validated

    def rows(path: Path) -> Counter[tuple[str, str]]:
        with path.open(encoding="utf-8", newline="") as f:
            return Counter((r["text"], r["category"]) for r in csv.DictReader(f))

    heldout, pool = rows(root / "val" / "data" / "heldout.csv"), rows(root / "val" / "data" / "pool.csv")
    assert heldout + pool == rows(Path(config["data"]["train_file"]))
    assert sum(heldout.values()) == v.heldout_rows == 15  # 10% of 150
    labels = {label for _, label in heldout}
    assert labels == {label for _, label in pool} == {"card", "fee", "tax"}


def test_the_trials_keep_the_recommendations_schedule_and_batch(validated: Any) -> None:
    v, _config, root, _read = validated
    experiments = sorted((v.study_dir / "runs").glob("*/experiment.yaml"))
    assert len(experiments) == 3
    heldout = str(root / "val" / "data" / "heldout.csv")
    for path in experiments:
        exp = yaml.safe_load(path.read_text(encoding="utf-8"))
        args = exp["training_args"]
        assert args["lr_scheduler_type"] == "cosine" and args["warmup_steps"] == 0.05
        assert args["per_device_train_batch_size"] == 8 and args["gradient_accumulation_steps"] == 1
        assert args["max_steps"] == v.steps and args["eval_strategy"] == "no"
        assert exp["data"]["test_file"] == heldout and "validation_file" not in exp["data"]
        assert exp["tracking"] == {"backend": "none"}
        assert exp["lora"]["config"]["r"] == 4
    lrs = sorted(yaml.safe_load(p.read_text())["training_args"]["learning_rate"] for p in experiments)
    assert lrs == [0.01, 0.02, 0.04]


def test_a_budget_too_small_is_refused_naming_budget(tmp_path: Path, validated: Any) -> None:
    _v, config, _root, _read = validated
    start = time.monotonic()
    with pytest.raises(ConfigError) as e:
        validate_recommendation(config, budget_s=3, out_dir=tmp_path / "val", quiet=True)
    assert time.monotonic() - start < 3 + tune.STOP_GRACE_S
    assert e.value.problems[0].file == "--budget"
    assert "--budget" in e.value.problems[0].fix and "--validate" in e.value.problems[0].fix


# ---- pure functions ------------------------------------------------------------------------------


def trial(name: str, metric: float | None, status: str = "done") -> Trial:
    return Trial(name, {} if name == "plain" else {"x": name}, metric, 1.0, status)


def pick(trials: list[Trial], metric: str = "weighted_f1") -> tuple[str, str]:
    best, reason = choose(
        trials,
        trials[0],
        metric=metric,
        higher_is_better=metric != "perplexity",
        heldout_rows=1000,
        steps=120,
    )
    return best.name, reason


def test_the_plain_recommendation_is_kept_unless_beaten_by_a_clear_margin() -> None:
    assert pick([trial("plain", 0.800), trial("a", 0.804)])[0] == "plain"  # 0.4 point: noise
    name, reason = pick([trial("plain", 0.800), trial("a", 0.818), trial("b", 0.810)])
    assert name == "a"
    assert (
        reason
        == "a beat the plain plain by 1.8 points of weighted F1 on 1,000 held-out rows (120 steps per trial)"
    )
    assert pick([trial("plain", 0.8), trial("a", 0.8)])[0] == "plain"  # a tie keeps it
    assert pick([trial("plain", 0.9), trial("a", 0.8)])[0] == "plain"
    # perplexity: lower is better, 1% is the margin
    assert pick([trial("plain", 10.0), trial("a", 9.95)], "perplexity")[0] == "plain"
    name, reason = pick([trial("plain", 10.0), trial("a", 9.5)], "perplexity")
    assert name == "a" and "by 5.0% in perplexity (9.5 vs 10)" in reason
    assert pick([trial("plain", 10.0), trial("a", 11.0)], "perplexity")[0] == "plain"


def test_choice_when_trials_did_not_finish() -> None:
    assert pick([trial("plain", None, "failed"), trial("a", 0.5), trial("b", 0.6)])[0] == "b"
    name, reason = pick([trial("plain", None, "failed"), trial("a", None, BUDGET_STATUS)])
    assert name == "plain" and "no trial finished" in reason
    assert pick([trial("plain", 0.5), trial("a", None, "failed")])[0] == "plain"


def test_steps_are_planned_from_the_measured_times() -> None:
    cal = Calibration(overhead_s=10.0, step_s=0.1, study_s=2.0)
    # 900 s: room for all five trials; the one pass over the pool caps the steps
    assert plan_steps(cal, budget_s=900, elapsed_s=15, max_steps=500, n_lr=3, n_rank=2) == (500, 5)
    steps, n = plan_steps(cal, budget_s=900, elapsed_s=15, max_steps=10_000, n_lr=3, n_rank=2)
    assert n == 5 and 15 + 2 * 2 + 5 * (10 + steps * 0.1) <= 900 / 1.1
    # a budget where five trials would get under 60 steps each: the learning rates alone
    steps, n = plan_steps(cal, budget_s=100, elapsed_s=15, max_steps=10_000, n_lr=3, n_rank=2)
    assert n == 3 and steps >= tune.MIN_STEPS and 15 + 2 + 3 * (10 + steps * 0.1) <= 100 / 1.1
    with pytest.raises(ConfigError) as e:
        plan_steps(cal, budget_s=50, elapsed_s=15, max_steps=10_000, n_lr=3, n_rank=2)
    p = e.value.problems[0]
    assert p.file == "--budget" and "needs at least 62 s on this machine" in p.message
    assert p.fix == "pass --budget 2m or drop --validate"


def test_rank_trials_scale_alpha_with_r() -> None:
    assert rank_overrides({"r": 16, "lora_alpha": 32}, 0.5) == {
        "lora.config.r": 8,
        "lora.config.lora_alpha": 16,
    }
    assert rank_overrides({"r": 16, "lora_alpha": 32}, 2.0) == {
        "lora.config.r": 32,
        "lora.config.lora_alpha": 64,
    }
    # rsLoRA scales by alpha / sqrt(r)
    assert rank_overrides({"r": 16, "lora_alpha": 32, "use_rslora": True}, 2.0) == {
        "lora.config.r": 32,
        "lora.config.lora_alpha": 45.25,
    }
    assert rank_overrides({"r": 1, "lora_alpha": 2}, 0.5) is None


def test_warmup_becomes_a_fraction_of_the_trial() -> None:
    assert warmup_fraction({"warmup_steps": 0.03}, 1000, 32) == 0.03
    assert warmup_fraction({"warmup_ratio": 0.1}, 1000, 32) == 0.1
    # 10 steps of a 3-epoch run of 32 steps per epoch
    assert warmup_fraction({"warmup_steps": 10, "num_train_epochs": 3}, 1024, 32) == pytest.approx(10 / 96)
    assert warmup_fraction({}, 1000, 32) == 0.0


def rows_of(n: int, labels: tuple[str, ...] = ("a", "b")) -> list[Row]:
    return [
        Row(i + 2, {"text": f"t{i}", "y": labels[i % len(labels)]}, f"t{i}", labels[i % len(labels)])
        for i in range(n)
    ]


def test_split_sizes_by_task() -> None:
    heldout, pool = split_rows(rows_of(30_000), "seq-cls")
    assert len(heldout) == 1000 and len(pool) == tune.POOL_CAP  # capped; the pool subsampled
    heldout, pool = split_rows(rows_of(1000), "lm")
    assert len(heldout) == 64 and len(pool) == 936
    assert split_rows(rows_of(1000), "lm") == (heldout, pool)  # deterministic
    with pytest.raises(ConfigError):
        split_rows(rows_of(5), "seq-cls")


def test_slices_are_written_in_the_original_format(tmp_path: Path) -> None:
    rows = rows_of(6)
    for fmt in ("csv", "jsonl"):
        path = write_rows(tmp_path / "slice", fmt, ["text", "y"], rows)
        back = read_rows(path, text_field="text", label_field="y")
        assert path.suffix == f".{fmt}" and [(r.text, r.label) for r in back.rows] == [
            (r.text, r.label) for r in rows
        ]


def test_the_budget_executor_stops_a_run_at_the_deadline(tmp_path: Path) -> None:
    ex = BudgetExecutor(time.monotonic() + 1.0)
    job = Job("slow-s42", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "slow.log")
    start = time.monotonic()
    ex.submit(job)
    (finished,) = ex.wait()
    assert finished.exit_code != 0 and time.monotonic() - start < 1.0 + tune.STOP_GRACE_S + 1
    assert ex.cut == {"slow-s42"} and ex.running() == 0
    ex.submit(Job("late-s42", [sys.executable, "-c", "pass"], tmp_path / "late.log"))  # after the deadline
    assert ex.running() == 1 and [f.job.id for f in ex.wait()] == ["late-s42"] and "late-s42" in ex.cut
