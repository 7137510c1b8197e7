"""Worker status in Redis: written by each pool child and each worker parent, read by the web
and the autoscaler.

Each pool child keeps one field of the ``autodep:procs`` hash fresh (state, models, requests
served, CPU and RSS). Readers drop records older than a few heartbeats, so a SIGKILLed child
disappears within seconds. Reading one hash answers /workers and "has this model a live worker?"
without a Celery broadcast (~0.6 s). Imports redis and json only.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import redis

from autodep_celery.contract import PROCS_KEY, WORKERS_KEY


class _Record(Protocol):
    ts: float

    def fresh(self, now: float | None = None) -> bool: ...


def _fresh(ts: float, heartbeat_s: float, now: float | None) -> bool:
    """Written within the last few heartbeats (readers' clocks compared with the writer's)."""
    now = time.time() if now is None else now
    return now - ts <= max(3.0, STALE_AFTER_HEARTBEATS * heartbeat_s)


_R = TypeVar("_R", bound=_Record)

STALE_AFTER_HEARTBEATS = 3
DELETE_AFTER_S = 600.0
"""Records this old are removed by readers. Liveness compares the writer's clock with the
reader's, so hosts must keep their clocks in sync (NTP); a reader never deletes a record that
is merely a little stale, so a skewed clock hides a worker but never erases it."""


@dataclass
class ProcStatus:
    worker: str
    pid: int
    models: list[str] = field(default_factory=list)
    queues: list[str] = field(default_factory=list)
    state: str = "Idle"
    """"Working" while a batch runs, else "Idle" (Autodep's words)."""
    served: int = 0
    """Requests (items, not batches) this process has answered."""
    cpu_percent: float = 0.0
    rss_bytes: int = 0
    ready: bool = False
    """True once the models are loaded and warmed up."""
    started: float = 0.0
    """Unix time the process started serving (TorchServe's describe shows it as startTime)."""
    ts: float = 0.0
    heartbeat_s: float = 2.0

    @property
    def key(self) -> str:
        return f"{self.worker}/{self.pid}"

    def fresh(self, now: float | None = None) -> bool:
        return _fresh(self.ts, self.heartbeat_s, now)


def encode(status: ProcStatus) -> tuple[str, str]:
    """(field, JSON) of a record, stamped now; vars() not asdict(): the record is flat, and
    asdict's deep copy costs more than the HSET."""
    status.ts = time.time()
    return status.key, json.dumps(vars(status))


def write(client: redis.Redis, status: ProcStatus) -> None:
    client.hset(PROCS_KEY, *encode(status))


def remove(client: redis.Redis, status: ProcStatus) -> None:
    client.hdel(PROCS_KEY, status.key)


def read_all(client: redis.Redis, now: float | None = None) -> list[ProcStatus]:
    """Live processes, sorted by name; long-dead records are deleted as a side effect."""
    return _read_live(client, PROCS_KEY, ProcStatus, now, sort_key=lambda s: s.key)


def _read_live(
    client: redis.Redis,
    key: str,
    cls: type[_R],
    now: float | None,
    sort_key: Callable[[_R], str],
) -> list[_R]:
    """The fresh records of the hash `key`; records dead for DELETE_AFTER_S are removed, and
    records this version cannot read (e.g. from a newer worker) are skipped."""
    now = time.time() if now is None else now
    known = set(cls.__dataclass_fields__)  # type: ignore[attr-defined]  # _R: a dataclass
    live: list[_R] = []
    stale: list[bytes | str] = []
    for name, raw in client.hgetall(key).items():
        try:
            data: dict[str, Any] = json.loads(raw)
            record = cls(**{k: v for k, v in data.items() if k in known})
        except (ValueError, TypeError):
            continue
        if record.fresh(now):
            live.append(record)
        elif now - record.ts > DELETE_AFTER_S:
            stale.append(name)
    if stale:
        client.hdel(key, *stale)
    live.sort(key=sort_key)
    return live


def models_with_workers(procs: list[ProcStatus]) -> set[str]:
    return {m for p in procs if p.ready for m in p.models}


@dataclass
class WorkerRecord:
    """One Celery worker (the prefork parent), written by worker.pool_status every heartbeat.

    The autoscaler sizes pools from these: `processes` is the pool's target size (billiard's
    count, raised at once by a grow) and `alive` the children that exist; `declared_*` are the
    bounds the worker was started with (`--autoscale=MAX,MIN`), which the autoscaler never
    exceeds, while `max`/`min` are the bounds in force now (changed by autoscale controls).
    """

    hostname: str
    pid: int = 0
    host: str = ""
    queues: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    autoscale: bool = False
    """False: a fixed pool (`-c N`), counted but never resized."""
    declared_max: int = 0
    declared_min: int = 0
    max: int = 0
    min: int = 0
    processes: int = 0
    alive: int = 0
    mem_available: int = 0
    """Bytes of memory available on the worker's host (psutil), for the memory guard."""
    consuming: bool = True
    """False once the worker stopped consuming (being drained)."""
    ts: float = 0.0
    heartbeat_s: float = 2.0

    def fresh(self, now: float | None = None) -> bool:
        return _fresh(self.ts, self.heartbeat_s, now)


def write_worker(client: redis.Redis, record: WorkerRecord) -> None:
    record.ts = time.time()
    client.hset(WORKERS_KEY, record.hostname, json.dumps(vars(record)))


def remove_worker(client: redis.Redis, hostname: str) -> None:
    client.hdel(WORKERS_KEY, hostname)


def read_workers(client: redis.Redis, now: float | None = None) -> list[WorkerRecord]:
    """Live workers, sorted by hostname; long-dead records are deleted as a side effect."""
    return _read_live(client, WORKERS_KEY, WorkerRecord, now, sort_key=lambda r: r.hostname)


def read_serving(client: redis.Redis, now: float | None = None) -> list[ProcStatus]:
    """Live processes whose worker parent is live too. A frozen parent (SIGSTOP, a stuck event
    loop) dispatches nothing, while its children keep their own heartbeats: without this,
    readiness said 200 and requests waited for their deadline (504)."""
    parents = {w.hostname for w in read_workers(client, now)}
    return [p for p in read_all(client, now) if p.worker in parents]
