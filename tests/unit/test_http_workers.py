"""The web tier's gunicorn response: the head leaves with the first body chunk, and every byte
on the wire is what gunicorn's own response writes (it is compared here, send by send, with a
fake socket and gunicorn's own parser and Response)."""

from __future__ import annotations

from typing import Any

import pytest
from gunicorn import util
from gunicorn.config import Config
from gunicorn.http.parser import RequestParser

from autodep_celery.web.http_workers import CoalescingResponse

pytestmark = pytest.mark.unit

GunicornResponse = CoalescingResponse.__bases__[0]


class Sock:
    """Records each sendall()."""

    def __init__(self) -> None:
        self.sends: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.sends.append(bytes(data))


@pytest.fixture(autouse=True)
def fixed_date(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(util, "http_date", lambda timestamp=None: "Mon, 07 Dec 2026 22:00:00 GMT")


def _serve(
    response_class: Any,
    request: bytes,
    status: str,
    headers: list[tuple[str, str]],
    body: list[bytes],
) -> list[bytes]:
    cfg = Config()
    req = next(iter(RequestParser(cfg, iter([request]), ("127.0.0.1", 1))))
    sock = Sock()
    resp = response_class(req, sock, cfg)
    resp.start_response(status, headers)
    for chunk in body:
        resp.write(chunk)
    resp.close()
    return sock.sends


GET = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
JSON = [("Content-Type", "application/json"), ("Content-Length", "12")]


def test_head_and_body_leave_in_one_send_with_gunicorns_bytes():
    ours = _serve(CoalescingResponse, GET, "200 OK", JSON, [b'{"ok": ', b"true}"])
    theirs = _serve(GunicornResponse, GET, "200 OK", JSON, [b'{"ok": ', b"true}"])
    assert len(theirs) == 3 and len(ours) == 2  # gunicorn: head, chunk, chunk
    assert b"".join(ours) == b"".join(theirs)
    assert ours[0].startswith(b"HTTP/1.1 200 OK\r\n") and ours[0].endswith(b'{"ok": ')


def test_a_response_without_body_still_sends_its_head():
    head = b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n"
    for request, status, body in [(head, "200 OK", [b'{"ok": true}']), (GET, "204 No Content", [])]:
        ours = _serve(CoalescingResponse, request, status, JSON, body)
        theirs = _serve(GunicornResponse, request, status, JSON, body)
        assert ours == theirs and len(ours) == 1, (request, status)


def test_chunked_responses_keep_gunicorns_order():
    plain = [("Content-Type", "text/plain")]  # no length on HTTP/1.1: chunked
    ours = _serve(CoalescingResponse, GET, "200 OK", plain, [b"a", b"bc"])
    theirs = _serve(GunicornResponse, GET, "200 OK", plain, [b"a", b"bc"])
    assert ours == theirs
    assert b"Transfer-Encoding: chunked" in ours[0] and ours[-1] == b"0\r\n\r\n"
