"""The Flask app factory: settings in, app out (Flask's ``create_app`` pattern).

Called by :mod:`web.wsgi` (gunicorn) and by tests with a :class:`web.testing.FakeDispatcher`.
Building the app opens no connection: the real dispatcher connects on first use, after gunicorn
forks. Must not import torch or ``worker``.
"""

from __future__ import annotations

import functools

from flask import Flask, request

from autodep_celery import config
from autodep_celery.config import Settings
from autodep_celery.web import auth, errors, model_table, observe
from autodep_celery.web.interfaces import DispatcherProtocol, StatusView
from autodep_celery.web.metrics import Metrics
from autodep_celery.web.routes import (
    EXTENSION,
    autoscaler,
    classify,
    docs,
    health,
    inference,
    jobs,
    management,
    metrics,
    oip,
    torchserve,
    torchserving,
    workers,
)


def create_app(
    settings: Settings | None = None,
    dispatcher: DispatcherProtocol | None = None,
    status: StatusView | None = None,
) -> Flask:
    """The app; with no `dispatcher`, the real one (web.wiring). A test double without a
    `status` view lends its own (FakeDispatcher.status_view)."""
    settings = config.load() if settings is None else settings
    stats = Metrics(settings)
    wired = dispatcher is None
    if dispatcher is None:
        from autodep_celery.web import wiring  # pulls in redis/msgpack only when needed

        dispatcher, status = wiring.build(
            settings, on_batch=stats.batch_sent, on_phases=stats.batch_phases
        )
    if status is None:
        status = getattr(dispatcher, "status_view")  # noqa: B009 - test doubles only
    app = Flask("autodep_web")
    app.config["MAX_CONTENT_LENGTH"] = settings.web.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]  # DefaultJSONProvider has it
    app.extensions[EXTENSION] = {
        "settings": settings,
        "dispatcher": dispatcher,
        "status": status,
        "metrics": stats,
        "models": model_table.build(settings, dispatcher, stats.set_settings, from_redis=wired),
    }
    keys = auth.load_keys(settings)
    app.before_request(functools.partial(_authorize, keys))
    errors.register(app)
    observe.register(app, stats)
    for module in (
        inference,
        workers,
        health,
        autoscaler,
        metrics,
        docs,
        torchserve,
        classify,
        torchserving,
        jobs,
        oip,
    ):
        app.register_blueprint(module.bp)
    if settings.management.enabled:
        app.register_blueprint(management.bp)
    return app


def _authorize(keys: auth.Keys) -> None:
    """Before every request: the key its route needs (web.auth)."""
    if not keys.any:
        return
    if request.endpoint in auth.OPEN_ENDPOINTS:
        return
    access = auth.ACCESS.get(request.blueprint or "", auth.OPEN)
    auth.authorize(keys, access, request.headers.get("Authorization"))
