"""`train --check` on data and configs that cannot train (issue 10, A and B): never "preflight: ok".

Each case writes one hostile thing next to the tiny BERT of tests/train (64 positions, labels card /
fee / tax) and runs preflight without the twin step (the data and config checks are what is tested).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from rich.console import Console
from train_fixtures import experiment_yaml, make_data, tiny_bert

from loralab.config import load_experiment
from loralab.errors import ConfigError, Problem
from loralab.train import preflight
from loralab.train.findings import Finding
from loralab.train.preflight import PreflightReport, run_preflight
from loralab.train.report import print_preflight


@dataclass(frozen=True)
class Env:
    root: Path
    model: Path
    train: Path
    test: Path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    root = tmp_path_factory.mktemp("hostile_preflight")
    model = tiny_bert(root / "bert")
    train, test = make_data(root / "data")
    return Env(root, model, train, test)


def _config(
    env: Env, folder: Path, *, train: Path | None = None, test: Path | None = None, edit: str = ""
) -> Path:
    """The tests/train experiment on the tiny BERT, its files swapped and `edit` applied
    ("old=>new" pairs separated by "|")."""
    path = experiment_yaml(folder, env.model, train or env.train, test or env.test)
    text = path.read_text(encoding="utf-8")
    for pair in filter(None, edit.split("|")):
        old, new = pair.split("=>")
        assert old in text, old
        text = text.replace(old, new)
    path.write_text(text, encoding="utf-8")
    return path


def _write(folder: Path, name: str, data: bytes) -> Path:
    p = folder / name
    p.write_bytes(data)
    return p


def _utf16(env: Env, folder: Path) -> Path:
    return _write(folder, "train16.csv", env.train.read_text(encoding="utf-8").encode("utf-16"))


def _copy(env: Env, folder: Path) -> Path:
    return Path(shutil.copyfile(env.train, folder / "test_copy.csv"))


def _new_labels(rows: list[tuple[str, str]]) -> Callable[[Env, Path], Path]:
    def make(env: Env, folder: Path) -> Path:
        body = "".join(f"{t},{lab}\n" for t, lab in rows)
        return _write(folder, "test_new.csv", ("text,category\n" + body).encode())

    return make


@dataclass(frozen=True)
class Case:
    id: str
    check: str  # the finding's check key
    severity: str
    says: str  # a substring of the message
    train: Callable[[Env, Path], Path] | None = None
    test: Callable[[Env, Path], Path] | None = None
    edit: str = ""


CASES = [
    # A: files train cannot read
    Case("missing train file", "data.train_file", "error", "nope.csv", train=lambda e, f: f / "nope.csv"),
    Case("empty csv", "data.train_file", "error", "empty.csv",
         train=lambda e, f: _write(f, "empty.csv", b"")),
    Case("header only", "data.train_file", "error", "head.csv",
         train=lambda e, f: _write(f, "head.csv", b"text,category\n")),
    Case("missing label column", "data.label_field", "error", "'category'",
         train=lambda e, f: _write(f, "nolabel.csv", b"text,cat\ncard lost,card\nfee why,fee\n")),
    Case("UTF-16 csv", "data.train_file", "error", "UTF-16", train=_utf16),
    Case("parquet that is not parquet", "data.train_file", "error", "Parquet",
         train=lambda e, f: _write(f, "fake.parquet", b"text,category\ncard,card\n")),
    Case("every row unusable", "data.train_file", "error", "no usable rows",
         train=lambda e, f: _write(f, "nolabels.csv", b"text,category\ncard lost,\nfee why,\n")),
    Case("missing test file", "data.test_file", "error", "gone.csv", test=lambda e, f: f / "gone.csv"),
    Case("test file missing its label column", "data.label_field", "error", "test_nocol.csv",
         test=lambda e, f: _write(f, "test_nocol.csv", b"text,cat\ncard lost,card\n")),
    Case("missing validation file", "data.validation_file", "error", "val.csv",
         edit="  test_file:=>  validation_file: val.csv\n  test_file:"),
    Case("one class id written two ways", "data.train_file", "error", "1.0",
         train=lambda e, f: _write(f, "alias.csv", b"text,category\ncard lost,1\nfee why,1.0\ntax year,2\n")),
    # labels train refuses
    Case("num_labels above the data's", "data.num_labels", "error", "model.num_labels is 5",
         edit="num_labels: 3=>num_labels: 5"),
    Case("num_labels below the data's", "data.num_labels", "error", "label ids >= num_labels",
         edit="num_labels: 3=>num_labels: 2"),
    Case("one class only", "data.label_field", "error", "1 distinct label",
         train=lambda e, f: _write(f, "one.csv", b"text,category\ncard lost,card\nmy card,card\n"),
         edit="num_labels: 3=>num_labels: 2"),
    Case("no label_field", "data.label_field", "error", "not set", edit="  label_field: category\n=>"),
    Case("test labels all unseen", "data.test_file", "error", "no test row is left",
         test=_new_labels([("card lost", "loan"), ("fee why", "mortgage")])),
    Case("nothing to evaluate on", "data.test_file", "error", "nothing to evaluate",
         edit="  test_file:=>  # test_file:|  eval_strategy: epoch=>  eval_strategy: 'no'"),
    Case("language modelling without a response field", "data", "error", "needs a prompt and a response",
         edit="task: seq-cls=>task: causal-lm|  num_labels: 3\n=>|    task_type: SEQ_CLS\n=>"
         "|  label_field: category\n=>"),
    # B: longer than the model's positions (tiny BERT: max_position_embeddings 64)
    Case("max_length past the position table", "data.max_length", "error", "max_position_embeddings",
         edit="max_length: 32=>max_length: 100000"),
    Case("default max_length past the position table", "data.max_length", "error", "default",
         edit="  max_length: 32\n=>"),
    # warnings: the run trains, but its scores mislead
    Case("test file with the training file's content", "data.test_file", "warning", "same bytes", test=_copy),
    Case("test file is the training file", "data.test_file", "warning", "same bytes",
         test=lambda e, f: e.train),
    Case("test labels unseen in training", "data.test_file", "warning", "'loan'",
         test=_new_labels([("card lost", "card"), ("fee why", "loan")])),
    Case("some training rows skipped", "data.train_file", "warning", "skipped",
         train=lambda e, f: _write(f, "some.csv", e.train.read_bytes() + b"a text without a label,\n")),
]  # fmt: skip


def _run(env: Env, case: Case, folder: Path) -> PreflightReport:
    train = case.train(env, folder) if case.train else None
    test = case.test(env, folder) if case.test else None
    path = _config(env, folder, train=train, test=test, edit=case.edit)
    return run_preflight(load_experiment(path), device="cpu", with_twin=False)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_preflight_refuses_or_warns(env: Env, case: Case, tmp_path: Path) -> None:
    report = _run(env, case, tmp_path)
    hits = [f for f in report.findings if f.check == case.check and f.severity == case.severity]
    assert hits, report.lines()
    assert any(case.says in f.message for f in hits), [f.message for f in hits]
    assert report.ok == (case.severity != "error"), report.lines()
    # never the old "the check itself failed" warning that let preflight pass
    assert not any("check itself failed" in f.message for f in report.findings)


def test_the_valid_experiment_passes(env: Env, tmp_path: Path) -> None:
    report = run_preflight(load_experiment(_config(env, tmp_path)), device="cpu", with_twin=False)
    assert report.ok, report.lines()
    assert not [f for f in report.findings if f.severity != "info"], report.lines()


def test_a_check_that_cannot_run_is_an_error_with_its_whole_message(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def config_error(ctx: object) -> list[Finding]:
        raise ConfigError(
            [
                Problem("exp.yaml", "data.text_field", "field 'txt' is not a column", "did you mean 'text'?"),
                Problem(
                    "exp.yaml", "data.label_field", "field 'lab' is not a column", "did you mean 'category'?"
                ),
            ]
        )

    def bug(ctx: object) -> list[Finding]:
        raise RuntimeError("first line\nsecond line")

    monkeypatch.setattr(preflight, "check_offload", config_error)
    monkeypatch.setattr(preflight, "check_qlora", bug)
    report = run_preflight(load_experiment(_config(env, tmp_path)), device="cpu", with_twin=False)
    assert not report.ok
    by_check = {f.check: f for f in report.findings}
    # every problem of the ConfigError, with its key, file and fix
    assert by_check["data.text_field"].severity == "error"
    assert by_check["data.text_field"].fix == "did you mean 'text'?"
    assert "exp.yaml" in by_check["data.label_field"].message
    crashed = by_check["preflight.bug"]  # named after the function that broke
    assert (
        crashed.severity == "error" and "second line" in crashed.message and "RuntimeError" in crashed.message
    )
    assert "test_hostile_preflight.py" in crashed.message  # where it broke, for the bug report


def test_a_model_folder_without_tokenizer_files_is_an_error(env: Env, tmp_path: Path) -> None:
    """transformers 5 builds an empty BertTokenizer (its 5 special tokens) for a folder without
    tokenizer files: every word would train as [UNK]."""
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(env.model / "config.json", bare / "config.json")
    path = _config(env, tmp_path, edit=f"name_or_path: {env.model}=>name_or_path: {bare}")
    report = run_preflight(load_experiment(path), device="cpu", with_twin=False)
    found = [f for f in report.findings if f.check.startswith("tokenizer.")]
    assert found and found[0].severity == "error" and not report.ok, report.lines()
    assert "special tokens" in found[0].message


def test_a_tokenizer_larger_than_the_embedding_is_an_error(env: Env, tmp_path: Path) -> None:
    small = tmp_path / "small"
    shutil.copytree(env.model, small)
    config = json.loads((small / "config.json").read_text())
    config["vocab_size"] = 8  # the tokenizer has more ids than the embedding has rows
    (small / "config.json").write_text(json.dumps(config))
    path = _config(env, tmp_path, edit=f"name_or_path: {env.model}=>name_or_path: {small}")
    report = run_preflight(load_experiment(path), device="cpu", with_twin=False)
    found = [f for f in report.findings if f.check == "tokenizer.vocab_size"]
    assert found and found[0].severity == "error" and "vocab_size 8" in found[0].message, report.lines()


def test_printing_keeps_every_line_whole_and_literal() -> None:
    long_path = "/data/" + "very-long-folder-name/" * 6 + "train.csv"
    report = PreflightReport(
        [
            Finding(
                "data.train_file", "error", f"{long_path}: label '[/bold]' and '[red]x' seen", "fix [it]"
            ),
            Finding("data.test_file", "warning", "two\nlines", ""),
        ]
    )
    buf = io.StringIO()
    print_preflight(report, Console(file=buf, width=40, force_terminal=False))
    text = buf.getvalue()
    assert long_path in text  # not wrapped at 40 columns
    assert "'[/bold]'" in text and "'[red]x'" in text and "fix [it]" in text  # not read as markup
    assert "[data.train_file]" in text and "two\nlines" in text
    assert text.rstrip().endswith("preflight: would fail (1 error, 1 warning)")


def test_cli_check_exits_2_for_a_missing_train_file(env: Env, tmp_path: Path) -> None:
    path = _config(env, tmp_path, train=tmp_path / "nope.csv")
    r = subprocess.run(
        [sys.executable, "-m", "loralab", "train", str(path), "--check"],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 2, r.stdout + r.stderr
    assert "preflight: ok" not in r.stderr and "Traceback" not in r.stderr
    assert "data.train_file" in r.stderr and "nope.csv" in r.stderr
