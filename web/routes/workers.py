"""GET /workers, /workers/_status, /workers/_info (Autodep's API) from the worker status hash.
Must not import torch.
"""

from __future__ import annotations

from flask import Blueprint, Response

from autodep_celery.web import routes, schema
from autodep_celery.web.openapi import operation
from autodep_celery.web.responses import json_response

bp = Blueprint("workers", __name__)


@bp.get("/workers")
@operation("Busy worker processes", {200: schema.WORKER_STATES}, tag="workers", errors=(503,))
def busy() -> Response:
    procs = routes.status().procs(fresh=True)
    return json_response({p.key: "Working" for p in procs if p.state == "Working"})


@bp.get("/workers/_status")
@operation(
    "Every worker process, Working or Idle",
    {200: schema.WORKER_STATES},
    tag="workers",
    errors=(503,),
)
def all_status() -> Response:
    procs = routes.status().procs(fresh=True)
    return json_response({p.key: "Working" if p.state == "Working" else "Idle" for p in procs})


@bp.get("/workers/_info")
@operation(
    "Every worker process's models, CPU, memory and requests served",
    {200: schema.WORKER_INFO},
    tag="workers",
    errors=(503,),
)
def info() -> Response:
    procs = routes.status().procs(fresh=True)
    return json_response(
        [
            [
                {
                    "worker": p.worker,
                    "pid": p.pid,
                    "models": list(p.models),
                    "cpu_percent": p.cpu_percent,
                    "rss_bytes": p.rss_bytes,
                },
                p.served,
            ]
            for p in procs
        ]
    )
