"""`loralab compare`: runs side by side, built from three real 1-epoch runs of a tiny BERT (different
rank, different learning rate) and copies of them with one file edited; every number is checked
against the run's own files or against report/compare.py on the same pair."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
from train_fixtures import experiment_yaml, make_data, tiny_bert

from loralab.report.compare import paired_bootstrap
from loralab.report.load import ReportError, load_run, load_runs
from loralab.report.runs_table import build_runs_table, flatten
from loralab.train.run import train

N = 200  # resamples: enough to exercise the code, fast on a shared CPU


def _flat_source(path: Path) -> dict[str, Any]:
    return flatten(yaml.safe_load(path.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("compare")
    model = tiny_bert(root / "model")
    train_csv, test_csv = make_data(root / "data")
    out: dict[str, Any] = {"root": root, "sources": {}}
    for name, lr, rank in (("base", 2e-2, 4), ("rank8", 2e-2, 8), ("lr01", 1e-2, 4)):
        folder = root / name
        folder.mkdir()
        cfg = experiment_yaml(folder, model, train_csv, test_csv, epochs=1, lr=lr)
        cfg.write_text(cfg.read_text(encoding="utf-8").replace("r: 4\n", f"r: {rank}\n"), encoding="utf-8")
        train(cfg, output=root / f"run-{name}", quiet=True)
        out[name] = root / f"run-{name}"
        out["sources"][name] = _flat_source(cfg)
    return out


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("checkpoints"))
    return dst


def _edit_yaml(path: Path, key: str, value: Any) -> None:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    node = data
    *parents, last = key.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    path.write_text(yaml.safe_dump(data), encoding="utf-8")


def test_differing_keys_are_exactly_the_ones_changed(runs: dict[str, Any]) -> None:
    src = runs["sources"]
    expected = {k for k in src["base"].keys() | src["rank8"].keys() | src["lr01"].keys()
                if len({json.dumps(src[n].get(k)) for n in ("base", "rank8", "lr01")}) > 1}  # fmt: skip
    assert expected == {"lora.config.r", "training_args.learning_rate"}  # the fixture did what it says
    table = build_runs_table(load_runs([runs["base"], runs["rank8"], runs["lr01"]]), n_resamples=N)
    assert set(table.differing) == expected
    assert table.differing["lora.config.r"] == [4, 8, 4]
    assert table.differing["training_args.learning_rate"] == [0.02, 0.02, 0.01]
    pair = build_runs_table(load_runs([runs["base"], runs["rank8"]]), n_resamples=N)
    assert set(pair.differing) == {"lora.config.r"}


def test_cost_columns_come_from_the_run_files(runs: dict[str, Any]) -> None:
    dirs = [runs["base"], runs["rank8"]]
    table = build_runs_table(load_runs(dirs), n_resamples=N)
    for col, d in zip(table.runs, dirs, strict=True):
        record = json.loads((d / "record.json").read_text(encoding="utf-8"))
        assert col.adapter_bytes == (d / "adapter" / "adapter_model.safetensors").stat().st_size
        assert col.trainable_params == record["lora_params"]
        assert col.train_seconds == pytest.approx(record["training_time_hours"] * 3600)
        assert col.peak_memory_gb == record["peak_memory_gb_per_gpu"]
        assert col.peak_memory_device == record["peak_memory_device"] == "cpu"
        metrics = json.loads((d / "metrics.json").read_text(encoding="utf-8"))
        assert col.metrics["weighted_f1"]["value"] == metrics["weighted_f1"]
        assert col.metrics["weighted_f1"]["ci"] == metrics["ci"]["weighted_f1"]
        assert [b["mean_f1"] for b in col.buckets] == [b["mean_f1"] for b in metrics["buckets"]]
    # rank 8 doubles the LoRA matrices (the copied classifier stays): more parameters, a bigger file
    assert table.runs[1].trainable_params > table.runs[0].trainable_params
    assert table.runs[1].adapter_bytes > table.runs[0].adapter_bytes


@pytest.mark.parametrize("metric", ["weighted_f1", "accuracy"])
def test_paired_bootstrap_equals_report_compare(runs: dict[str, Any], metric: str) -> None:
    loaded = load_runs([runs["base"], runs["rank8"], runs["lr01"]])
    table = build_runs_table(loaded, metric=metric, reference="run-lr01", n_resamples=N, seed=3)
    assert table.reference == "run-lr01"
    ref = loaded[2]
    for other in (loaded[0], loaded[1]):
        (expected,) = paired_bootstrap(ref, other, (metric,), N, 3)
        (got,) = [d for d in table.differences if d.run_b == other.name]
        assert got == expected
    assert {d.run_a for d in table.differences} == {"run-lr01"}


def test_effective_batch_warning_only_when_it_differs(runs: dict[str, Any], tmp_path: Path) -> None:
    same = build_runs_table(load_runs([runs["base"], runs["rank8"], runs["lr01"]]), n_resamples=N)
    assert not [w for w in same.warnings if "effective batch" in w]
    accum = _copy(runs["base"], tmp_path / "accum2")
    _edit_yaml(accum / "config.yaml", "training_args.gradient_accumulation_steps", 2)
    table = build_runs_table(load_runs([runs["base"], accum]), n_resamples=N)
    (warning,) = [w for w in table.warnings if "effective batch" in w]
    assert "run-base 8 (8 x 1 x 1)" in warning and "accum2 16 (8 x 2 x 1)" in warning
    # 4 per device x 2 processes is the same effective batch as 8 x 1: like for like, no warning
    ddp = _copy(runs["base"], tmp_path / "ddp")
    _edit_yaml(ddp / "config.yaml", "training_args.per_device_train_batch_size", 4)
    record = json.loads((ddp / "record.json").read_text(encoding="utf-8"))
    (ddp / "record.json").write_text(json.dumps({**record, "world_size": 2}), encoding="utf-8")
    table = build_runs_table(load_runs([runs["base"], ddp]), n_resamples=N)
    assert table.runs[1].batch == {"micro": 4, "accumulation": 1, "processes": 2, "effective": 8}
    assert not [w for w in table.warnings if "effective batch" in w]


def test_data_warning_when_a_data_file_hash_differs(runs: dict[str, Any], tmp_path: Path) -> None:
    assert not build_runs_table(load_runs([runs["base"], runs["rank8"]]), n_resamples=N).warnings
    other = _copy(runs["base"], tmp_path / "otherdata")
    files = json.loads((other / "data_files.json").read_text(encoding="utf-8"))
    files["data.train_file"]["sha256"] = "0" * 64
    (other / "data_files.json").write_text(json.dumps(files), encoding="utf-8")
    (warning,) = build_runs_table(load_runs([runs["base"], other]), n_resamples=N).warnings
    assert "differ in data" in warning and "data.train_file" in warning and "data.test_file" not in warning


def test_bad_metric_or_reference_is_a_user_error(runs: dict[str, Any]) -> None:
    loaded = load_runs([runs["base"], runs["rank8"]])
    with pytest.raises(ReportError, match="--metric rouge"):
        build_runs_table(loaded, metric="rouge", n_resamples=N)
    with pytest.raises(ReportError, match="--reference nope: no such run"):
        build_runs_table(loaded, reference="nope", n_resamples=N)


def _loralab(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("loralab")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=120, check=False)


def test_cli_compare_json_and_table(runs: dict[str, Any]) -> None:
    p = _loralab("compare", str(runs["base"]), str(runs["rank8"]), "--json", "--metric", "accuracy")
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    (diff,) = data["differences"]
    (expected,) = paired_bootstrap(load_run(runs["base"]), load_run(runs["rank8"]), ("accuracy",))
    assert diff["diff"] == expected.diff and diff["low"] == expected.low and diff["high"] == expected.high
    assert data["differing_keys"] == {"lora.config.r": [4, 8]}
    p = _loralab("compare", str(runs["base"]), str(runs["rank8"]))
    assert p.returncode == 0, p.stderr
    assert "lora.config.r" in p.stdout and "weighted F1 vs ref" in p.stdout
    p = _loralab("compare", str(runs["base"]), str(runs["rank8"]), "--reference", "x")
    assert p.returncode == 2 and "--reference x: no such run" in p.stderr


def test_cli_compare_study_dir_uses_done_runs_by_id(runs: dict[str, Any], tmp_path: Path) -> None:
    study = {
        "name": "s",
        "runs": [
            {"name": "base", "phase": None, "model": "m", "seed": 42, "overrides": {}, "status": "done",
             "run_dir": str(runs["base"])},
            {"name": "broken", "phase": None, "model": "m", "seed": 42, "overrides": {}, "status": "failed",
             "run_dir": str(runs["lr01"])},
            {"name": "rank8", "phase": None, "model": "m", "seed": 42, "overrides": {}, "status": "done",
             "run_dir": str(runs["rank8"])},
        ],
    }  # fmt: skip
    (tmp_path / "study.json").write_text(json.dumps(study), encoding="utf-8")
    p = _loralab("compare", str(tmp_path), "--json")
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    assert [r["name"] for r in data["runs"]] == ["base-s42", "rank8-s42"]
    assert data["reference"] == "base-s42"
    p = _loralab("compare", str(tmp_path), str(runs["base"]))
    assert p.returncode == 2 and "is a study directory" in p.stderr


def test_a_run_without_config_makes_no_key_differ(runs: dict[str, Any], tmp_path: Path) -> None:
    bare = _copy(runs["base"], tmp_path / "bare")
    (bare / "config.yaml").unlink()
    table = build_runs_table(load_runs([runs["base"], runs["rank8"], bare]), n_resamples=N)
    assert table.differing == {"lora.config.r": [4, 8, None]}
    assert any("no readable config.yaml in bare" in n for n in table.notes)


def _generation_run(folder: Path, rouge_l: float, preds: list[str]) -> Path:
    folder.mkdir(parents=True)
    metrics = {"rouge1": rouge_l + 0.1, "rouge2": rouge_l - 0.1, "rougeL": rouge_l, "n": len(preds)}
    (folder / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    rows = ["id,text,gold,pred"] + [f"t.csv:{i + 2},doc {i},summary {i},{p}" for i, p in enumerate(preds)]
    (folder / "predictions.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def test_generation_runs_are_compared_by_value(runs: dict[str, Any], tmp_path: Path) -> None:
    a = _generation_run(tmp_path / "gen-a", 0.30, ["summary 0", "x", "y"])
    b = _generation_run(tmp_path / "gen-b", 0.35, ["summary 0", "summary 1", "y"])
    table = build_runs_table(load_runs([a, b]), metric="rougeL", n_resamples=N)
    assert table.differences == []
    assert [c.metrics["rougeL"]["value"] for c in table.runs] == [0.30, 0.35]
    assert any("rougeL is compared by value" in n for n in table.notes)
    # a classification metric never rescoring free text as labels
    mixed = build_runs_table(load_runs([runs["base"], a]), n_resamples=N)
    assert mixed.differences == [] and any("gen-a: not compared" in n for n in mixed.notes)


def test_labels_and_tracking_are_not_config_differences(runs: dict[str, Any], tmp_path: Path) -> None:
    renamed = _copy(runs["base"], tmp_path / "renamed")
    _edit_yaml(renamed / "config.yaml", "experiment.name", "study-run-2")
    _edit_yaml(renamed / "config.yaml", "tracking.uri", "sqlite:///elsewhere.db")
    assert build_runs_table(load_runs([runs["base"], renamed]), n_resamples=N).differing == {}
    _edit_yaml(renamed / "config.yaml", "experiment.phase", "attention")
    table = build_runs_table(load_runs([runs["base"], renamed]), n_resamples=N)
    assert table.differing == {"experiment.phase": ["(not set)", "attention"]}
