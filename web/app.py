"""The Flask app factory: settings in, app out (Flask's ``create_app`` pattern).

Called by :mod:`web.wsgi` (gunicorn) and by tests with a :class:`web.testing.FakeDispatcher`.
Building the app opens no connection: the real dispatcher connects on first use, after gunicorn
forks. Must not import torch or ``worker``.
"""

from __future__ import annotations

from flask import Flask

from autodep_celery import config
from autodep_celery.config import Settings
from web import errors
from web.protocol import DispatcherProtocol
from web.routes import EXTENSION, health, inference, workers


def create_app(
    settings: Settings | None = None, dispatcher: DispatcherProtocol | None = None
) -> Flask:
    settings = config.load() if settings is None else settings
    if dispatcher is None:
        from web.transport import build_dispatcher  # pulls in redis/msgpack only when needed

        dispatcher = build_dispatcher(settings)
    app = Flask("autodep_web")
    app.config["MAX_CONTENT_LENGTH"] = settings.web.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions[EXTENSION] = {"settings": settings, "dispatcher": dispatcher}
    errors.register(app)
    for module in (inference, workers, health):
        app.register_blueprint(module.bp)
    return app
