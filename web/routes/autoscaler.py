"""GET /autoscaler: per model current, desired, min and max processes, backlog, queue wait, last
decision and when, as the running autoscaler last published them (autodep_celery.autoscaler).
With no autoscaler running it says so, with the pool sizes the workers report. No torch.
"""

from __future__ import annotations

from flask import Blueprint, Response

from autodep_celery.web import routes, schema
from autodep_celery.web.openapi import operation
from autodep_celery.web.responses import json_response

bp = Blueprint("autoscaler", __name__)


@bp.get("/autoscaler")
@operation(
    "Per model: pool sizes, backlog, queue wait and the autoscaler's last decision",
    {200: schema.AUTOSCALER},
    tag="autoscaler",
    errors=(503,),
)
def autoscaler() -> Response:
    view = routes.status()
    published = view.autoscaler(fresh=True)
    if published is not None:
        return json_response(published)
    procs = view.procs()
    settings = routes.settings()
    models = {}
    for m in settings.models:
        low, high = settings.pool_bounds(m)
        serving = [p for p in procs if m.name in p.models]
        models[m.name] = {
            "current": len(serving),
            "ready": sum(1 for p in serving if p.ready),
            "min": low,
            "max": high,
        }
    return json_response({"running": False, "models": models})
