"""GET /metrics: Prometheus text format, summed over the gunicorn processes (web.metrics).
Must not import torch.
"""

from __future__ import annotations

from flask import Blueprint, Response

from autodep_celery.web import routes
from autodep_celery.web.metrics import CONTENT_TYPE
from autodep_celery.web.openapi import operation

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
@operation(
    "Prometheus metrics",
    {200: ("text/plain", "Prometheus text format 0.0.4, all web processes of this server")},
    tag="operations",
)
def metrics() -> Response:
    return Response(routes.stats().render(), mimetype=None, content_type=CONTENT_TYPE)
