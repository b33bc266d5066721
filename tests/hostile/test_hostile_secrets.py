"""Secrets and tracking faults (issue 10, C): a password in `tracking.uri` or a hub token in
training_args reaches no file and no log line, the tracking server still gets the credentials, and a
tracking server that is down or hangs turns tracking off within seconds, with the reason as a note."""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from train_fixtures import experiment_yaml, make_data, tiny_bert

from loralab.config import load_experiment
from loralab.io import redact_secrets, redact_uri, uri_credentials
from loralab.train import callbacks
from loralab.train.callbacks import MLflowCallback
from loralab.train.run import set_status, train
from loralab.train.tracking import mlflow_callback, unreachable

PASSWORD = "s3cretpw"
HUB_TOKEN = "hf_SECRETxyz123"

REDACT = [
    # (text loralab is about to write or print, what it writes)
    ("http://alice:s3cretpw@host/", "http://***@host/"),
    ("https://alice:s3cretpw@mlflow.example.com:8443/api", "https://***@mlflow.example.com:8443/api"),
    ("http://alice:p@ss@host:5000/x", "http://***@host:5000/x"),  # a raw "@" in the password
    ("http://alice:p%40ss@host/", "http://***@host/"),
    ("https://ghp_tokenonly@host/", "https://***@host/"),  # a token as the user name
    ("postgresql+psycopg2://ml:pw@db:5432/mlflow", "postgresql+psycopg2://***@db:5432/mlflow"),
    ("https://bucket.s3/x?X-Amz-Signature=abcdef&part=1", "https://bucket.s3/x?X-Amz-Signature=***&part=1"),
    ("http://host/api?token=abc#frag", "http://host/api?token=***#frag"),
    ("http://host/api?user=a&password=b", "http://host/api?user=a&password=***"),
    (
        "ConnectionError: HTTPConnectionPool(host='h', port=5000): Max retries exceeded with url "
        "http://alice:s3cretpw@h:5000/api/2.0/mlflow/runs/create",
        "ConnectionError: HTTPConnectionPool(host='h', port=5000): Max retries exceeded with url "
        "http://***@h:5000/api/2.0/mlflow/runs/create",
    ),
    ("two: http://a:b@x/ and https://c:d@y/", "two: http://***@x/ and https://***@y/"),
    # not secrets: left as they are
    ("sqlite:////home/alice/mlflow.db", "sqlite:////home/alice/mlflow.db"),
    ("http://host/p?email=alice@example.com", "http://host/p?email=alice@example.com"),
    ("mail alice@example.com", "mail alice@example.com"),
    ("http://host:5000/", "http://host:5000/"),
    ("databricks://profile", "databricks://profile"),
]


@pytest.mark.parametrize(("text", "written"), REDACT)
def test_redact_uri(text: str, written: str) -> None:
    assert redact_uri(text) == written
    assert redact_secrets(text) == written
    assert redact_uri(written) == written  # redacting twice changes nothing


def test_redact_secrets_in_nested_config() -> None:
    config = {
        "tracking": {"uri": "http://alice:s3cretpw@host/", "backend": "mlflow"},
        "training_args": {
            "hub_token": HUB_TOKEN,
            "learning_rate": 2e-4,
            "use_auth_token": True,  # a switch, not a secret
            "push_to_hub": False,
        },
        "model": {"pad_token": "<|endoftext|>", "eos_token": "</s>", "token": "hf_abc"},
        "deepspeed": {"aws_secret_access_key": "AKIA", "mlflow_password": "x", "password": ""},
        "notes": ["ok", ("tuple", "http://u:p@h/")],
    }
    copy = json.loads(json.dumps(config, default=list))
    out = redact_secrets(config)
    assert out == {
        "tracking": {"uri": "http://***@host/", "backend": "mlflow"},
        "training_args": {
            "hub_token": "***",
            "learning_rate": 2e-4,
            "use_auth_token": True,
            "push_to_hub": False,
        },
        "model": {"pad_token": "<|endoftext|>", "eos_token": "</s>", "token": "***"},
        "deepspeed": {"aws_secret_access_key": "***", "mlflow_password": "***", "password": ""},
        "notes": ["ok", ("tuple", "http://***@h/")],
    }
    assert json.loads(json.dumps(config, default=list)) == copy  # the input is not changed


