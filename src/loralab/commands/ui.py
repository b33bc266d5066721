"""`loralab ui`: MLflow's own UI on the store loralab tracks runs in.

The UI is MLflow's tracking server (`python -m mlflow server`). It ships only in the full `mlflow`
package (with flask and the UI's web build): `mlflow-skinny`, which `loralab[train]` installs for
tracking, has neither, and its `mlflow ui` fails with `ModuleNotFoundError: flask`. The full package
is the `ui` extra.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import FrameType

from rich.console import Console

from loralab.config.models import default_tracking_uri
from loralab.errors import LoralabError
from loralab.io import redact_uri

INSTALL_HINT = "pip install 'loralab[ui]'"


READY_TIMEOUT_S = 180.0


def store_uri(store: str | None) -> str:
    """A tracking URI from --store: a URI as given, a path to an SQLite file as `sqlite:///<abs path>`,
    nothing as `loralab train`'s default (`mlflow.db` in the working directory)."""
    if not store:
        return default_tracking_uri()
    if "://" in store:
        return store
    return f"sqlite:///{Path(store).expanduser().resolve()}"


def check_installed() -> None:
    """MLflow's UI server and its web build come with the full `mlflow` package only."""
    try:
        importlib.metadata.version("mlflow")
    except importlib.metadata.PackageNotFoundError:
        raise LoralabError(
            "MLflow's UI needs the full mlflow package (the installed mlflow-skinny has no UI server "
            f"and no flask): {INSTALL_HINT}"
        ) from None
    if importlib.util.find_spec("flask") is None:
        raise LoralabError(f"MLflow's UI needs flask, which is not installed: {INSTALL_HINT}")


def server_argv(uri: str, host: str, port: int) -> list[str]:
    # One worker: a viewer for one person starts in a third of the time of MLflow's default four.
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        uri,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


# The server is on this machine: an HTTP_PROXY in the environment must not see the probe.
_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _answers(url: str) -> bool:
    try:
        with _LOCAL.open(f"{url}/health", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def serve_ui(store: str | None, host: str, port: int, console: Console) -> int:
    """Run MLflow's server on the store until it exits or Ctrl-C; its exit code."""
    check_installed()
    uri = store_uri(store)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        console.print(
            f"[yellow]note:[/] {uri} does not exist yet: no run was tracked there "
            "(loralab train writes mlflow.db in the directory it runs in; give it with --store)"
        )
    if not _port_free(host, port):
        raise LoralabError(f"port {port} on {host} is in use (fix: loralab ui --port {port + 1})")
    url = f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}"
    console.print(f"MLflow UI on {redact_uri(uri)}: starting at {url} (Ctrl-C stops it)")
    if host not in ("127.0.0.1", "localhost"):
        console.print(
            "[yellow]note:[/] MLflow's security middleware answers only local Host headers unless "
            "mlflow server --allowed-hosts is set"
        )
    proc = subprocess.Popen(server_argv(uri, host, port))

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # a plain kill of `loralab ui` must not orphan the server

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while proc.poll() is None and time.monotonic() < deadline:
            if _answers(url):
                console.print(f"[green]ready:[/] open {url}")
                break
            time.sleep(0.5)
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        _stop(proc)
        signal.signal(signal.SIGTERM, old)
