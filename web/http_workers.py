"""gunicorn's worker classes with three changes for clients that misbehave at the HTTP level
(docs/architecture.md §2.17): every read from a client socket times out after
``web.read_timeout_s``, so a connection that sends nothing (idle, slow headers, a body that
stops) is closed instead of holding one of ``web.connections`` forever; a whole request (body
read, model wait and answer) is cut after ``request_timeout_s + read_timeout_s``, so a body that
trickles a byte per timeout cannot hold it either; and the errors gunicorn answers itself
(malformed request line, oversize headers, bad chunking, 431, 414) come back in the JSON error
shape of every other route instead of gunicorn's HTML page.

gevent's worker already bounds the header read of each request by ``keepalive`` (its
``timeout_ctx``); the socket timeout adds the bound on the body. Selected by
:mod:`web.gunicorn_conf` for ``web.worker_class`` ``gevent`` and ``gthread``; gunicorn imports this
module in the master, so the patched error writer is inherited by every worker it forks. Every
response's head also leaves in the same send() as its first body chunk
(:class:`CoalescingResponse`). Must not import torch or Flask.
"""

from __future__ import annotations

import json
import re
from typing import Any

from gunicorn import util
from gunicorn.http import wsgi
from gunicorn.workers.ggevent import GeventWorker as _GeventWorker
from gunicorn.workers.gthread import ThreadWorker as _ThreadWorker

from autodep_celery import errors

READ_TIMEOUT_S = 10.0
"""Set by web.gunicorn_conf from web.read_timeout_s before any worker starts."""
REQUEST_LIMIT_S = 40.0
"""Set by web.gunicorn_conf: request_timeout_s + read_timeout_s."""

_HINTS = {
    400: "the request is not valid HTTP/1.1",
    408: "the client sent the request too slowly (web.read_timeout_s)",
    414: "the request line (method and URL) is too long; send long input in the body",
    431: "the request headers are too large or too many",
    501: "this transfer encoding is not supported; send the body with Content-Length or chunked",
}


_CLIENT_STATUS = {501: (400, "Bad Request")}
"""gunicorn answers a Transfer-Encoding it does not know 501 (RFC 9112 says SHOULD); the client
sent what this server cannot take, and bad input is a 4xx here, as on every route."""


def json_error(status: int, reason: str, message: str) -> bytes:
    """A complete HTTP/1.1 response in the JSON error shape, closing the connection."""
    hint = _HINTS.get(status)
    status, reason = _CLIENT_STATUS.get(status, (status, reason))
    code = re.sub(r"[^a-z0-9]+", "_", reason.lower()).strip("_") or "error"
    text = f"{hint}: {message}" if hint and message else (message or hint or reason)
    body = json.dumps({"error": {"code": code, "message": text}}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


def _write_json_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    util.write_nonblock(sock, json_error(int(status_int), str(reason), str(mesg)))


util.write_error = _write_json_error  # base.Worker.handle_error calls util.write_error


class CoalescingResponse(wsgi.Response):  # type: ignore[misc]  # gunicorn is untyped
    """gunicorn's response, but the status line and headers leave in the same send() as the
    first body chunk: gunicorn sends them apart, two syscalls and two TCP segments for every
    JSON answer, which the client also reads in two wakes. Chunked responses and sendfile keep
    gunicorn's own order (headers first)."""

    _head: bytes = b""
    headers_sent: bool  # set by gunicorn's __init__

    def head_bytes(self) -> bytes:
        """What gunicorn's send_headers() writes (tests/unit/test_http_workers.py compares)."""
        tosend = self.default_headers()
        tosend.extend([f"{k}: {v}\r\n" for k, v in self.headers])
        head: bytes = util.to_bytestring("{}\r\n".format("".join(tosend)), "latin-1")
        return head

    def write(self, arg: Any) -> None:
        if not self.headers_sent and not self.chunked:
            self._head, self.headers_sent = self.head_bytes(), True
        try:
            super().write(arg)
        finally:
            if self._head:  # no body went out (HEAD, 204, an error): the head still must
                head, self._head = self._head, b""
                util.write(self.sock, head)

    def _emit_body(self, data: bytes) -> None:
        if self._head:
            data, self._head = self._head + data, b""
        util.write(self.sock, data, self.chunked)


wsgi.Response = CoalescingResponse  # wsgi.create() builds every HTTP/1 response from this name


class GeventWorker(_GeventWorker):  # type: ignore[misc]  # gunicorn is untyped
    """A read timing out inside the app (the body) raises TimeoutError there, and the cut of a
    whole request raises errors.SlowClient; web.errors answers both 408."""

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        client.settimeout(READ_TIMEOUT_S)  # gevent's sockets time out cooperatively
        super(_GeventWorker, self).handle(listener, client, addr)  # skips its setblocking(1)

    def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> Any:
        import gevent

        cut = errors.SlowClient(
            f"the request took longer than {REQUEST_LIMIT_S:g} s to arrive and be answered; "
            "send the body at once"
        )
        with gevent.Timeout(REQUEST_LIMIT_S, cut):
            return super().handle_request(listener_name, req, sock, addr)


class ThreadWorker(_ThreadWorker):  # type: ignore[misc]  # gunicorn is untyped
    """gunicorn's own: it already defers a connection that sends nothing to its poller; its
    handler makes each socket blocking again, so it gets no read timeout here (gevent, the
    default, does)."""