CREDENTIALS = [
    # (tracking.uri, what MLflow connects to, user, password)
    ("http://alice:s3cretpw@host:5000/", "http://host:5000/", "alice", "s3cretpw"),
    ("http://alice:p%40ss%3Aw@host/", "http://host/", "alice", "p@ss:w"),
    ("http://alice:p@ss@host/", "http://host/", "alice", "p@ss"),
    ("https://tokenonly@host/", "https://host/", "tokenonly", None),
    ("http://***@host/", "http://host/", None, None),  # a run's redacted config.yaml read back
    ("http://host/", "http://host/", None, None),
    ("sqlite:///x.db", "sqlite:///x.db", None, None),
]


@pytest.mark.parametrize(("uri", "bare", "user", "password"), CREDENTIALS)
def test_uri_credentials(uri: str, bare: str, user: str | None, password: str | None) -> None:
    assert uri_credentials(uri) == (bare, user, password)


def test_status_error_is_redacted(tmp_path: Path) -> None:
    set_status(tmp_path, "failed", error=f"OSError: cannot reach http://alice:{PASSWORD}@host/api")
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["error"] == "OSError: cannot reach http://***@host/api"


def test_mlflow_failure_message_is_redacted(capfd: pytest.CaptureFixture[str]) -> None:
    cb = MLflowCallback("http://host/", "exp", "run", {})

    def fail() -> None:
        raise ConnectionError(f"Max retries exceeded with url: http://alice:{PASSWORD}@host/api/2.0/x")

    cb._guard(fail)
    assert cb.failed == "ConnectionError: Max retries exceeded with url: http://***@host/api/2.0/x"
    err = capfd.readouterr().err
    assert "MLflow tracking disabled" in err and "http://***@host/api/2.0/x" in err and PASSWORD not in err


# ---- tracking servers that are down ------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hostile-secrets")
    model = tiny_bert(root / "model")
    train_csv, test_csv = make_data(root / "data")
    return {"root": root, "model": model, "train": train_csv, "test": test_csv}


