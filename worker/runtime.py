"""State of one worker process that runs batches: settings, registry, Redis client, status.

worker.signals starts it in each pool child after fork (or once in the worker process for pools
without children); worker.tasks uses it for every batch. The Redis client and the heartbeat
thread are created here, after fork, so no socket or thread crosses a fork. Imports torch only
through worker.registry; no Celery.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import msgpack
import psutil
import redis

from autodep_celery import contract, forksafe, jobs, status
from autodep_celery.config import Settings
from autodep_celery.worker import schemas
from autodep_celery.worker.registry import LoadedModel, Registry

log = logging.getLogger(__name__)

ANNOUNCE_AFTER_S = 0.05
"""A batch running this long shows as "Working" in /workers; shorter ones are not announced."""


@dataclass
class Runtime:
    settings: Settings
    hostname: str
    models: list[str]
    """Models this process serves (from its worker's queues); preloaded at start."""
    queues: list[str] = field(default_factory=list)
    registry: Registry = field(init=False)
    pid: int = field(default_factory=os.getpid)
    inflight: int = 0

    def __post_init__(self) -> None:
        self.registry = Registry(self.settings)
        self.registry.on_load = self._loaded
        self.status = status.ProcStatus(
            worker=self.hostname,
            pid=self.pid,
            models=list(self.models),
            queues=list(self.queues),
            heartbeat_s=self.settings.worker.heartbeat_interval_s,
            started=time.time(),
        )
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._redis: redis.Redis | None = None
        self._stop = threading.Event()
        self._busy_since: float | None = None
        self._heartbeat: threading.Thread | None = None
        self._proc = psutil.Process(self.pid)
        self._proc.cpu_percent(None)  # the first reading is always 0: start the interval now

    @property
    def worker_id(self) -> str:
        return contract.process_id(self.hostname, self.pid)

    def client(self) -> redis.Redis | None:
        """This process's client for results and status, or None without a Redis result URL."""
        if self._redis is None and self.settings.result_url:
            self._redis = redis.Redis.from_url(
                self.settings.result_url, socket_timeout=10, socket_connect_timeout=5
            )
        return self._redis

    def _loaded(self, loaded: LoadedModel) -> None:
        schemas.publish(self.client(), [(loaded.name, loaded.module)])

    def load(self) -> None:
        """Preload and warm up this process's models, then announce it as ready.

        Models past worker.max_loaded_models load on their first batch (LRU); they are announced
        too. A model that failed to load is not, so the web answers 503 instead of queueing.
        """
        ready = self.registry.preload(self.models)
        loaded = set(self.registry.loaded_names())
        unloaded = [m for m in self.models if m not in loaded]
        schemas.publish_missing(self.client(), self.settings, unloaded)
        failed = set(self.registry.failed_names())
        with self._lock:
            self.status.models = [m for m in self.models if m in ready or m not in failed]
            self.status.ready = True
        self.write_status()

    def start_heartbeat(self) -> None:
        self._heartbeat = threading.Thread(target=self._beat, name="autodep-heartbeat", daemon=True)
        self._heartbeat.start()

    def _beat(self) -> None:
        # Ticks every ANNOUNCE_AFTER_S: a batch still running after that is announced as
        # "Working"; the full record (CPU, RSS) is written once per heartbeat interval. Waking
        # this thread from begin() instead cost a GIL hand-off per batch (architecture §2.11).
        interval_s = self.settings.worker.heartbeat_interval_s
        last = time.monotonic()
        while not self._stop.wait(min(ANNOUNCE_AFTER_S, interval_s)):
            now = time.monotonic()
            if now - last >= interval_s:
                last = now
                self.write_status(snapshot=True)
                continue
            with self._lock:
                since = self._busy_since
                due = since is not None and self.status.state != "Working"
            if due and since is not None and now - since >= ANNOUNCE_AFTER_S:
                self.write_status(snapshot=False)

    def _snapshot(self) -> None:
        try:
            self.status.cpu_percent = float(self._proc.cpu_percent(None))
            self.status.rss_bytes = int(self._proc.memory_info().rss)
        except psutil.Error:
            pass

    def write_status(self, pipe: Any = None, snapshot: bool = True) -> None:
        """Refresh this process's record; into `pipe` when given (the caller executes it).

        CPU and RSS are read (from /proc) by the heartbeat only; per-batch writes just flip
        the state. Writes are ordered by their own lock (a late "Working" never overwrites a
        newer "Idle"), while the state lock is held only to read the state, so a slow Redis
        never holds up a batch's begin().
        """
        client = pipe if pipe is not None else self.client()
        if client is None:
            return
        with self._write_lock if pipe is None else _NO_LOCK:
            with self._lock:
                if self._stop.is_set():
                    return  # removed on shutdown: a late heartbeat must not bring it back
                if snapshot:
                    self._snapshot()
                self.status.state = "Working" if self.inflight else "Idle"
                key, payload = status.encode(self.status)
            try:
                client.hset(contract.PROCS_KEY, key, payload)
            except redis.RedisError as exc:
                log.warning("cannot write worker status: %s", exc)

    def begin(self, batch_id: str, redelivered: bool = False) -> int:
        """Mark this process Working; returns the attempt number of this delivery.

        A batch still running after ANNOUNCE_AFTER_S is announced "Working" by the heartbeat
        thread, off the request's critical path. Deliveries are counted in Redis only when the
        broker redelivers a batch (its worker died), so a normal batch pays no round trip here.
        """
        with self._lock:
            self.inflight += 1
            if self._busy_since is None:
                self._busy_since = time.monotonic()
        client = self.client()
        if client is None:
            return 1
        try:
            if self._heartbeat is None:  # no thread (tests, unusual pools): write inline
                self.write_status(snapshot=False)
            if not redelivered:
                return 1
            pipe = client.pipeline(transaction=False)
            pipe.incr(contract.attempts_key(batch_id))
            pipe.expire(contract.attempts_key(batch_id), contract.ATTEMPTS_TTL_S)
            return 1 + int(pipe.execute()[0])
        except redis.RedisError as exc:
            # Counting is a guard against poison batches; a Redis hiccup must not fail the work.
            log.warning("cannot count attempts of batch %s: %s", batch_id, exc)
            return 1

    def start_jobs(self, items: list[Any], job_items: list[tuple[int, str]]) -> None:
        """Mark the batch's jobs running. The item of a job that is gone (deleted, i.e.
        cancelled) is not computed: run_batch skips an item past its deadline, so its deadline
        is set in the past. A Redis failure only loses the "running" state, not the work."""
        client = self.client()
        if client is None:
            return
        try:
            gone = jobs.mark_running(client, job_items, time.time())
        except redis.RedisError as exc:
            log.warning("cannot mark the jobs of a batch running: %s", exc)
            return
        for index in gone:
            items[index]["deadline"] = 0.0

    def finish(
        self,
        batch_id: str,
        reply: dict[str, Any],
        reply_to: str | None,
        served: int,
        redelivered: bool = False,
        job_items: list[tuple[int, str]] | None = None,
    ) -> None:
        """Store the results of the batch's jobs (autodep_celery.jobs), push the reply to
        `reply_to`, forget the attempts and mark this process Idle, in one round trip."""
        with self._lock:
            self.inflight = max(0, self.inflight - 1)
            if not self.inflight:
                self._busy_since = None
            self.status.served += served
        client = self.client()
        if client is None:
            if reply_to:
                log.warning("no Redis result URL: cannot push the reply of batch %s", batch_id)
            return
        try:
            pipe = client.pipeline(transaction=False)
            if job_items:
                # Stored here, not by the web process that accepted the job: that one may be
                # gone, and any web process answers GET /jobs/<id> from this record.
                jobs.record_results(pipe, job_items, reply, time.time())
            if reply_to:
                pipe.rpush(reply_to, msgpack.packb(reply, use_bin_type=True))
                pipe.expire(reply_to, contract.REPLY_TTL_S)
            if redelivered:
                pipe.delete(contract.attempts_key(batch_id))
            with self._write_lock:  # ordered with the heartbeat's writes
                self.write_status(pipe, snapshot=False)
                pipe.execute()
        except redis.RedisError as exc:
            log.error("cannot push the reply of batch %s to %s: %s", batch_id, reply_to, exc)

    def stop(self) -> None:
        """Stop the heartbeat and remove this process's record."""
        client = self.client()
        with self._lock:
            self._stop.set()
            if client is None:
                return
            try:
                status.remove(client, self.status)
            except redis.RedisError as exc:
                log.warning("cannot remove worker status: %s", exc)


_NO_LOCK = contextlib.nullcontext()

_current: Runtime | None = None
_current_lock = threading.Lock()


def current() -> Runtime | None:
    """The runtime of this process (None in a prefork parent or before start)."""
    return _current


def _forget(runtime: Runtime) -> None:
    """After a fork: the parent's runtime (its threads, its Redis client) is not the child's."""
    global _current, _current_lock
    _current_lock = threading.Lock()
    if _current is runtime:
        _current = None


def install(runtime: Runtime) -> Runtime:
    global _current
    with _current_lock:
        _current = runtime
    forksafe.register(runtime, _forget)
    return runtime


def ensure(settings: Settings, hostname: str, models: list[str]) -> Runtime:
    """The current runtime, or a lazily loading one when no signal started it."""
    global _current
    with _current_lock:
        rt = current()
        if rt is None:
            rt = Runtime(settings=settings, hostname=hostname, models=models)
            rt.status.ready = True  # models load on their first batch
            _current = rt
            forksafe.register(rt, _forget)
        return rt
