"""Flask blueprints, one module per route group; registered by :func:`web.app.create_app`.

Routes reach settings and the dispatcher through :func:`state` (``app.extensions``), never
through globals, so several apps (tests) can live in one process.
"""

from __future__ import annotations

from autodep_celery.web.metrics import Metrics
from autodep_celery.web.protocol import DispatcherProtocol
from flask import current_app

from autodep_celery.config import Settings

EXTENSION = "autodep"


def settings() -> Settings:
    return current_app.extensions[EXTENSION]["settings"]  # type: ignore[no-any-return]


def dispatcher() -> DispatcherProtocol:
    return current_app.extensions[EXTENSION]["dispatcher"]  # type: ignore[no-any-return]


def stats() -> Metrics:
    return current_app.extensions[EXTENSION]["metrics"]  # type: ignore[no-any-return]
