"""`loralab evaluate RUN_DIR` reloads the saved adapter and reproduces the run's own test metrics;
its metrics equal scikit-learn's from the predictions it writes, which stay aligned with their inputs."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from train_fixtures import experiment_yaml, make_data, tiny_bert

from loralab.train.run import train


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("evalrun")
    model = tiny_bert(root / "model")
    train_csv, test_csv = make_data(root / "data")
    cfg = experiment_yaml(root, model, train_csv, test_csv)
    out = root / "run"
    assert train(cfg, output=out, quiet=True) is not None
    return out, test_csv


def _evaluate(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "loralab", "evaluate", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def test_evaluate_reproduces_the_runs_metrics(run: tuple[Path, Path]) -> None:
    from sklearn.metrics import accuracy_score, f1_score

    run_dir, test_csv = run
    p = _evaluate(str(run_dir), "--json")
    assert p.returncode == 0, p.stderr
    m = json.loads(p.stdout)
    trained = json.loads((run_dir / "metrics.json").read_text())
    for k in ("accuracy", "weighted_f1", "macro_f1", "micro_f1", "tail_f1"):
        assert m[k] == pytest.approx(trained[k], abs=1e-12), k
    assert m["ci"]["accuracy"]["low"] <= m["accuracy"] <= m["ci"]["accuracy"]["high"]
    with (run_dir / "eval-test" / "predictions.csv").open(encoding="utf-8") as f:
        preds = list(csv.DictReader(f))
    with test_csv.open(encoding="utf-8") as f:
        by_line = {i + 2: row for i, row in enumerate(csv.DictReader(f))}
    for row in preds:
        src = by_line[int(row["id"].rsplit(":", 1)[1])]
        assert (row["text"], row["gold"]) == (src["text"], src["category"])
    gold, pred = [r["gold"] for r in preds], [r["pred"] for r in preds]
    assert m["accuracy"] == pytest.approx(accuracy_score(gold, pred), abs=1e-12)
    assert m["macro_f1"] == pytest.approx(f1_score(gold, pred, average="macro"), abs=1e-12)


def test_evaluate_other_file_reports_unseen_labels(run: tuple[Path, Path], tmp_path: Path) -> None:
    run_dir, test_csv = run
    extra = tmp_path / "more.csv"
    extra.write_text(test_csv.read_text() + "my card was lost,card\nwhat is this,brand_new_label\n")
    p = _evaluate(str(run_dir), "--data", str(extra), "--json")
    assert p.returncode == 0, p.stderr
    m = json.loads(p.stdout)
    assert m["unseen_labels"] == {"brand_new_label": 1}
    assert m["n"] == 46  # 45 test rows + the new card row; the unseen one is reported, not scored
    assert (run_dir / "eval-more" / "metrics.json").exists()
