"""Hostile command lines (issue 10): damaged or planted run files for `evaluate RUN_DIR`, damaged run
files and unwritable --out for `report`, contradictory or missing arguments, counts of 0 or less, and
the stdlib errors a user can cause from the command line.

Every case runs `python -m loralab ...` as a user does and must exit 2 with one line per problem that
names the path (or flag) and a fix, and never a traceback or "internal error"."""

from __future__ import annotations

import csv
import errno
import json
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
import yaml
from train_fixtures import experiment_yaml, make_data, tiny_bert

from loralab.cli_errors import format_error, reading
from loralab.errors import InputError
from loralab.report import build_report, load_run
from loralab.train.run import train

ROOT = Path(__file__).resolve().parents[2]
PLAN_CONFIG = ROOT / "examples" / "seed002-gpt2-attention.yaml"
MARKER = "pickle-was-loaded"


def loralab(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "loralab", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        check=False,
    )


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hostile-cli")
    model = tiny_bert(root / "model")
    train_csv, test_csv = make_data(root / "data")
    cfg = experiment_yaml(root, model, train_csv, test_csv, epochs=1)
    assert train(cfg, output=root / "run", quiet=True) is not None
    return root / "run"


# --- how a run directory gets damaged -------------------------------------------------------------

Setup = Callable[[Path, Path], None]  # (copy of the finished run, a scratch folder)


def _weights(run: Path) -> Path:
    return run / "adapter" / "adapter_model.safetensors"


def _cut(keep: int | None = None, drop: int = 0) -> Setup:
    def setup(run: Path, _: Path) -> None:
        data = _weights(run).read_bytes()
        _weights(run).write_bytes(data[:keep] if keep is not None else data[: len(data) - drop])

    return setup


