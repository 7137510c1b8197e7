"""Worker process status in Redis: written by each pool child, read by the web and autoscaler.

Each pool child keeps one field of the ``autodep:procs`` hash fresh (state, models, requests
served, CPU and RSS). Readers drop records older than a few heartbeats, so a SIGKILLed child
disappears within seconds. Reading one hash answers /workers and "has this model a live worker?"
without a Celery broadcast (~0.6 s). Imports redis and json only.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from autodep_celery.contract import PROCS_KEY

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
    ts: float = 0.0
    heartbeat_s: float = 2.0

    @property
    def key(self) -> str:
        return f"{self.worker}/{self.pid}"

    def fresh(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return now - self.ts <= max(3.0, STALE_AFTER_HEARTBEATS * self.heartbeat_s)


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
    now = time.time() if now is None else now
    live: list[ProcStatus] = []
    stale: list[str] = []
    for key, raw in client.hgetall(PROCS_KEY).items():
        try:
            data: dict[str, Any] = json.loads(raw)
            status = ProcStatus(**{k: v for k, v in data.items() if k in _FIELDS})
        except (ValueError, TypeError):
            continue  # a record this version cannot read (e.g. a newer worker): skip it
        if status.fresh(now):
            live.append(status)
        elif now - status.ts > DELETE_AFTER_S:
            stale.append(key)
    if stale:
        client.hdel(PROCS_KEY, *stale)
    live.sort(key=lambda s: s.key)
    return live


_FIELDS = {f for f in ProcStatus.__dataclass_fields__}


def models_with_workers(procs: list[ProcStatus]) -> set[str]:
    return {m for p in procs if p.ready for m in p.models}
