"""GET /health (the process answers) and GET /ready (Redis/broker reachable and every configured
model has a ready worker). /health never waits on models or the broker. Must not import torch.
"""

from __future__ import annotations

from flask import Blueprint, Response

from autodep_celery.web import routes, schema
from autodep_celery.web.openapi import operation
from autodep_celery.web.responses import error_response, json_response

bp = Blueprint("health", __name__)


@bp.get("/health")
@operation("The web process answers", {200: schema.HEALTH}, tag="operations")
def health() -> Response:
    return json_response({"status": "ok"})


@bp.get("/ready")
@operation(
    "Redis and the broker answer and every model has a ready worker",
    {200: schema.READY, 503: "Not ready: the message names what is missing"},
    tag="operations",
)
def ready() -> Response:
    state = routes.dispatcher().ready()
    if state.ok:
        return json_response({"status": "ready", "models": state.workers})
    if state.error:
        message = f"not ready: {state.error}"
    elif not state.workers:
        message = "not ready: no model is configured; add a [[models]] entry"
    else:
        missing = sorted(m for m, n in state.workers.items() if n == 0)
        message = f"not ready: no ready worker for model(s) {', '.join(missing)}"
    return error_response("not_ready", message, 503)