class _Touch:
    """Unpickling this creates MARKER in the working directory: proof that a pickle was loaded."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (open, (MARKER, "w"))


def _plant_pickle(name: str, remove_safetensors: bool) -> Setup:
    def setup(run: Path, _: Path) -> None:
        (run / "adapter" / name).write_bytes(pickle.dumps(_Touch()))
        if remove_safetensors:
            _weights(run).unlink()

    return setup


def _edit_adapter(change: str) -> Setup:
    def setup(run: Path, _: Path) -> None:
        import torch
        from safetensors.torch import load_file, save_file

        tensors = load_file(str(_weights(run)))
        key = sorted(k for k in tensors if "lora_A" in k)[0]
        if change == "rename":
            tensors[key.replace("lora_A", "lora_X")] = tensors.pop(key)
        else:
            tensors[key] = torch.zeros(7, 3)
        save_file(tensors, str(_weights(run)))

    return setup


def _write(rel: str, content: bytes | str) -> Setup:
    def setup(run: Path, _: Path) -> None:
        path = run / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")

    return setup


def _remove(rel: str) -> Setup:
    def setup(run: Path, _: Path) -> None:
        target = run / rel
        shutil.rmtree(target) if target.is_dir() else target.unlink()

    return setup


def _header_only(run: Path, _: Path) -> None:
    first = (run / "predictions.csv").read_text(encoding="utf-8").splitlines()[0]
    (run / "predictions.csv").write_text(first + "\n", encoding="utf-8")


def _scratch_file(name: str, content: bytes) -> Setup:
    def setup(_: Path, tmp: Path) -> None:
        (tmp / name).write_bytes(content)

    return setup


@dataclass(frozen=True)
class Case:
    """`args` may hold {run} (a damaged copy of the finished run) and {tmp} (a scratch folder)."""

    id: str
    args: tuple[str, ...]
    expect: tuple[str, ...]  # each appears in the one-line message ({run}/{tmp} filled in)
    setup: Setup | None = None
    lines: int = 1
    needs_run: bool = True


EVALUATE_RUN_DIR = [
    Case(
        "adapter-weights-missing",
        ("evaluate", "{run}"),
        ("{run}/adapter/adapter_model.safetensors", "missing"),
        _remove("adapter/adapter_model.safetensors"),
    ),
    Case("adapter-folder-missing", ("evaluate", "{run}"), ("{run}/adapter", "--resume"), _remove("adapter")),
    Case(
        "adapter-header-cut",
        ("evaluate", "{run}"),
        ("adapter_model.safetensors", "truncated"),
        _cut(keep=100),
    ),
    Case(
        "adapter-data-cut", ("evaluate", "{run}"), ("adapter_model.safetensors", "truncated"), _cut(drop=10)
    ),
    Case(
        "adapter-empty",
        ("evaluate", "{run}"),
        ("adapter_model.safetensors", "truncated: 0 bytes"),
        _cut(keep=0),
    ),
    Case(
        "pickle-instead-of-safetensors",
        ("evaluate", "{run}"),
        ("{run}/adapter/adapter_model.bin", "safetensors only"),
        _plant_pickle("adapter_model.bin", remove_safetensors=True),
    ),
    Case(
        "pickle-next-to-safetensors",
        ("evaluate", "{run}"),
        ("{run}/adapter/extra.pt", "pickle"),
        _plant_pickle("extra.pt", remove_safetensors=False),
    ),
    Case(
        "adapter-config-garbage",
        ("evaluate", "{run}"),
        ("{run}/adapter/adapter_config.json", "unreadable"),
        _write("adapter/adapter_config.json", "garbage"),
    ),
    Case(
        "adapter-tensor-renamed",
        ("evaluate", "{run}"),
        ("adapter_model.safetensors", "lacks 1 of"),
        _edit_adapter("rename"),
    ),
    Case(
        "adapter-tensor-reshaped",
        ("evaluate", "{run}"),
        ("adapter_model.safetensors", "do not fit"),
        _edit_adapter("reshape"),
    ),
    Case("tokenizer-missing", ("evaluate", "{run}"), ("{run}/tokenizer", "missing"), _remove("tokenizer")),
    Case(
        "tokenizer-garbage",
        ("evaluate", "{run}"),
        ("{run}/tokenizer", "cannot be loaded"),
        _write("tokenizer/tokenizer.json", "{"),
    ),
    Case("config-missing", ("evaluate", "{run}"), ("{run}/config.yaml", "missing"), _remove("config.yaml")),
    Case(
        "train-counts-array",
        ("evaluate", "{run}"),
        ("{run}/train_counts.json", "not a JSON object"),
        _write("train_counts.json", "[1]"),
    ),
    Case(
        "run-dir-missing",
        ("evaluate", "{tmp}/nothing"),
        ("{tmp}/nothing", "no such run directory"),
        needs_run=False,
    ),
    Case(
        "run-dir-is-a-file",
        ("evaluate", "{tmp}/f.txt"),
        ("{tmp}/f.txt", "is a file"),
        _scratch_file("f.txt", b"x"),
        needs_run=False,
    ),
]

EVALUATE_ARGUMENTS = [
    Case("evaluate-no-arguments", ("evaluate",), ("RUN_DIR or --predictions",), needs_run=False),
    Case(
        "run-dir-and-predictions",
        ("evaluate", "{run}", "--predictions", "{tmp}/p.csv"),
        ("{run}", "both given"),
    ),
    Case(
        "split-with-predictions",
        ("evaluate", "--predictions", "{tmp}/p.csv", "--split", "test"),
        ("--split", "does not apply"),
        needs_run=False,
    ),
    Case(
        "data-with-predictions",
        ("evaluate", "--predictions", "{tmp}/p.csv", "--data", "{tmp}/d.csv"),
        ("--data", "does not apply"),
        needs_run=False,
    ),
    Case("task-with-run-dir", ("evaluate", "{run}", "--task", "generation"), ("--task", "does not apply")),
    Case("rouge-with-run-dir", ("evaluate", "{run}", "--rouge-tokenizer", "char"), ("--rouge-tokenizer",)),
    Case(
        "data-and-split",
        ("evaluate", "{run}", "--data", "{tmp}/d.csv", "--split", "test"),
        ("--split", "--data"),
    ),
    Case(
        "unknown-task",
        ("evaluate", "--predictions", "{tmp}/p.csv", "--task", "regression"),
        ("--task", "regression"),
        needs_run=False,
    ),
    Case(
        "predictions-not-utf8",
        ("evaluate", "--predictions", "{tmp}/latin1.csv"),
        ("{tmp}/latin1.csv", "UTF-8"),
        _scratch_file("latin1.csv", "pred,gold\nété,a\n".encode("latin-1")),
        needs_run=False,
    ),
]

REPORT = [
    Case(
        "predictions-empty",
        ("report", "{run}"),
        ("{run}/predictions.csv", "empty"),
        _write("predictions.csv", ""),
    ),
    Case("predictions-header-only", ("report", "{run}"), ("{run}/predictions.csv", "no rows"), _header_only),
    Case(
        "predictions-not-utf8",
        ("report", "{run}"),
        ("{run}/predictions.csv", "not UTF-8"),
        _write("predictions.csv", b"\xff\xfeid,gold,pred\n"),
    ),
    Case(
        "predictions-broken-quote",
        ("report", "{run}"),
        ("{run}/predictions.csv", "not a readable CSV"),
        _write("predictions.csv", 'id,gold,pred\n"a,b\n'),
    ),
    Case(
        "metrics-not-json",
        ("report", "{run}"),
        ("{run}/metrics.json", "not valid JSON"),
        _write("metrics.json", '{"accuracy": '),
    ),
    Case(
        "metrics-empty", ("report", "{run}"), ("{run}/metrics.json", "empty file"), _write("metrics.json", "")
    ),
    Case(
        "metrics-array",
        ("report", "{run}"),
        ("{run}/metrics.json", "an array"),
        _write("metrics.json", "[1, 2]"),
    ),
    Case(
        "metrics-per-class-list",
        ("report", "{run}"),
        ("{run}/metrics.json", "per_class"),
        _write("metrics.json", '{"per_class": [1]}'),
    ),
    Case(
        "metrics-f1-text",
        ("report", "{run}"),
        ("{run}/metrics.json", "per_class.a.f1"),
        _write("metrics.json", '{"per_class": {"a": {"f1": "high"}}}'),
    ),
    Case(
        "record-not-json",
        ("report", "{run}"),
        ("{run}/record.json", "not valid JSON"),
        _write("record.json", "nope"),
    ),
    Case(
        "record-string", ("report", "{run}"), ("{run}/record.json", "a string"), _write("record.json", '"x"')
    ),
    Case(
        "labels-ids-not-integers",
        ("report", "{run}"),
        ("{run}/labels.json", "not integers"),
        _write("labels.json", '{"id2label": {"a": "card"}}'),
    ),
    Case(
        "log-not-utf8",
        ("report", "{run}"),
        ("{run}/train_log.jsonl", "not UTF-8"),
        _write("train_log.jsonl", b"\xff\n"),
    ),
    Case(
        "run-dir-is-a-file",
        ("report", "{tmp}/f.txt"),
        ("{tmp}/f.txt", "is a file"),
        _scratch_file("f.txt", b"x"),
        needs_run=False,
    ),
    Case(
        "run-dir-missing",
        ("report", "{tmp}/nothing"),
        ("{tmp}/nothing", "no such run directory"),
        needs_run=False,
    ),
    Case(
        "run-dir-without-metrics", ("report", "{run}"), ("{run}", "no metrics.json"), _remove("metrics.json")
    ),
    Case(
        "out-is-a-file",
        ("report", "{run}", "--out", "{tmp}/f.txt"),
        ("{tmp}/f.txt", "is a file"),
        _scratch_file("f.txt", b"x"),
    ),
    Case(
        "out-under-a-file",
        ("report", "{run}", "--out", "{tmp}/f.txt/sub"),
        ("{tmp}/f.txt/sub", "is a file"),
        _scratch_file("f.txt", b"x"),
    ),
    Case("out-unwritable", ("report", "{run}", "--out", "/proc/loralab-report"), ("/proc/loralab-report",)),
    Case(
        "out-report-md-is-a-folder",
        ("report", "{run}", "--out", "{tmp}/rep"),
        ("{tmp}/rep/report.md",),
        lambda _, tmp: (tmp / "rep" / "report.md").mkdir(parents=True),
    ),
]

COUNTS = [
    Case(
        "train-zero-processes",
        ("train", "{tmp}/x.yaml", "-n", "0"),
        ("--num-processes/-n", "1 or more"),
        needs_run=False,
    ),
    Case(
        "train-negative-processes",
        ("train", "{tmp}/x.yaml", "--num-processes", "-2"),
        ("--num-processes/-n", "-2"),
        needs_run=False,
    ),
    Case(
        "plan-zero-stage-7",
        ("plan", str(PLAN_CONFIG), "--zero-stage", "7"),
        ("--zero-stage", "0 to 3"),
        needs_run=False,
    ),
    Case("plan-zero-gpus", ("plan", str(PLAN_CONFIG), "--gpus", "0"), ("--gpus",), needs_run=False),
    Case(
        "plan-bad-rates",
        ("plan", str(PLAN_CONFIG), "--mfu", "2", "--tflops", "0", "--micro-batch", "0"),
        ("--mfu", "--tflops", "--micro-batch"),
        lines=3,
        needs_run=False,
    ),
    Case(
        "recommend-zero-gpus",
        ("recommend", "gpt2", "--gpu-mem", "24GiB", "--rows", "10", "--gpus", "0"),
        ("--gpus", "1 or more"),
        needs_run=False,
    ),
    Case(
        "recommend-zero-rows",
        ("recommend", "gpt2", "--gpu-mem", "24GiB", "--rows", "0"),
        ("--rows",),
        needs_run=False,
    ),
    Case(
        "modules-zero-labels",
        ("modules", "gpt2", "--task", "seq-cls", "--num-labels", "0"),
        ("--num-labels",),
        needs_run=False,
    ),
]

STDLIB = [
    Case(
        "recommend-out-is-a-folder",
        ("recommend", "gpt2", "--gpu-mem", "24GiB", "--rows", "10", "--out", "{tmp}"),
        ("{tmp}",),
        needs_run=False,
    ),
    Case(
        "recommend-out-under-a-file",
        ("recommend", "gpt2", "--gpu-mem", "24GiB", "--rows", "10", "--out", "{tmp}/f.txt/rec.yaml"),
        ("{tmp}/f.txt",),
        _scratch_file("f.txt", b"x"),
        needs_run=False,
    ),
]

CASES = EVALUATE_RUN_DIR + EVALUATE_ARGUMENTS + REPORT + COUNTS + STDLIB


@pytest.fixture
def run_copy(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    case: Case = request.param
    if not case.needs_run:
        return tmp_path / "no-run"
    finished = request.getfixturevalue("finished_run")
    copy = tmp_path / "run"
    shutil.copytree(finished, copy, ignore=shutil.ignore_patterns("checkpoints", "report", "eval-*"))
    return copy


@pytest.mark.parametrize(
    ("case", "run_copy"), [(c, c) for c in CASES], ids=[c.id for c in CASES], indirect=["run_copy"]
)
def test_hostile_command_line_is_one_line_exit_2(case: Case, run_copy: Path, tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    if case.setup is not None:
        case.setup(run_copy, scratch)
    fill = {"run": str(run_copy), "tmp": str(scratch)}
    p = loralab(*(a.format(**fill) for a in case.args), cwd=scratch)
    err = p.stderr.strip()
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    assert "Traceback" not in p.stderr and "internal error" not in p.stderr, p.stderr[-2000:]
    lines = err.splitlines()
    assert len(lines) == case.lines, err  # nothing else on stderr: no library warning, no usage box
    assert lines[0].startswith("error: "), err
    assert all("(fix: " in line for line in lines), err
    for text in case.expect:
        assert text.format(**fill) in err, (text, err)
    assert not (scratch / MARKER).exists(), "a planted pickle was unpickled"


def test_the_planted_pickle_would_leave_its_marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unpickling the planted file (as torch.load(weights_only=False) would) creates the marker, so
    its absence after the pickle cases means nothing read the file."""
    monkeypatch.chdir(tmp_path)
    pickle.loads(pickle.dumps(_Touch()))
    assert (tmp_path / MARKER).exists()


