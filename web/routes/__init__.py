"""Flask blueprints, one module per route group; registered by :func:`web.app.create_app`.

Routes reach settings, the dispatcher, the status view and the metrics through the functions
below (``app.extensions``), never through globals, so several apps (tests) can live in one
process.
"""

from __future__ import annotations

from flask import current_app

from autodep_celery.config import Settings
from autodep_celery.web.interfaces import DispatcherProtocol, StatusView
from autodep_celery.web.metrics import Metrics

EXTENSION = "autodep"


def settings() -> Settings:
    return current_app.extensions[EXTENSION]["settings"]  # type: ignore[no-any-return]  # extensions: Any


def dispatcher() -> DispatcherProtocol:
    return current_app.extensions[EXTENSION]["dispatcher"]  # type: ignore[no-any-return]  # extensions: Any


def status() -> StatusView:
    """Worker and autoscaler status (GET /workers*, /autoscaler)."""
    return current_app.extensions[EXTENSION]["status"]  # type: ignore[no-any-return]  # extensions: Any


def stats() -> Metrics:
    return current_app.extensions[EXTENSION]["metrics"]  # type: ignore[no-any-return]  # extensions: Any
