"""Clients that misbehave at the HTTP level against a real gunicorn web process: idle
connections, slow headers, stalled and trickled bodies, more connections than it holds, and
malformed HTTP that gunicorn answers itself. Other clients keep being served (within the read
timeout while every slot is taken), slow connections are closed, and every answer, gunicorn's
own included, is the JSON error shape.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from autodep_celery import embedded_redis, processes
from autodep_celery.config import BrokerSettings, ModelSettings, Settings, WebSettings
from tests.integration.conftest import IN_CI, Stack, Web, start_web

pytestmark = pytest.mark.fault

READ_TIMEOUT_S = 2.0
REQUEST_TIMEOUT_S = 3.0
CONNECTIONS = 60
"""Per web process: small, so that a test can take every slot."""
KEEPALIVE_S = 5.0
"""gunicorn's keepalive (web.gunicorn_conf): gevent's bound on reading one request's headers."""


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    tmp = tmp_path_factory.mktemp("slow")
    try:
        redis_child, url = embedded_redis.start(tmp / "redis", log_path=tmp / "redis.log")
    except RuntimeError as exc:
        if IN_CI:
            raise
        pytest.skip(f"no redis-server: {exc}")
    settings = Settings(
        broker=BrokerSettings(url=url),
        web=WebSettings(
            port=processes.free_port(),
            processes=1,
            connections=CONNECTIONS,
            read_timeout_s=READ_TIMEOUT_S,
            request_timeout_s=REQUEST_TIMEOUT_S,
        ),
        models=(ModelSettings(name="tiny", path=str(tmp / "absent.pt")),),
    )
    w = start_web(Stack(url, settings, Path(tmp), Path(tmp)), settings, "web-slow")
    try:
        yield w
    finally:
        w.child.stop()
        redis_child.stop()


def connect(web: Web) -> socket.socket:
    host, port = web.url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=30)
    return s


def read_all(s: socket.socket, timeout_s: float) -> bytes:
    """What the server sends until it closes the connection (or `timeout_s` passes)."""
    s.settimeout(timeout_s)
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def json_error(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"application/json" in head.lower(), raw[:300]
    return status, json.loads(body)


def test_idle_and_slow_connections_are_closed_and_others_served(web: Web) -> None:
    idle = [connect(web) for _ in range(CONNECTIONS)]
    slow_headers = [connect(web) for _ in range(CONNECTIONS)]
    for s in slow_headers:
        s.sendall(b"POST /inference HTTP/1.1\r\nHost: x\r\n")
    stalled_body = [connect(web) for _ in range(CONNECTIONS)]
    for s in stalled_body:
        s.sendall(
            b"POST /inference HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"data": '
        )
    # three times the connections the process holds: a new client waits for the reaping
    started = time.monotonic()
    answer = requests.get(web.url + "/health", timeout=30)
    waited = time.monotonic() - started
    assert answer.status_code == 200
    assert waited < KEEPALIVE_S + READ_TIMEOUT_S + 5, waited
    # every slow connection is closed by the server, a stalled body with a 408 in JSON
    for s in idle + slow_headers:
        assert read_all(s, KEEPALIVE_S + READ_TIMEOUT_S + 10) == b""
        s.close()
    for s in stalled_body:
        status, body = json_error(read_all(s, READ_TIMEOUT_S + 10))
        assert status == 408 and body["error"]["code"] == "request_timeout", body
        s.close()
    # and the server serves normally afterwards
    assert requests.get(web.url + "/health", timeout=5).status_code == 200


def test_a_trickled_body_is_cut(web: Web) -> None:
    s = connect(web)
    s.sendall(
        b"POST /inference HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000\r\n\r\n"
    )
    started = time.monotonic()
    limit = REQUEST_TIMEOUT_S + READ_TIMEOUT_S
    try:
        while time.monotonic() - started < limit + 10:
            s.sendall(b" ")  # one byte a half-second: each read is quick, the whole is not
            time.sleep(0.5)
    except (BrokenPipeError, ConnectionResetError):
        pass
    elapsed = time.monotonic() - started
    status, body = json_error(read_all(s, 5))
    assert status == 408, body
    assert elapsed < limit + 10
    s.close()


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 10000 + b"\r\n\r\n", 431),
        (
            b"POST /inference HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"zz\r\nab\r\n0\r\n\r\n",
            400,
        ),
        (b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n", 400),
        # gunicorn's own answer is 501; bad input is a 4xx (web.http_workers)
        (b"POST /inference HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: x\r\n\r\n{}", 400),
    ],
    ids=["request-line", "long-url", "big-header", "bad-chunk", "http-version", "unknown-coding"],
)
def test_gunicorn_errors_are_json(web: Web, raw: bytes, status: int) -> None:
    s = connect(web)
    s.sendall(raw)
    got, body = json_error(read_all(s, 10))
    s.close()
    assert got == status, body
    assert set(body["error"]) == {"code", "message"} and body["error"]["message"]
