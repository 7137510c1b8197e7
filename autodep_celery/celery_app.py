"""The Celery app: one factory for web, worker and `celery -A autodep_celery ...`.

Reliability settings follow docs/architecture.md §2.4 (acks late, reject on worker lost, prefetch
1, a long visibility timeout). Messages are msgpack so images cross as raw bytes. The app includes
``worker.tasks`` by name only: the web tier builds this app too and must never import torch.
"""

from __future__ import annotations

import logging
import threading

import redis
from celery import Celery
from kombu.entity import Queue

from autodep_celery import config, flower_guard, kombu_tuning, model_registry
from autodep_celery.config import Settings

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 2.0
"""Bound on connecting to the broker, so a dead broker is an error, not a hang."""
MODEL_LOAD_TIMEOUT_S = 300.0
"""How long a new pool child may take to load and warm up its models."""
UNACKED_MUTEX_EXPIRE_S = 10
"""Lifetime of kombu's restore lock, so a worker killed while holding it delays restores by at
most this much (kombu's default: 300 s)."""

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
        broker_connection_max_retries=None,  # a worker waits for its broker, however long
        broker_connection_timeout=CONNECT_TIMEOUT_S,
        # a pool child loads and warms its models inside worker_process_init; Celery's default
        # 4 s would kill children of slow-loading models over and over
        worker_proc_alive_timeout=MODEL_LOAD_TIMEOUT_S,
        # a hung forward pass must not hold its child (and its batch) forever; past the
        # request deadline nobody waits for the answer anyway
        task_time_limit=task_time_limit_s(settings),
        # prefork, with that limit not counting time the worker was stopped (worker.pool)
        worker_pool="autodep_celery.worker.pool:TaskPool",
        broker_transport_options={
            "visibility_timeout": visibility,
            "socket_connect_timeout": CONNECT_TIMEOUT_S,
            **unacked_restore_options(visibility),
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


def unacked_restore_interval_s(visibility_timeout_s: float) -> float:
    """How often each consuming worker looks for batches past the visibility timeout: a tenth
    of it, within [1, 10] s. A lost batch comes back at most this long after the timeout."""
    return min(10.0, max(1.0, visibility_timeout_s / 10.0))


def unacked_restore_options(visibility_timeout_s: float) -> dict[str, float | int]:
    """kombu's Redis transport options that bring a dead worker's batches back.

    kombu 5.7 (kombu/transport/redis.py) restores them in ``QoS.restore_visible``: under a
    Redis lock (``unacked_mutex_key``, auto-expiring after ``unacked_mutex_expire``), one
    ``ZRANGE unacked_index BYSCORE`` of at most ``unacked_restore_limit`` delivery tags whose
    delivery time is older than ``time() - visibility_timeout``, each put back on its queue.
    An event-loop consumer (a Celery worker) calls it once when it registers with its hub
    (``on_poll_init``) and then every ``unacked_restore_interval`` s (default 10,
    ``register_with_event_loop``), but ``restore_visible`` scans only on every
    ``unacked_restore_throttle``-th call (default 10): one scan per 100 s. With a 20 s
    visibility timeout a lost batch came back after ~109 s. Throttle 1 makes the interval the
    only control. Each scan costs each worker parent three commands (SET NX PX, ZRANGE with a
    LIMIT, the lock's release script); a drain_events consumer without a hub (a remote-control
    reply) also scans on each empty poll, i.e. at most once per poll timeout.
    ``unacked_mutex_expire`` (default 300 s) only matters if a worker dies holding the lock: it
    would stop every restore for 5 minutes; a scan takes milliseconds, and two overlapping scans
    are safe (``restore_by_tag`` re-reads the message in a WATCH transaction).
    """
    interval = unacked_restore_interval_s(visibility_timeout_s)
    return {
        "unacked_restore_limit": 100,  # batches restored per scan
        "unacked_restore_interval": interval,
        "unacked_restore_throttle": 1,
        "unacked_mutex_expire": UNACKED_MUTEX_EXPIRE_S,
    }


def task_time_limit_s(settings: Settings) -> float:
    """Request deadline plus a margin, and below the visibility timeout, so a killed batch is
    never redelivered while its first run still computes."""
    visibility = settings.broker.visibility_timeout_s
    return max(10.0, min(visibility - 30.0, settings.web.request_timeout_s + 60.0))


def settings_of(app: Celery) -> Settings:
    return app.autodep_settings  # type: ignore[no-any-return]  # Celery is untyped


def default_app() -> Celery:
    """The process-wide app, built on first use from config file and environment, with the
    models registered at runtime (a worker started for one finds its settings). It is what
    `celery -A autodep_celery <command>` runs, so the flower command gets its guard here."""
    global _default
    with _lock:
        if _default is None:
            settings = with_registry(config.load())
            _default = make_celery(settings)
            flower_guard.install(settings)
        return _default


def with_registry(settings: Settings) -> Settings:
    """`settings` with the model registry merged in (autodep_celery.model_registry); config's
    models alone, with a warning, when Redis cannot be read."""
    if not settings.management.enabled:
        return settings
    client = redis.Redis.from_url(
        settings.result_url,
        socket_timeout=CONNECT_TIMEOUT_S,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
    )
    try:
        return model_registry.effective(settings, client)
    except (redis.RedisError, OSError) as exc:
        log.warning("cannot read the model registry (%s); serving config's models only", exc)
        return settings
    finally:
        client.close()
