"""The web tier's reader of worker and autoscaler status: the ``autodep:procs`` hash and the
autoscaler's published state, cached for ``web.worker_check_interval_s``, and the models'
forward() signatures (for /v2 metadata).

GET /workers*, /ready and /autoscaler read it directly; the dispatcher reads it too (which
models have a ready worker, how many batches to keep in flight). One read of Redis answers
all of them, never a Celery broadcast. Must not import torch or Flask.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import redis

from autodep_celery import contract, errors, forksafe, status
from autodep_celery.autoscaler import state as autoscaler_state
from autodep_celery.status import ProcStatus
from autodep_celery.web.redis_client import connect, unreachable

log = logging.getLogger(__name__)


class RedisStatusView:
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
        self._schemas: dict[str, tuple[float, dict[str, Any]]] = {}
        forksafe.register(self, RedisStatusView._after_fork)

    def _after_fork(self) -> None:
        self._client, self._lock = None, threading.Lock()

    def _conn(self) -> redis.Redis:
        if self._client is None:
            self._client = connect(self._url)
        return self._client

    def procs(self, fresh: bool = False) -> list[ProcStatus]:
        with self._lock:
            now = time.monotonic()
            if fresh or now - self._read_at >= self._interval_s:
                # A failure is cached too, so a Redis outage costs one attempt per interval.
                self._read_at = now
                try:
                    client = self._conn()
                    self._procs, self._error = status.read_serving(client), None
                    self._autoscaler = autoscaler_state.read(client)
                    self._startable = autoscaler_state.startable(self._autoscaler)
                except (redis.RedisError, OSError) as exc:
                    self._procs, self._error = [], unreachable(self._url, exc)
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
            raise errors.BrokerUnavailable(unreachable(self._url, exc)) from None

    def model_schema(self, model: str) -> dict[str, Any] | None:
        """`model`'s published forward() signature, cached like the processes; a miss is not
        cached, so the signature shows as soon as the first worker has loaded the model."""
        now = time.monotonic()
        cached = self._schemas.get(model)
        if cached is not None and now - cached[0] < self._interval_s:
            return cached[1]
        try:
            raw = self._conn().get(contract.schema_key(model))
        except (redis.RedisError, OSError) as exc:
            raise errors.BrokerUnavailable(unreachable(self._url, exc)) from None
        try:
            schema = json.loads(raw) if raw else None
        except ValueError:
            schema = None
        if not isinstance(schema, dict):
            return None
        self._schemas[model] = (now, schema)
        return schema
