"""The Flask app factory: settings in, app out (Flask's ``create_app`` pattern).

Called by :mod:`web.wsgi` (gunicorn) and by tests with a :class:`web.testing.FakeDispatcher`.
Building the app opens no connection: the real dispatcher connects on first use, after gunicorn
forks. Must not import torch or ``worker``.
"""

from __future__ import annotations

from autodep_celery.web import errors, observe
from autodep_celery.web.metrics import Metrics
from autodep_celery.web.protocol import DispatcherProtocol
from autodep_celery.web.routes import (
    EXTENSION,
    autoscaler,
    docs,
    health,
    inference,
    metrics,
    workers,
)
from flask import Flask

from autodep_celery import config
from autodep_celery.config import Settings


def create_app(
    settings: Settings | None = None, dispatcher: DispatcherProtocol | None = None
) -> Flask:
    settings = config.load() if settings is None else settings
    stats = Metrics(settings)
    if dispatcher is None:
        from autodep_celery.web.transport import (
            build_dispatcher,  # pulls in redis/msgpack only when needed
        )

        real = build_dispatcher(settings)
        real.on_batch = stats.batch_sent  # type: ignore[attr-defined]  # batch size, queue wait
        dispatcher = real
    app = Flask("autodep_web")
    app.config["MAX_CONTENT_LENGTH"] = settings.web.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions[EXTENSION] = {"settings": settings, "dispatcher": dispatcher, "metrics": stats}
    errors.register(app)
    observe.register(app, stats)
    for module in (inference, workers, health, autoscaler, metrics, docs):
        app.register_blueprint(module.bp)
    return app
