"""The signal: each model's whole backlog, read from Redis in one pass.

Per model: items pending in every web process and items they sent that are not answered yet
(web.load publishes both with a TTL), messages in the model's queue (its priority sub-lists
included), worker processes computing one of its batches (the status hash), and the oldest
pending item's wait. Queue length alone is not enough: under load most of the backlog waits in
the web processes, which cap their in-flight batches, so LLEN reads about zero while the workers
are saturated (docs/architecture.md). Imports redis only.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

import redis

from autodep_celery.config import Settings
from autodep_celery.contract import LOAD_KEY_PREFIX
from autodep_celery.status import ProcStatus

PRIORITY_STEPS = (0, 3, 6, 9)
"""kombu's Redis transport keeps priority p of a queue in ``<queue>\\x06\\x16<p>`` (p > 0)."""
PRIORITY_SEP = "\x06\x16"


@dataclass(frozen=True)
class Signal:
    pending: int = 0
    """Items waiting in web processes' dispatchers (not yet sent)."""
    sent: int = 0
    """Items sent by web processes and not answered yet: in the queue or computing."""
    batches: int = 0
    """Batches those items travel in."""
    queued: int = 0
    """Messages (batches) in the model's queue, from any producer."""
    busy: int = 0
    """Worker processes computing a batch of this model now."""
    oldest_wait_s: float = 0.0
    """Age of the oldest item still waiting in a web process."""

    @property
    def backlog(self) -> float:
        """Requests waiting or computing. Queued messages count at the web's mean batch size
        (one item each when they come from another producer); a busy process at least one."""
        per_batch = self.sent / self.batches if self.batches else 1.0
        elsewhere = self.queued * per_batch + self.busy
        return float(self.pending + max(self.sent, elsewhere))


def queue_keys(queue: str) -> list[str]:
    return [queue if p == 0 else f"{queue}{PRIORITY_SEP}{p}" for p in PRIORITY_STEPS]


def _web_loads(client: redis.Redis) -> list[dict[str, dict[str, float]]]:
    keys = list(client.scan_iter(match=LOAD_KEY_PREFIX + "*", count=1000))
    if not keys:
        return []
    loads = []
    for raw in client.mget(keys):
        if raw is None:  # expired between SCAN and MGET
            continue
        try:
            data = json.loads(raw)
        except ValueError:
            continue
        models = data.get("models") if isinstance(data, dict) else None
        if isinstance(models, dict):
            loads.append(models)
    return loads


def read(client: redis.Redis, settings: Settings, procs: Iterable[ProcStatus]) -> dict[str, Signal]:
    """One Signal per configured model (three round trips: SCAN, MGET, a pipelined LLEN)."""
    names = [m.name for m in settings.models]
    pipe = client.pipeline(transaction=False)
    for m in settings.models:
        for key in queue_keys(m.queue):
            pipe.llen(key)
    lengths = pipe.execute()
    steps = len(PRIORITY_STEPS)
    queued = {name: sum(lengths[i * steps : (i + 1) * steps]) for i, name in enumerate(names)}
    busy = dict.fromkeys(names, 0)
    for p in procs:
        if p.state == "Working":
            for model in p.models:
                if model in busy:
                    busy[model] += 1
    totals = {name: [0.0, 0.0, 0.0, 0.0] for name in names}  # pending, sent, batches, oldest
    for load in _web_loads(client):
        for name, values in load.items():
            t = totals.get(name)
            if t is None or not isinstance(values, dict):
                continue
            t[0] += float(values.get("pending", 0) or 0)
            t[1] += float(values.get("sent", 0) or 0)
            t[2] += float(values.get("batches", 0) or 0)
            t[3] = max(t[3], float(values.get("oldest_s", 0) or 0))
    return {
        name: Signal(
            pending=int(totals[name][0]),
            sent=int(totals[name][1]),
            batches=int(totals[name][2]),
            queued=int(queued[name]),
            busy=busy[name],
            oldest_wait_s=totals[name][3],
        )
        for name in names
    }
