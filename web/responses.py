"""JSON responses for every route: orjson-serialised bodies, the error envelope, and the
Autodep-shaped inference answer. Called by routes and error handlers; must not import torch.
"""

from __future__ import annotations

from typing import Any

import orjson
from flask import Response

from autodep_celery import errors
from autodep_celery.web.task_types import WebTask

JSON = "application/json"


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status=status, mimetype=JSON, headers=headers)


def error_response(
    code: str, message: str, status: int, headers: dict[str, str] | None = None
) -> Response:
    return json_response({"error": {"code": code, "message": message}}, status, headers)


def inference_body(result: dict[str, Any], task: WebTask) -> list[Any]:
    """``[inference, {"secs": S, "nanos": N}]`` from one per-item result of the worker; `task`
    (the request's task type) encodes the output."""
    if not result.get("ok"):
        error = result.get("error")
        raise errors.from_dict(error if isinstance(error, dict) else {})
    output = result.get("output")
    if not isinstance(output, dict):
        raise errors.AutodepError("the worker returned a result without output")
    output = task.encode(output)
    compute_ns = int(result.get("compute_ns") or 0)
    secs, nanos = divmod(max(0, compute_ns), 1_000_000_000)
    return [output, {"secs": secs, "nanos": nanos}]
