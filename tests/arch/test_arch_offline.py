"""An unreachable hub costs a probe, not huggingface_hub's ~25 s of retries per lookup (issue 9).

No test here reaches a real network: the hub is a closed port or a silent socket on 127.0.0.1, and the
proxy/DNS cases replace the TCP probe. Times are generous bounds (the retries cost 25 s to minutes).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import huggingface_hub.constants as hf_constants
import pytest

from loralab.arch import resolve
from loralab.arch.bundled import bundled_ids
from loralab.arch.resolve import hub_load_kwargs, hub_reachable, offline_reason, resolve_model
from loralab.errors import ModelResolutionError

BOUND_S = 10.0


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def hub_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """HF_HUB_OFFLINE unset (so the probe decides), no proxy, and nothing remembered from other tests."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(resolve, "_RESOLVED", {})
    monkeypatch.setattr(resolve, "_PROBES", {})


@pytest.fixture
def closed_hub(hub_env: None, monkeypatch: pytest.MonkeyPatch) -> str:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    return endpoint


@pytest.fixture
def silent_hub(hub_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A hub that accepts connections and never answers (a proxy or firewall that swallows requests)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            held.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    # huggingface_hub froze HF_HUB_OFFLINE=1 (the suite's) when this module imported it, and gets it
    # back after the test. Without telemetry it skips its one-off agent lookup, which asks the real hub.
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(resolve, "HUB_TIMEOUT_S", 0.5)
    yield endpoint
    server.close()
    for conn in held:
        conn.close()


def test_closed_hub_non_bundled_id_fails_fast_naming_id_and_fix(closed_hub: str) -> None:
    start = time.perf_counter()
    with pytest.raises(ModelResolutionError) as exc:
        resolve_model("someorg/somemodel")
    assert time.perf_counter() - start < BOUND_S
    msg = exc.value.message()
    assert "\n" not in msg
    assert "'someorg/somemodel'" in msg
    assert f"{closed_hub} unreachable" in msg
    assert "fix: pass a local folder" in msg
    for model_id in bundled_ids():
        assert model_id in msg


def test_closed_hub_bundled_and_legacy_ids_fall_back_quickly(closed_hub: str) -> None:
    start = time.perf_counter()
    assert resolve_model("Qwen/Qwen3-0.6B").source == "bundled"
    gpt2 = resolve_model("gpt2")
    assert time.perf_counter() - start < BOUND_S
    assert gpt2.source == "bundled" and gpt2.alias_of == "openai-community/gpt2"


def test_silent_hub_is_asked_once_without_retries(silent_hub: str) -> None:
    start = time.perf_counter()
    with pytest.raises(ModelResolutionError, match=r"did not answer") as exc:
        resolve_model("someorg/somemodel")
    assert "someorg/somemodel" in exc.value.message()
    assert resolve_model("openai-community/gpt2").source == "bundled"
    with pytest.raises(ModelResolutionError, match=r"did not answer"):
        resolve_model("otherorg/othermodel")  # remembered: no second wait
    assert time.perf_counter() - start < BOUND_S


def test_probe_answer_is_reused_within_a_command(hub_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, int]] = []

    def fake_connects(host: str, port: int, timeout: float) -> bool:
        calls.append((host, port))
        return False

    monkeypatch.setattr(resolve, "_connects", fake_connects)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example")
    assert offline_reason() == "https://hub.example unreachable"
    assert not hub_reachable()
    assert calls == [("hub.example", 443)]


def test_a_proxy_is_probed_instead_of_the_hub(hub_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, int]] = []

    def fake_connects(host: str, port: int, timeout: float) -> bool:
        calls.append((host, port))
        return False

    monkeypatch.setattr(resolve, "_connects", fake_connects)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    why = offline_reason()
    assert why is not None and "through proxy http://proxy.example:3128" in why
    assert calls == [("proxy.example", 3128)]

    monkeypatch.setattr(resolve, "_PROBES", {})
    monkeypatch.setenv("NO_PROXY", "localhost,.example")
    offline_reason()
    assert calls[-1] == ("hub.example", 443)


def test_a_hanging_dns_lookup_does_not_stall_the_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    def hang(address: tuple[str, int], timeout: float) -> socket.socket:
        time.sleep(3)  # getaddrinfo ignores the socket timeout
        raise OSError("resolver gave up")

    monkeypatch.setattr(resolve.socket, "create_connection", hang)
    start = time.perf_counter()
    assert resolve._connects("hub.example", 443, 0.2) is False
    assert time.perf_counter() - start < 2


def test_hf_hub_offline_names_the_variable(hub_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    assert offline_reason() == "offline (TRANSFORMERS_OFFLINE)"
    monkeypatch.setenv("HF_HUB_OFFLINE", "true")
    assert offline_reason() == "offline (HF_HUB_OFFLINE)"


# ---- hub_load_kwargs: what the tokenizer / weights loaders pass to from_pretrained ----------------


def test_load_kwargs_of_a_local_folder_or_reachable_hub_are_empty(tmp_path: Path) -> None:
    assert hub_load_kwargs(str(tmp_path), what="tokenizer") == {}


def test_load_kwargs_fail_fast_for_an_uncached_id_when_the_hub_is_unreachable(closed_hub: str) -> None:
    start = time.perf_counter()
    with pytest.raises(ModelResolutionError) as exc:
        hub_load_kwargs("someorg/somemodel", what="tokenizer")
    assert time.perf_counter() - start < BOUND_S
    msg = exc.value.message()
    assert "\n" not in msg
    assert msg.startswith("cannot load the tokenizer of 'someorg/somemodel':")
    assert "unreachable" in msg and "local folder" in msg


def test_load_kwargs_use_the_hub_cache_offline(tmp_path: Path) -> None:
    (tmp_path / "hf-hub" / "models--some-org--cached-model").mkdir(parents=True)
    assert hub_load_kwargs("some-org/cached-model", what="weights") == {"local_files_only": True}
    with pytest.raises(ModelResolutionError, match=r"offline \(HF_HUB_OFFLINE\)"):
        hub_load_kwargs("some-org/other-model", what="weights")


def test_load_kwargs_point_a_legacy_id_at_its_cached_org_id(tmp_path: Path) -> None:
    (tmp_path / "hf-hub" / "models--openai-community--gpt2").mkdir(parents=True)
    with pytest.raises(ModelResolutionError) as exc:
        hub_load_kwargs("gpt2", what="weights")
    msg = exc.value.message()
    assert msg.startswith("cannot load the weights of 'gpt2': offline (HF_HUB_OFFLINE)")
    assert "the cache holds it as 'openai-community/gpt2', write that id" in msg
    assert "bundles its config only" in msg
