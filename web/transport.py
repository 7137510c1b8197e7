"""The real edges of the dispatcher: Celery for sending batches, Redis for replies and for the
worker status view. Built by :func:`build_dispatcher` for the gunicorn app.

Every connection is created lazily in the process that uses it, never at import or in the
gunicorn master (DESIGN §2.2). Must not import torch or Flask.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import msgpack
import redis
from autodep_celery.web.dispatcher import Dispatcher
from autodep_celery.web.load import LoadReporter
from autodep_celery.web.protocol import Sender
from autodep_celery.web.publisher import RedisPublisher

from autodep_celery import contract, errors, status
from autodep_celery.autoscaler import state as autoscaler_state
from autodep_celery.config import ModelSettings, Settings
from autodep_celery.contract import Batch
from autodep_celery.status import ProcStatus

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 2.0
"""Bound on connecting to the broker or Redis, so a dead broker answers 503 instead of hanging."""
SEND_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}
"""A broker blip is retried briefly; a dead broker fails the batch within about a second."""


def _redis(url: str, read_timeout_s: float) -> redis.Redis:
    if not url:
        raise errors.BrokerUnavailable(
            "no Redis URL for results and worker status; set broker.result_url "
            "(or use a redis:// broker.url)"
        )
    return redis.Redis.from_url(
        url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=read_timeout_s
    )


class CelerySender:
    """Publishes batches with ``send_task`` by name; the web never imports worker code."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._app: Any = None
        self._pid: int | None = None
        self._lock = threading.Lock()

    def app(self) -> Any:
        with self._lock:
            if self._app is None or self._pid != os.getpid():
                from autodep_celery.celery_app import make_celery

                self._app, self._pid = make_celery(self._settings), os.getpid()
            return self._app

    def send(self, model: ModelSettings, batch: Batch, expires_s: float) -> None:
        self.app().send_task(
            contract.INFER_TASK,
            args=[batch],
            queue=model.queue,
            routing_key=model.queue,
            ignore_result=True,
            expires=expires_s,
            # Celery would saferepr() the whole batch (image bytes included) for monitoring
            argsrepr=contract.batch_label(model.name, len(batch["items"])),
            kwargsrepr="{}",
            retry=True,
            retry_policy=SEND_RETRY_POLICY,
        )

    def ping(self) -> None:
        with self.app().connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=CONNECT_TIMEOUT_S)


class RedisReplySource:
    """BLPOPs msgpack replies that workers push to this process's ``reply_to`` list."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._client: redis.Redis | None = None

    def pop(self, key: str, timeout_s: float) -> dict[str, Any] | None:
        if self._client is None:
            # Own client: a blocking BLPOP must not hold a connection others wait for.
            self._client = _redis(self._url, read_timeout_s=timeout_s + 5.0)
        got = self._client.blpop([key], timeout=timeout_s)
        if got is None:
            return None
        try:
            reply = msgpack.unpackb(got[1], raw=False)
        except (ValueError, msgpack.UnpackException) as exc:  # not Redis trouble: drop it
            log.error("dropping an undecodable reply on %s: %s", key, exc)
            return None
        return reply if isinstance(reply, dict) else None


class RedisWorkerView:
    """Worker processes from ``autodep:procs``, cached for ``web.worker_check_interval_s``."""

    def __init__(self, url: str, interval_s: float) -> None:
        self._url = url
        self._interval_s = interval_s
        self._client: redis.Redis | None = None
        self._lock = threading.Lock()
        self._procs: list[ProcStatus] = []
        self._startable: frozenset[str] = frozenset()
        self._autoscaler: dict[str, Any] | None = None
        self._error: str | None = None
        self._read_at = float("-inf")

    def _conn(self) -> redis.Redis:
        if self._client is None:
            self._client = _redis(self._url, read_timeout_s=CONNECT_TIMEOUT_S)
        return self._client

    def procs(self, fresh: bool = False) -> list[ProcStatus]:
        with self._lock:
            now = time.monotonic()
            if fresh or now - self._read_at >= self._interval_s:
                # A failure is cached too, so a Redis outage costs one attempt per interval.
                self._read_at = now
                try:
                    client = self._conn()
                    self._procs, self._error = status.read_all(client), None
                    self._autoscaler = autoscaler_state.read(client)
                    self._startable = autoscaler_state.startable(self._autoscaler)
                except (redis.RedisError, OSError) as exc:
                    self._procs, self._error = [], _unreachable(self._url, exc)
                    log.warning("%s", self._error)
            if self._error:
                raise errors.BrokerUnavailable(self._error)
            return list(self._procs)

    def peek(self) -> list[ProcStatus]:
        return self._procs

    def startable(self) -> frozenset[str]:
        return self._startable

    def autoscaler(self, fresh: bool = False) -> dict[str, Any] | None:
        """The running autoscaler's published state, None when none runs."""
        self.procs(fresh)
        return self._autoscaler

    def ping(self) -> None:
        try:
            self._conn().ping()
        except (redis.RedisError, OSError) as exc:
            raise errors.BrokerUnavailable(_unreachable(self._url, exc)) from None


def _unreachable(url: str, exc: Exception) -> str:
    where = url.rsplit("@", 1)[-1]  # never echo a password
    return f"cannot reach Redis at {where}: {exc}; check that it runs and broker.url is right"


def build_dispatcher(settings: Settings) -> Dispatcher:
    """The production dispatcher; it connects to nothing until the first request."""
    url = settings.result_url
    broker = settings.broker_url
    sender: Sender = (
        RedisPublisher(broker, CONNECT_TIMEOUT_S)
        if broker.startswith(("redis://", "rediss://"))
        else CelerySender(settings)
    )

    def report_load(dispatcher: Dispatcher) -> None:
        LoadReporter(url, dispatcher.load, dispatcher.reply_to.rsplit(":", 1)[-1]).start()

    return Dispatcher(
        settings,
        sender,
        RedisReplySource(url),
        RedisWorkerView(url, settings.web.worker_check_interval_s),
        on_start=report_load,
    )