def test_the_undamaged_run_still_evaluates_and_reports(finished_run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy, ignore=shutil.ignore_patterns("checkpoints"))
    p = loralab("evaluate", str(copy), "--json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["n"] == 45
    r = loralab("report", str(copy / "eval-test"), "--out", str(tmp_path / "rep"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "rep" / "report.html").is_file()


def test_labels_that_pandas_reads_as_missing_stay_labels(finished_run: Path, tmp_path: Path) -> None:
    """Labels "NA" and "None" and an empty prediction stay text, not NaN (which cannot be sorted
    against strings and used to crash the report)."""
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy, ignore=shutil.ignore_patterns("checkpoints"))
    with (copy / "predictions.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    rows[0]["gold"], rows[0]["pred"] = "NA", ""
    rows[1]["gold"], rows[1]["pred"] = "None", "NA"
    with (copy / "predictions.csv").open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    run = load_run(copy)
    assert list(run.predictions["gold"][:2]) == ["NA", "None"]
    assert list(run.predictions["pred"][:2]) == ["", "NA"]
    assert build_report([copy], tmp_path / "rep").html.is_file()


# --- the stdlib errors cli_errors maps, one line each, exit 2 ------------------------------------------


def _decode_error() -> UnicodeDecodeError:
    try:
        b"ok \xff".decode("utf-8")
    except UnicodeDecodeError as e:
        return e
    raise AssertionError


def _yaml_error() -> yaml.YAMLError:
    try:
        yaml.safe_load("a: [")
    except yaml.YAMLError as e:
        return e
    raise AssertionError


def _json_error() -> json.JSONDecodeError:
    try:
        json.loads("{")
    except json.JSONDecodeError as e:
        return e
    raise AssertionError


def _csv_error() -> csv.Error:
    try:
        list(csv.reader(['a,"b'], strict=True))
    except csv.Error as e:
        return e
    raise AssertionError


MAPPED: list[tuple[str, BaseException, tuple[str, ...]]] = [
    (
        "is-a-directory",
        IsADirectoryError(errno.EISDIR, "Is a directory", "/data/out"),
        ("/data/out", "is a folder"),
    ),
    (
        "not-a-directory",
        NotADirectoryError(errno.ENOTDIR, "Not a directory", "/data/f/x"),
        ("/data/f/x", "a file"),
    ),
    (
        "file-exists",
        FileExistsError(errno.EEXIST, "File exists", "/data/out"),
        ("/data/out", "already exists"),
    ),
    ("not-found-with-name", FileNotFoundError(errno.ENOENT, "No such file", "/data/x.csv"), ("/data/x.csv",)),
    ("not-found-without-name", FileNotFoundError("adapter weights"), ("not found", "adapter weights")),
    ("permission", PermissionError(errno.EACCES, "Permission denied", "/root/x"), ("/root/x", "permission")),
    ("disk-full", OSError(errno.ENOSPC, "No space left on device"), ("no space left",)),
    ("read-only", OSError(errno.EROFS, "Read-only file system", "/mnt/ro/x"), ("/mnt/ro/x", "read-only")),
    (
        "io-error-on-path",
        OSError(errno.EIO, "Input/output error", "/mnt/bad"),
        ("/mnt/bad", "Input/output error"),
    ),
    ("unicode", _decode_error(), ("not UTF-8", "0xff", "--debug")),
    ("yaml", _yaml_error(), ("not valid YAML", "line")),
    ("json", _json_error(), ("not valid JSON", "line 1")),
    ("csv", _csv_error(), ("not readable as CSV",)),
    ("click-usage", click.UsageError("give a RUN_DIR"), ("give a RUN_DIR",)),
]


@pytest.mark.parametrize(("exc", "expect"), [m[1:] for m in MAPPED], ids=[m[0] for m in MAPPED])
def test_user_caused_stdlib_errors_are_one_line_exit_2(exc: BaseException, expect: tuple[str, ...]) -> None:
    msg, code = format_error(exc)
    assert code == 2, msg
    assert msg.startswith("error: ") and "\n" not in msg, msg
    assert "(fix: " in msg or isinstance(exc, click.UsageError), msg
    for text in expect:
        assert text in msg, (text, msg)


@pytest.mark.parametrize(
    "exc",
    [RuntimeError("boom"), KeyError("x"), OSError("no errno, no file")],
    ids=["runtime", "key", "bare-oserror"],
)
def test_bugs_stay_internal_errors_with_the_debug_hint(exc: BaseException) -> None:
    msg, code = format_error(exc)
    assert code == 1 and msg.startswith("internal error:") and "--debug" in msg


@pytest.mark.parametrize(
    "exc",
    [_decode_error(), _json_error(), _yaml_error(), _csv_error()],
    ids=["unicode", "json", "yaml", "csv"],
)
def test_reading_names_the_file_that_a_parser_error_does_not(exc: BaseException) -> None:
    with pytest.raises(InputError) as info, reading(Path("/data/preds.csv")):
        raise exc
    msg, code = format_error(info.value)
    assert code == 2 and msg.startswith("error: /data/preds.csv: ") and "(fix: " in msg, msg
