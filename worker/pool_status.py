"""The worker parent's own record in Redis: its queues, pool bounds and size, host memory.

Pool children describe themselves (autodep_celery.status.ProcStatus); this thread in the prefork
parent describes the pool as a whole, which only the parent knows: the target size billiard is
growing to, the bounds in force (changed by autoscale controls, from us or by hand), the bounds
the worker was started with, and whether it still consumes (a draining worker does not). The
autoscaler reads these records to count a model's pool across every worker, including workers
started by hand on other machines. worker.signals starts it at ``worker_ready``; a remote
control (worker.control) wakes it so a change is visible at once. No torch here.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

import psutil
import redis

from autodep_celery import forksafe, status
from autodep_celery.config import Settings

log = logging.getLogger(__name__)


class PoolStatus:
    """Writes this worker's :class:`~autodep_celery.status.WorkerRecord` every heartbeat."""

    def __init__(self, controller: Any, settings: Settings, models: list[str]) -> None:
        self._controller = controller
        self._settings = settings
        autoscale = getattr(controller, "autoscale", None)
        concurrency = int(getattr(controller, "concurrency", 1) or 1)
        declared_max, declared_min = (
            (int(autoscale[0]), int(autoscale[1])) if autoscale else (concurrency, concurrency)
        )
        self.record = status.WorkerRecord(
            hostname=str(controller.hostname),
            pid=os.getpid(),
            host=socket.gethostname(),
            models=list(models),
            autoscale=bool(autoscale),
            declared_max=declared_max,
            declared_min=declared_min,
            heartbeat_s=settings.worker.heartbeat_interval_s,
        )
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._client: redis.Redis | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="autodep-pool-status", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """Write again now (after a control changed the pool)."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(2.0)
        try:
            if self._client is not None:
                status.remove_worker(self._client, self.record.hostname)
        except redis.RedisError as exc:
            log.warning("cannot remove worker record: %s", exc)

    def refresh(self) -> status.WorkerRecord:
        """Read the pool's state into the record (benign reads of the parent's structures)."""
        c = self._controller
        r = self.record
        inner = getattr(getattr(c, "pool", None), "_pool", None)
        if inner is not None and hasattr(inner, "_processes"):  # prefork (billiard)
            r.processes = int(inner._processes)
            r.alive = len(inner._pool)
        else:  # solo, threads: one process, never resized
            r.processes = r.alive = 1
        scaler = getattr(c, "autoscaler", None)
        if scaler is not None:
            r.max, r.min = int(scaler.max_concurrency), int(scaler.min_concurrency)
        else:
            r.max = r.min = r.processes
        consume = c.app.amqp.queues.consume_from or {}
        r.queues = sorted(consume)
        r.consuming = bool(consume)
        try:
            r.mem_available = int(psutil.virtual_memory().available)
        except (OSError, psutil.Error):
            r.mem_available = 0
        return r

    def _run(self) -> None:
        interval = self._settings.worker.heartbeat_interval_s
        while not self._stop.is_set():
            try:
                if self._client is None:
                    self._client = redis.Redis.from_url(
                        self._settings.result_url, socket_timeout=5, socket_connect_timeout=5
                    )
                status.write_worker(self._client, self.refresh())
            except Exception as exc:  # never let the status thread die: retry next beat
                log.warning("cannot write the worker record: %s", exc)
            self._wake.wait(interval)
            self._wake.clear()


_current: PoolStatus | None = None


def start(controller: Any, settings: Settings, models: list[str]) -> PoolStatus:
    global _current
    _current = PoolStatus(controller, settings, models)
    forksafe.register(_current, _forget)  # pool children are not the parent
    _current.start()
    return _current


def _forget(writer: PoolStatus) -> None:
    global _current
    if _current is writer:
        _current = None


def current() -> PoolStatus | None:
    """The record writer of this worker parent (None in pool children and elsewhere)."""
    return _current
