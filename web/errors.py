"""The three error handlers of the Flask app: AutodepError, werkzeug HTTPException, and anything
else (logged with its traceback, answered with a fixed 500 message). Every error body is
``{"error": {"code": ..., "message": ...}}`` (README, HTTP API). Called by
:func:`web.app.create_app`.
"""

from __future__ import annotations

import logging
import re

from flask import Flask, Response, request
from gunicorn.http.errors import ParseException
from werkzeug.exceptions import ClientDisconnected, HTTPException

from autodep_celery.errors import AutodepError
from autodep_celery.web.responses import error_response

log = logging.getLogger(__name__)

_HTTP_HINTS = {
    404: "no such route; GET /openapi.json lists every route (browsable at GET /docs)",
    413: "the request body is larger than web.max_body_bytes ({limit} bytes); send a smaller image",
    415: "send the body as JSON with Content-Type: application/json",
}


_CODES = {413: "body_too_large"}


def register(app: Flask) -> None:
    app.register_error_handler(AutodepError, _autodep_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(TimeoutError, _slow_read)
    app.register_error_handler(ParseException, _bad_framing)
    app.register_error_handler(Exception, _unexpected)


def _autodep_error(exc: AutodepError) -> Response:
    headers = {}
    retry_after = getattr(exc, "retry_after_s", None)
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, int(retry_after)))
    if exc.http_status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="autodep"'

    # 503 (no worker, broker down) repeats on every request while it lasts: not a WARNING each.
    if exc.http_status < 500:
        level = logging.DEBUG
    elif exc.http_status == 503:
        level = logging.INFO
    else:
        level = logging.WARNING
    log.log(
        level,
        "%s %s -> %s %s: %s",
        request.method,
        request.path,
        exc.http_status,
        exc.code,
        exc.message,
    )
    return error_response(exc.code, exc.message, exc.http_status, headers)


def _http_error(exc: HTTPException) -> Response:
    if isinstance(exc, ClientDisconnected) and isinstance(
        exc.__cause__ or exc.__context__, TimeoutError
    ):
        return _slow_read(TimeoutError())  # werkzeug's body stream wraps the socket timeout
    status = exc.code or 500
    code = _CODES.get(status) or re.sub(r"[^a-z0-9]+", "_", (exc.name or "error").lower()).strip(
        "_"
    )
    hint = _HTTP_HINTS.get(status)
    if status == 405:
        allowed = sorted(getattr(exc, "valid_methods", None) or [])
        message = f"{request.method} is not allowed on {request.path}; use {', '.join(allowed)}"
    elif hint:
        message = hint.format(limit=request.max_content_length)
    else:
        message = exc.description or exc.name or "HTTP error"
    headers = dict(exc.get_headers())
    headers.pop("Content-Type", None)
    return error_response(code, message, status, headers)


def _slow_read(exc: TimeoutError) -> Response:
    # gunicorn's socket timed out while the app read the body (web.http_workers)
    log.info("%s %s -> 408: the client stopped sending its body", request.method, request.path)
    response = error_response(
        "request_timeout",
        "the request body stopped arriving for web.read_timeout_s; send it at once",
        408,
    )
    response.headers["Connection"] = "close"
    return response


def _bad_framing(exc: ParseException) -> Response:
    # gunicorn parses a chunked body lazily, while the app reads it
    response = error_response(
        "bad_request", f"the request body's framing is invalid: {exc}; send valid HTTP/1.1", 400
    )
    response.headers["Connection"] = "close"
    return response


def _unexpected(exc: Exception) -> Response:
    log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    return error_response(
        "internal_error", "internal server error; the web server log has the details", 500
    )
