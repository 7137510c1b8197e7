"""Per-request bookkeeping of the Flask app: the request id, the access log line and the request
metrics. Registered by :func:`web.app.create_app`.

The request id is the client's ``X-Request-ID`` when it is a sane token, else a new one; it is set
in :data:`autodep_celery.logs.REQUEST_ID` for every log line of the request, put on the item sent
to the worker (which logs it with its batch), and returned in the ``X-Request-ID`` header.
Must not import torch.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time

from flask import Flask, Response, g, request

from autodep_celery import forksafe, logs
from autodep_celery.web.metrics import Metrics
from autodep_celery.web.openapi import REQUEST_ID_HEADER

access_log = logging.getLogger(logs.ACCESS_LOGGER)

_VALID_ID = re.compile(r"^[A-Za-z0-9._:/+=@-]{1,128}$")
UNMATCHED = "<unmatched>"
"""Route label of requests that matched no route (404s), so paths never become labels."""


def request_id() -> str:
    """This request's id (valid inside a request)."""
    return g.get("request_id") or ""


class _Ids:
    """New request ids: 32 hex characters, a random half per process and a counter (uuid4
    read os.urandom for every request, ~2% of the web tier's CPU). Unique across processes
    and restarts with the odds of a 64-bit random prefix."""

    def __init__(self) -> None:
        self._reset()
        forksafe.register(self, _Ids._reset)  # a forked child is a new process

    def _reset(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._count = itertools.count(1)

    def new(self) -> str:
        return f"{self._prefix}{next(self._count):016x}"


_ids = _Ids()


def register(app: Flask, metrics: Metrics) -> None:
    @app.before_request
    def _start() -> None:
        given = request.headers.get(REQUEST_ID_HEADER, "")
        g.request_id = given if given and _VALID_ID.match(given) else _ids.new()
        g.started = time.perf_counter()
        g.log_token = logs.REQUEST_ID.set(g.request_id)

    @app.after_request
    def _finish(response: Response) -> Response:
        rid = g.get("request_id")
        if rid:
            response.headers[REQUEST_ID_HEADER] = rid
        started = g.get("started")
        seconds = time.perf_counter() - started if started is not None else 0.0
        route = request.url_rule.rule if request.url_rule is not None else UNMATCHED
        metrics.request_done(route, request.method, response.status_code, seconds)
        if access_log.isEnabledFor(logging.INFO):
            extra = {"status": response.status_code, "duration_ms": round(seconds * 1000, 2)}
            if g.get("model"):
                extra["model"] = g.model
            access_log.info(
                "%s %s %s", request.method, request.path, response.status_code, extra=extra
            )
        return response

    @app.teardown_request
    def _forget(_exc: BaseException | None) -> None:
        token = g.pop("log_token", None)
        if token is not None:
            try:
                logs.REQUEST_ID.reset(token)
            except ValueError:  # set in another context (should not happen): just clear it
                logs.REQUEST_ID.set(None)
