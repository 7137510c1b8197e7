"""The latency floor of the served system at concurrency 1, measured on the running stack.

Two parts that no tuning of ours removes: gunicorn + Flask answering ``GET /health`` (the HTTP
floor), and one Celery round trip of an empty batch through the real broker and worker (publish,
worker parent, pool child, task, reply, no model work). Their sum is what a request costs before
any image is decoded; the served p50 at c=1 is compared with it.
"""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path
from typing import Any

import redis

from autodep_celery import contract
from autodep_celery.bench import wrk
from autodep_celery.config import ModelSettings
from autodep_celery.web.publisher import RedisPublisher

_REDIS_URL_FILE = re.compile(
    r"embedded Redis at redis://\S+ .*the URL with its password is in (\S+)\)"
)


def broker_url_from_log(log: Path) -> str | None:
    """The embedded Redis of the newest `autodep serve` in `log` (runs append to it): the log
    shows its URL without the password, and names the private file that holds it."""
    found = _REDIS_URL_FILE.findall(log.read_text(errors="replace")) if log.exists() else []
    if not found:
        return None
    try:
        return Path(found[-1]).read_text().strip() or None
    except OSError:
        return None


def celery_round_trip_ms(broker_url: str, model: str, n: int = 300) -> dict[str, float]:
    """p50/p90 of publish -> worker -> reply for batches with no items, one at a time."""
    publisher = RedisPublisher(broker_url)
    client = redis.Redis.from_url(broker_url)
    key = contract.reply_key("floor-" + uuid.uuid4().hex)
    settings = ModelSettings(model, "unused")
    times = []
    try:
        for i in range(n + 20):
            batch = contract.make_batch(model, uuid.uuid4().hex, key, [])
            start = time.perf_counter()
            publisher.send(settings, batch, 30.0)
            if client.blpop([key], timeout=10) is None:
                raise RuntimeError("no reply from the worker within 10 s")
            if i >= 20:  # the first ones warm connections up
                times.append((time.perf_counter() - start) * 1000)
    finally:
        client.delete(key)
        client.close()
    times.sort()
    return {"p50_ms": times[len(times) // 2], "p90_ms": times[int(len(times) * 0.9)], "n": n}


def measure(
    base_url: str, broker_url: str | None, model: str, workdir: Path, duration_s: float
) -> dict[str, Any]:
    script = workdir / "get.lua"
    init = wrk.LUA_SCRIPT[
        wrk.LUA_SCRIPT.index("function init") : wrk.LUA_SCRIPT.index("function response")
    ]
    script.write_text(
        wrk.LUA_SCRIPT.replace(init, 'function init(args)\n  wrk.method = "GET"\nend\n\n')
    )
    empty = workdir / "empty-body"
    empty.write_bytes(b"")
    http = wrk.run(base_url + "/health", script, empty, 1, duration_s)
    out: dict[str, Any] = {
        "http_health_p50_ms": http.p50_ms,
        "http_health_req_per_s": http.req_per_s,
    }
    if broker_url:
        out["celery_empty_batch"] = celery_round_trip_ms(broker_url, model)
    return out
