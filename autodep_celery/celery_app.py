"""The Celery app: one factory for web, worker and `celery -A autodep_celery ...`.

Reliability settings follow docs/architecture.md §2.4 (acks late, reject on worker lost, prefetch
1, a long visibility timeout). Messages are msgpack so images cross as raw bytes. The app includes
``worker.tasks`` by name only: the web tier builds this app too and must never import torch.
"""

from __future__ import annotations

import logging
import threading

from celery import Celery
from kombu.entity import Queue

from autodep_celery import config, kombu_tuning
from autodep_celery.config import Settings

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 2.0
"""Bound on connecting to the broker, so a dead broker is an error, not a hang."""
MODEL_LOAD_TIMEOUT_S = 300.0
"""How long a new pool child may take to load and warm up its models."""

_default: Celery | None = None
_lock = threading.Lock()


def make_celery(settings: Settings) -> Celery:
    kombu_tuning.install()
    app = Celery(
        "autodep_celery",
        broker=settings.broker_url,
        backend=settings.result_url,
        include=["autodep_celery.worker.tasks"],
    )
    visibility = settings.broker.visibility_timeout_s
    app.conf.update(
        task_serializer="msgpack",
        result_serializer="msgpack",
        accept_content=["msgpack", "json"],
        result_accept_content=["msgpack", "json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_track_started=False,
        result_expires=3600,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=CONNECT_TIMEOUT_S,
        # a pool child loads and warms its models inside worker_process_init; Celery's default
        # 4 s would kill children of slow-loading models over and over
        worker_proc_alive_timeout=MODEL_LOAD_TIMEOUT_S,
        # a hung forward pass must not hold its child (and its batch) forever; past the
        # request deadline nobody waits for the answer anyway
        task_time_limit=task_time_limit_s(settings),
        broker_transport_options={
            "visibility_timeout": visibility,
            "socket_connect_timeout": CONNECT_TIMEOUT_S,
            # restore unacked batches of a dead worker once they pass the visibility timeout
            "unacked_restore_limit": 100,
        },
        result_backend_transport_options={"visibility_timeout": visibility},
        task_queues=[
            Queue(m.queue, routing_key=m.queue)  # type: ignore[no-untyped-call]  # kombu: untyped
            for m in settings.models
        ],
        task_default_queue="autodep.default",
        # pools change only by remote control (the autoscaler, celery control, Flower)
        worker_autoscaler="autodep_celery.worker.control:RemoteOnlyAutoscaler",
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    app.autodep_settings = settings  # our settings ride on the app: tasks and signals read them
    return app


def task_time_limit_s(settings: Settings) -> float:
    """Request deadline plus a margin, and below the visibility timeout, so a killed batch is
    never redelivered while its first run still computes."""
    visibility = settings.broker.visibility_timeout_s
    return max(10.0, min(visibility - 30.0, settings.web.request_timeout_s + 60.0))


def settings_of(app: Celery) -> Settings:
    return app.autodep_settings  # type: ignore[no-any-return]  # Celery is untyped


def default_app() -> Celery:
    """The process-wide app, built on first use from config file and environment."""
    global _default
    with _lock:
        if _default is None:
            _default = make_celery(config.load())
        return _default
