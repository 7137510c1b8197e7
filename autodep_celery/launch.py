"""Command lines and environment for the processes a deployment runs.

One place that knows how to start a model worker and the web tier, shared by `autodep serve`,
`autodep worker|web` and the integration tests, so that what is tested is what users run.
"""

from __future__ import annotations

import os

from autodep_celery import config
from autodep_celery.config import Settings
from autodep_celery.processes import python_argv


def child_env(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a child process: the resolved settings travel as JSON."""
    env = dict(os.environ if base is None else base)
    env[config.SETTINGS_ENV] = settings.to_json()
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def worker_argv(
    settings: Settings,
    models: list[str],
    concurrency: int | None = None,
    pool: str = "prefork",
    loglevel: str | None = None,
    hostname: str | None = None,
    extra: list[str] | None = None,
    autoscale: tuple[int, int] | None = None,
) -> list[str]:
    """`celery -A autodep_celery worker` consuming the queues of `models`; with `autoscale`
    (max, min) the pool starts at min and may be resized between them by remote control."""
    queues = ",".join(config.queue_name(m) for m in models)
    conc = concurrency or _default_concurrency(settings, models)
    name = hostname or f"{'+'.join(models)}@%h"
    if autoscale is not None:
        conc = autoscale[0]
        extra = [f"--autoscale={autoscale[0]},{autoscale[1]}", *(extra or [])]
    return python_argv(
        "-m",
        "celery",
        "-A",
        "autodep_celery",
        "worker",
        "-Q",
        queues,
        "-n",
        name,
        "-c",
        str(conc),
        # prefork: the app's worker_pool, prefork with time limits that skip frozen time
        # (worker.pool); Celery's -P accepts only its own names
        *([] if pool == "prefork" else ["-P", pool]),
        "--loglevel",
        loglevel or settings.log.level,
        "--without-gossip",
        "--without-mingle",
        *(extra or []),
    )


def _default_concurrency(settings: Settings, models: list[str]) -> int:
    """A model's `min_workers`, else [worker] concurrency, else one process per core."""
    mins = [m.min_workers for n in models if (m := settings.model(n)) and m.min_workers]
    if mins:
        return max(mins)
    return settings.worker.concurrency or (os.cpu_count() or 1)


def web_argv() -> list[str]:
    """gunicorn with the project's config module; host, port and sizes come from settings."""
    return python_argv(
        "-m",
        "gunicorn",
        "-c",
        "python:autodep_celery.web.gunicorn_conf",
        "autodep_celery.web.wsgi:app",
    )