@pytest.fixture
def clean_mlflow_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tracking sets MLFLOW_* variables for the process; each test gets them back as they were."""
    for name in (
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
        "MLFLOW_TRACKING_URI",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
        "MLFLOW_HTTP_REQUEST_TIMEOUT",
    ):
        monkeypatch.setenv(name, "")  # recorded, so that teardown removes what the test set
        monkeypatch.delenv(name)


def _tracking_config(tiny: dict[str, Path], folder: Path, uri: str, extra_args: str = "") -> Path:
    cfg = experiment_yaml(folder, tiny["model"], tiny["train"], tiny["test"], epochs=1)
    text = cfg.read_text(encoding="utf-8").replace("tracking:\n  backend: none", f"tracking:\n  uri: {uri}")
    cfg.write_text(text.replace("  use_cpu: true", "  use_cpu: true" + extra_args), encoding="utf-8")
    return cfg


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens there once the socket is closed


def test_unreachable_tracking_server_turns_tracking_off_at_once(
    tiny: dict[str, Path], tmp_path: Path, clean_mlflow_env: None
) -> None:
    port = _closed_port()
    cfg = load_experiment(_tracking_config(tiny, tmp_path, f"http://alice:{PASSWORD}@127.0.0.1:{port}/"))
    notes: list[str] = []
    t0 = time.perf_counter()
    cb = mlflow_callback(cfg, None, tmp_path / "run", notes)
    seconds = time.perf_counter() - t0
    assert cb is None
    assert seconds < 20  # MLflow's own retries took over 4 minutes; a refused connect is instant
    assert notes[-1] == (
        f"MLflow tracking is off for this run: http://127.0.0.1:{port}/: cannot reach 127.0.0.1:{port} "
        "within 3 s (Connection refused)"
    )
    assert not any(PASSWORD in n for n in notes)


PROBES = [
    # (uri, probed?) sqlite/file/databricks have no server to reach
    ("sqlite:///mlflow.db", False),
    ("file:///tmp/mlruns", False),
    ("databricks://profile", False),
    ("http://127.0.0.1:{closed}/", True),
    ("https://127.0.0.1:{closed}/", True),
    ("postgresql://u:p@127.0.0.1:{closed}/mlflow", True),
]


@pytest.mark.parametrize(("uri", "probed"), PROBES)
def test_which_uris_are_probed(uri: str, probed: bool) -> None:
    down = unreachable(uri.format(closed=_closed_port()))
    assert (down is not None) == probed
    assert down is None or ("Connection refused" in down and "p@" not in down)


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A server that accepts connections (the kernel's backlog) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


def test_a_server_that_never_answers_turns_tracking_off(
    tiny: dict[str, Path],
    tmp_path: Path,
    silent_server: int,
    clean_mlflow_env: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The leash tracking calls get (2 retries, 15 s per answer), shortened so the test takes seconds.
    monkeypatch.setitem(callbacks.HTTP_LIMITS, "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setitem(callbacks.HTTP_LIMITS, "MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    cfg = load_experiment(_tracking_config(tiny, tmp_path, f"http://127.0.0.1:{silent_server}/"))
    notes: list[str] = []
    t0 = time.perf_counter()
    cb = mlflow_callback(cfg, None, tmp_path / "run", notes)
    assert time.perf_counter() - t0 < 30
    assert cb is not None and cb.failed and not cb.active
    assert notes[-1].startswith("MLflow tracking failed and was turned off:")
    assert "MLFLOW_HTTP_REQUEST_TIMEOUT" not in os.environ  # the leash is lifted after each call


class _FakeMLflow(BaseHTTPRequestHandler):
    """Records each request's Authorization header and answers 404, as a proxy in front of a
    missing MLflow server would; the message MLflow raises quotes the URL it called."""

    seen: ClassVar[list[str | None]] = []

    def _answer(self) -> None:
        type(self).seen.append(self.headers.get("Authorization"))
        body = b"no MLflow here"
        self.send_response(404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def fake_mlflow() -> Iterator[tuple[int, list[str | None]]]:
    seen: list[str | None] = []
    handler = type("Handler", (_FakeMLflow,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1]), seen
    finally:
        server.shutdown()
        server.server_close()


def test_credentials_reach_the_server_and_nothing_else(
    tiny: dict[str, Path],
    tmp_path: Path,
    fake_mlflow: tuple[int, list[str | None]],
    clean_mlflow_env: None,
    capfd: pytest.CaptureFixture[str],
) -> None:
    port, seen = fake_mlflow
    uri = f"http://alice:{PASSWORD}@127.0.0.1:{port}/"
    cfg = _tracking_config(tiny, tmp_path, uri, extra_args=f"\n  hub_token: {HUB_TOKEN}")
    run_dir = tmp_path / "run"
    result = train(cfg, output=run_dir, quiet=False)
    assert result is not None
    # MLflow connected with the credentials (HTTP basic auth), taken from the URI
    basic = "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    assert seen and seen[0] == basic
    assert os.environ["MLFLOW_TRACKING_URI"] == f"http://127.0.0.1:{port}/"  # what MLflow exports
    # ... and they are in no file of the run and in no line loralab printed
    out, err = capfd.readouterr()
    for secret in (PASSWORD, HUB_TOKEN):
        assert secret not in out and secret not in err, secret
        for f in run_dir.rglob("*"):
            assert not f.is_file() or secret.encode() not in f.read_bytes(), (secret, f)
        assert not any(secret in n for n in result.notes)
    config = (run_dir / "config.yaml").read_text(encoding="utf-8")
    assert f"uri: http://***@127.0.0.1:{port}/" in config and "hub_token: '***'" in config
    notes = json.loads((run_dir / "record.json").read_text())["notes"]
    assert any("MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD" in n for n in notes)
    assert any(n.startswith("MLflow tracking failed and was turned off: ") for n in notes)
    assert "MLflow tracking disabled" in err  # the failure was said, without the password
    # The run's own config.yaml, given back to `train --resume`, connects without credentials
    # instead of sending "***" as a user name.
    assert uri_credentials(f"http://***@127.0.0.1:{port}/") == (f"http://127.0.0.1:{port}/", None, None)
