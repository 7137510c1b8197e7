"""Flask blueprints, one module per route group; registered by :func:`web.app.create_app`.

Routes reach settings, the dispatcher, the status view and the metrics through the functions
below (``app.extensions``), never through globals, so several apps (tests) can live in one
process.
"""

from __future__ import annotations

from flask import current_app

from autodep_celery.config import Settings
from autodep_celery.web.interfaces import DispatcherProtocol, JobStore, StatusView
from autodep_celery.web.metrics import Metrics
from autodep_celery.web.model_table import ModelTable

EXTENSION = "autodep"


def settings() -> Settings:
    """The settings with the models served now: config.toml's and the registry's
    (web.model_table); their ``model(name)`` looks in Redis before answering None."""
    ext = current_app.extensions[EXTENSION]
    table = ext.get("models")
    return ext["settings"] if table is None else table.settings()  # type: ignore[no-any-return]  # extensions: Any


def model_table() -> ModelTable:
    """This process's model set (web.model_table); routes.management writes through it."""
    return current_app.extensions[EXTENSION]["models"]  # type: ignore[no-any-return]  # extensions: Any


def dispatcher() -> DispatcherProtocol:
    return current_app.extensions[EXTENSION]["dispatcher"]  # type: ignore[no-any-return]  # extensions: Any


def status() -> StatusView:
    """Worker and autoscaler status (GET /workers*, /autoscaler)."""
    return current_app.extensions[EXTENSION]["status"]  # type: ignore[no-any-return]  # extensions: Any


def stats() -> Metrics:
    return current_app.extensions[EXTENSION]["metrics"]  # type: ignore[no-any-return]  # extensions: Any


def job_store() -> JobStore:
    """Asynchronous jobs (web.routes.jobs): in Redis, unless the app was given a store."""
    ext = current_app.extensions[EXTENSION]
    store = ext.get("jobs")
    if store is None:  # built on first use: an app that never sees a job needs no client
        from autodep_celery.web.job_store import RedisJobStore

        config = ext["settings"]
        store = ext["jobs"] = RedisJobStore(config.result_url, config.broker.visibility_timeout_s)
    return store  # type: ignore[no-any-return]  # extensions: Any
