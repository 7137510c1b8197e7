"""Builds the real web tier from settings: the dispatcher with its sender, reply source and
status view, and the load reporter the autoscaler reads. Called by web.app.create_app when no
test double is given; nothing here connects until the first request, after gunicorn forks.
Must not import torch or Flask.
"""

from __future__ import annotations

from collections.abc import Callable

from autodep_celery.config import Settings
from autodep_celery.web.dispatcher import Dispatcher
from autodep_celery.web.load import LoadReporter
from autodep_celery.web.publisher import sender_for
from autodep_celery.web.replies import RedisReplySource
from autodep_celery.web.status_view import RedisStatusView


def build(
    settings: Settings,
    on_batch: Callable[[str, int, list[float]], None] | None = None,
    on_phases: Callable[[str, tuple[float, ...]], None] | None = None,
) -> tuple[Dispatcher, RedisStatusView]:
    """The dispatcher and the status view it shares with the routes (one cache of Redis)."""
    url = settings.result_url
    view = RedisStatusView(url, settings.web.worker_check_interval_s)

    def report_load(dispatcher: Dispatcher) -> None:
        LoadReporter(url, dispatcher.load, dispatcher.reply_to.rsplit(":", 1)[-1]).start()

    dispatcher = Dispatcher(
        settings, sender_for(settings), RedisReplySource(url), view, on_start=report_load
    )
    dispatcher.on_batch = on_batch
    dispatcher.on_phases = on_phases
    return dispatcher, view
