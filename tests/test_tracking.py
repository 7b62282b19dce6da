"""The tracking-store check: a dead server or an unwritable store fails fast and clearly."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from benchmarks.errors import BenchmarkError, TrackingError
from benchmarks.reporting.tracking import check_tracking_uri, mask_credentials, tracking_uri_source


@pytest.fixture(autouse=True)
def _no_proxy_no_tracking_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests to 127.0.0.1 go straight to the test servers; no URI leaks in from outside."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def _free_port() -> int:
    """A local port with nothing listening on it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _serve(status_by_path: dict[str, int], requested: list[str]) -> ThreadingHTTPServer:
    """An HTTP server on 127.0.0.1 answering each path with a status (404 when unlisted)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requested.append(self.path)
            status = status_by_path.get(self.path, 404)
            body = b"OK" if status == 200 else b"no"
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


StartServer = Callable[[dict[str, int]], tuple[str, list[str]]]


@pytest.fixture
def server_factory() -> Iterator[StartServer]:
    """Start local HTTP servers: ``start({"/health": 200})`` -> (URI, paths requested)."""
    servers: list[ThreadingHTTPServer] = []

    def start(status_by_path: dict[str, int]) -> tuple[str, list[str]]:
        requested: list[str] = []
        servers.append(_serve(status_by_path, requested))
        return f"http://127.0.0.1:{servers[-1].server_address[1]}", requested

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_dead_server_from_the_environment_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    uri = f"http://127.0.0.1:{_free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    started = time.perf_counter()
    with pytest.raises(TrackingError) as raised:
        check_tracking_uri(uri)
    assert time.perf_counter() - started < 3.0
    message = str(raised.value)
    assert isinstance(raised.value, BenchmarkError)
    assert uri in message and "MLFLOW_TRACKING_URI environment variable" in message
    assert "connection refused" in message and "unset MLFLOW_TRACKING_URI" in message
    assert "start the tracking server" in message and "sqlite:///mlflow.db" in message


def test_dead_server_from_the_flag_names_the_flag() -> None:
    uri = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(TrackingError) as raised:
        check_tracking_uri(uri, source=tracking_uri_source(uri))
    message = str(raised.value)
    assert "--tracking-uri flag" in message and "environment variable" not in message


def test_server_answering_health_passes(server_factory: StartServer) -> None:
    uri, requested = server_factory({"/health": 200})
    check_tracking_uri(uri + "/")
    assert requested == ["/health"]


def test_server_without_health_endpoint_counts_as_reachable(server_factory: StartServer) -> None:
    uri, requested = server_factory({})
    check_tracking_uri(uri)
    assert requested == ["/health"]


def test_server_answering_5xx_fails(server_factory: StartServer) -> None:
    uri, _ = server_factory({"/health": 503})
    with pytest.raises(TrackingError, match="answered HTTP 503"):
        check_tracking_uri(uri)


def test_server_that_never_answers_times_out() -> None:
    with socket.socket() as silent:  # the kernel accepts connections; nobody answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.perf_counter()
        with pytest.raises(TrackingError, match=r"no answer from .+ within 1 s"):
            check_tracking_uri(uri, timeout_s=1)
        elapsed = time.perf_counter() - started
    assert 0.9 < elapsed < 3.0


def test_credentials_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    port = _free_port()
    uri = f"http://alice:s3cret@127.0.0.1:{port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(TrackingError) as raised:
        check_tracking_uri(uri)
    message = str(raised.value)
    assert f"http://***@127.0.0.1:{port}" in message
    assert "s3cret" not in message and "alice" not in message


def test_server_with_credentials_in_the_uri_is_reached(server_factory: StartServer) -> None:
    uri, requested = server_factory({"/health": 200})
    check_tracking_uri(uri.replace("http://", "http://alice:s3cret@"))
    assert requested == ["/health"]


def test_mask_credentials_leaves_other_uris_alone() -> None:
    assert mask_credentials("https://u:p@host:5000/x") == "https://***@host:5000/x"
    assert mask_credentials("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"


def test_sqlite_in_a_missing_folder_fails_naming_it(tmp_path: Path) -> None:
    folder = tmp_path / "no" / "such"
    with pytest.raises(TrackingError) as raised:
        check_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}", source="flag")
    message = str(raised.value)
    assert str(folder) in message and "does not exist" in message
    assert f"mkdir -p {folder}" in message


def test_sqlite_in_tmp_path_passes(tmp_path: Path) -> None:
    check_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert not (tmp_path / "mlflow.db").exists()  # checked, not created


def test_file_store_under_a_file_fails(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(TrackingError, match="is not a folder"):
        check_tracking_uri(f"file://{blocker / 'mlruns'}")


def test_file_store_not_created_yet_passes(tmp_path: Path) -> None:
    check_tracking_uri(str(tmp_path / "new" / "mlruns"))
    check_tracking_uri(f"file://{tmp_path / 'mlruns'}")


def test_other_schemes_are_not_checked() -> None:
    check_tracking_uri("databricks://profile", timeout_s=0.01)
