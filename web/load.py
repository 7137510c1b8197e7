"""Publishes what this web process holds per model, for the autoscaler.

Under load most waiting requests sit in the web processes' dispatchers (each caps its in-flight
batches at the live worker processes plus one), not in Redis, so the queue's length alone reads
about zero while the workers are saturated. Each web process therefore writes its own share
(items pending here, items sent and not answered, the oldest pending item's age) to
``autodep:load:<token>`` with a short TTL: a dead process stops counting by itself. An idle
process writes nothing after its last zero. Started by the dispatcher in the process that uses
it (after gunicorn forks). Must not import torch or Flask.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import orjson
import redis

from autodep_celery import contract

log = logging.getLogger(__name__)

PUBLISH_INTERVAL_S = 0.5
"""How often a busy web process refreshes its share: half the autoscaler's default interval."""
TTL_S = 3.0
"""A share not refreshed for this long is gone: the process died or hangs."""

Snapshot = Callable[[], dict[str, dict[str, float]]]


class LoadReporter:
    def __init__(self, url: str, snapshot: Snapshot, token: str) -> None:
        self._url = url
        self._snapshot = snapshot
        self.key = contract.LOAD_KEY_PREFIX + token
        self._stop = threading.Event()
        self._client: redis.Redis | None = None
        self._was_busy = False

    def start(self) -> None:
        threading.Thread(target=self._run, name="autodep-load", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def publish_once(self) -> bool:
        """Write the current share if anything is held (or was, last time). True if written."""
        models = self._snapshot()
        busy = any(v["pending"] or v["sent"] for v in models.values())
        if not busy and not self._was_busy:
            return False
        if self._client is None:
            self._client = redis.Redis.from_url(
                self._url, socket_timeout=2.0, socket_connect_timeout=2.0
            )
        payload = {"ts": time.time(), "models": models if busy else {}}
        self._client.set(self.key, orjson.dumps(payload), px=int(TTL_S * 1000))
        self._was_busy = busy
        return True

    def _run(self) -> None:
        while not self._stop.wait(PUBLISH_INTERVAL_S):
            try:
                self.publish_once()
            except (redis.RedisError, OSError) as exc:  # the next tick tries again
                log.debug("cannot publish load: %s", exc)
            except Exception:
                log.exception("load reporter failed; continuing")
