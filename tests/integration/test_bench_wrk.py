"""bench.wrk's Lua script, run by the real wrk against an HTTP server on this machine: it POSTs
the body file as JSON, and the one line it prints parses (wrk.parse_output) into the counts the
server saw. Needs wrk (`apt-get install wrk`); fails without it under CI=true."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from autodep_celery.bench import wrk
from tests.integration.conftest import IN_CI


class Server(ThreadingHTTPServer):
    """Answers every third request 503, the others 200, and records what each request was."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.lock = threading.Lock()
        self.statuses: list[int] = []
        self.requests: set[tuple[str, str, str, bytes]] = set()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as wrk's connections expect
    server: Server

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with self.server.lock:
            status = 503 if len(self.server.statuses) % 3 == 2 else 200
            self.server.statuses.append(status)
            seen = (self.command, self.path, self.headers.get("Content-Type", ""), body)
            self.server.requests.add(seen)
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def test_script_posts_the_body_and_reports_what_the_server_answered(
    server: Server, tmp_path: Path
) -> None:
    if shutil.which("wrk") is None:
        if IN_CI:
            pytest.fail("wrk is missing (apt-get install wrk)")
        pytest.skip("wrk not installed (apt-get install wrk)")
    body = tmp_path / "body.json"
    body.write_bytes(b'{"data": {"Text": "hi"}, "inference_type": "TextToText"}')
    url = f"http://127.0.0.1:{server.server_address[1]}/inference"
    result = wrk.run(url, wrk.write_script(tmp_path), body, concurrency=2, duration_s=1)
    with server.lock:
        answered, failed = len(server.statuses), server.statuses.count(503)
        assert server.requests == {("POST", "/inference", "application/json", body.read_bytes())}
    # wrk counts the answers it read; as it stops, each connection may leave one unread
    assert result.requests > 30
    assert 0 <= answered - result.requests <= 2
    assert result.non2xx > 0 and 0 <= failed - result.non2xx <= 2
    assert result.errors == {
        "connect": 0,
        "read": 0,
        "write": 0,
        "status": result.non2xx,  # wrk's own count of 4xx/5xx agrees with the script's
        "timeout": 0,
    }
    assert 0.9 <= result.duration_s < 2
    assert result.req_per_s == pytest.approx((result.requests - result.non2xx) / result.duration_s)
    assert result.p50_ms is not None and result.p99_ms is not None and result.max_ms is not None
    assert 0 < result.p50_ms <= result.p99_ms <= result.max_ms
