"""Three fixes to kombu's Redis transport, applied by :func:`celery_app.make_celery`.

The client cache: kombu builds a new ``redis.Redis`` object (over its shared connection pool)
for every publish and every ack. With redis-py 8, building one copies ~200 response callbacks:
py-spy put it at ~25% of a Celery worker parent's CPU under load and ~0.5 ms per ``send_task``
in the web tier. The object owns no connection (each command borrows one from the pool), so one
object per channel is equivalent and thread-safe. Asynchronous (polling) clients are left as
they are.

A Redis that refuses writes (``maxmemory`` reached with ``noeviction``, a replica turned
read-only): kombu records each delivered message in its unacked index (ZADD + HSET), acks with
ZREM + HDEL in MULTI, and takes a lock (SET NX) to restore; Redis refuses all of them, and the
error, not being a connection error, stopped the whole Celery worker ("Unrecoverable error") and
lost the message it had just popped. Now the message is still delivered and computed, only
without the record that would restore it after a crash (a warning says so); an ack that Redis
refuses leaves the record, so the message is restored and computed once more later (at least
once); and the periodic restore is skipped until Redis takes writes again
(tests/fault/test_redis_and_web_faults.py).

Reconnecting: Celery's consumer calls kombu's ``ensure_connection`` without intervals, so kombu's
defaults apply: 2 s, then 4 s, 6 s... up to 30 s between attempts. A Redis back after a 2 s
restart was reached by the workers ~4 s later, and one back after a minute up to 30 s later.
Attempts now start at RETRY_START_S and grow by RETRY_STEP_S to RETRY_MAX_S; with
``broker_connection_max_retries = None`` (celery_app) a worker keeps trying instead of exiting.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

log = logging.getLogger(__name__)

_MARK = "_autodep_client_cache"
RETRY_START_S = 0.2
RETRY_STEP_S = 0.5
RETRY_MAX_S = 2.0


def install() -> None:
    """Idempotent; a no-op when kombu's Redis transport (or redis-py) is not installed."""
    try:
        from kombu.transport import redis as kombu_redis
    except ImportError:  # pragma: no cover - redis extra missing
        return
    channel = kombu_redis.Channel
    if getattr(channel, _MARK, False):
        return
    original = channel._create_client

    @functools.wraps(original)  # kombu's own stays reachable as __wrapped__ (the tests use it)
    def _create_client(self: Any, asynchronous: bool = False) -> Any:
        if asynchronous:
            return original(self, asynchronous=True)  # type: ignore[no-untyped-call]  # kombu
        pool = self.pool  # kombu replaces its pool after a connection error: follow it
        cached = self.__dict__.get(_MARK)
        if cached is None or cached.connection_pool is not pool:
            cached = original(self)  # type: ignore[no-untyped-call]  # kombu is untyped
            self.__dict__[_MARK] = cached
        return cached

    channel._create_client = _create_client  # type: ignore[method-assign]  # the patch itself
    channel.QoS = _tolerant_qos(kombu_redis.QoS)
    _quick_reconnect()
    setattr(channel, _MARK, True)


def _quick_reconnect() -> None:
    from kombu.connection import Connection

    original = Connection._ensure_connection

    @functools.wraps(original)
    def _ensure_connection(self: Any, *args: Any, **kwargs: Any) -> Any:
        if len(args) < 3:  # intervals not given positionally: ours instead of kombu's 2/2/30
            kwargs.setdefault("interval_start", RETRY_START_S)
            kwargs.setdefault("interval_step", RETRY_STEP_S)
            kwargs.setdefault("interval_max", RETRY_MAX_S)
        return original(self, *args, **kwargs)  # type: ignore[no-untyped-call]  # kombu

    Connection._ensure_connection = _ensure_connection  # type: ignore[method-assign]


def _tolerant_qos(base: Any) -> Any:
    import redis
    from kombu.transport import virtual

    refused = (redis.exceptions.OutOfMemoryError, redis.exceptions.ReadOnlyError)

    class QoS(base):  # type: ignore[misc]  # kombu is untyped
        def append(self, message: Any, delivery_tag: Any) -> None:
            try:
                super().append(message, delivery_tag)
            except refused as exc:
                log.warning(
                    "Redis refuses writes (%s): message %s is computed without the record "
                    "that would restore it if this worker died",
                    exc,
                    delivery_tag,
                )
                virtual.QoS.append(self, message, delivery_tag)  # type: ignore[no-untyped-call]

        def ack(self, delivery_tag: Any) -> None:
            try:
                super().ack(delivery_tag)
            except refused as exc:
                # its record (if any) stays; it is restored and computed again later
                log.warning("Redis refuses writes (%s): message %s not acked", exc, delivery_tag)
                virtual.QoS.ack(self, delivery_tag)  # type: ignore[no-untyped-call]

        def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
            try:
                super().reject(delivery_tag, requeue=requeue)
            except refused as exc:
                log.warning("Redis refuses writes (%s): message %s not rejected", exc, delivery_tag)
                virtual.QoS.ack(self, delivery_tag)  # type: ignore[no-untyped-call]

        def restore_visible(self, *args: Any, **kwargs: Any) -> None:
            try:
                super().restore_visible(*args, **kwargs)
            except refused as exc:
                log.warning("Redis refuses writes (%s): unacked messages restored later", exc)

    return QoS
