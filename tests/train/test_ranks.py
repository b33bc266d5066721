"""Processes of one distributed run must agree on the experiment and the data (issue 15): a node with a
stale config or data file is refused at start, naming the rank, host and what differs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from train_fixtures import experiment_yaml, make_data

from loralab.config import load_experiment
from loralab.train.ranks import RanksDisagree, check_ranks_agree, run_fingerprint


def _cfg(tmp_path: Path) -> Any:
    train_csv, test_csv = make_data(tmp_path / "data")
    return load_experiment(experiment_yaml(tmp_path, tmp_path / "model", train_csv, test_csv))


def test_same_config_and_data_agree(tmp_path: Path) -> None:
    mine = run_fingerprint(_cfg(tmp_path))
    assert sorted(mine) == ["config", "data.test_file", "data.train_file"]
    check_ranks_agree(mine, lambda obj: [obj, dict(obj)])  # two ranks, the same fingerprint: no error


def test_a_rank_with_other_data_is_refused(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    mine = run_fingerprint(cfg)
    stale = {**mine, "data.train_file": "0" * 64, "host": "node-b"}
    with pytest.raises(RanksDisagree) as e:
        check_ranks_agree(mine, lambda obj: [obj, stale])
    assert "rank 1 on node-b" in str(e.value) and "data.train_file" in str(e.value)
    assert "differs from rank 0 on " in str(e.value) and " in data.train_file. " in str(e.value)  # only that
    # another learning rate on rank 1: the resolved config's hash differs
    cfg.training_args["learning_rate"] = 1.0
    other = run_fingerprint(cfg)
    with pytest.raises(RanksDisagree, match=r"differs from rank 0 .* in config\. "):
        check_ranks_agree(mine, lambda obj: [obj, other])
