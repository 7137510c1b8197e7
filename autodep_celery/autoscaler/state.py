"""What the running autoscaler publishes, and the pool sizes pinned by hand.

The autoscaler writes its state (per model current, desired, min, max, backlog, queue wait, last
decision) to ``autodep:autoscaler`` every interval with a TTL of a few intervals, so a dead
autoscaler disappears by itself: the web then answers GET /autoscaler with ``running: false``
and stops counting scale-to-zero models as startable. `autodep scale MODEL N` pins a size in
``autodep:scale:<model>``; the autoscaler follows a pin until it is removed. Imports redis only.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from autodep_celery.contract import AUTOSCALER_KEY, SCALE_KEY_PREFIX

STATE_TTL_INTERVALS = 5
"""The state key lives this many intervals (at least 3 s) after the autoscaler's last write."""


def publish(client: redis.Redis, state: dict[str, Any], interval_s: float) -> None:
    ttl_ms = int(max(3.0, STATE_TTL_INTERVALS * interval_s) * 1000)
    client.set(AUTOSCALER_KEY, json.dumps(state), px=ttl_ms)


def clear(client: redis.Redis) -> None:
    client.delete(AUTOSCALER_KEY)


def read(client: redis.Redis) -> dict[str, Any] | None:
    """The running autoscaler's state, or None when none runs (or the key is unreadable)."""
    raw = client.get(AUTOSCALER_KEY)
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def startable(state: dict[str, Any] | None) -> frozenset[str]:
    """Models the running autoscaler starts on demand (it can spawn their worker)."""
    if not state:
        return frozenset()
    models = state.get("models")
    if not isinstance(models, dict):
        return frozenset()
    return frozenset(
        name for name, m in models.items() if isinstance(m, dict) and m.get("startable")
    )


def pin_key(model: str) -> str:
    return SCALE_KEY_PREFIX + model


def pin(client: redis.Redis, model: str, processes: int | None) -> None:
    """Pin `model` at `processes` (None: back to automatic)."""
    if processes is None:
        client.delete(pin_key(model))
    else:
        client.set(pin_key(model), str(processes))


def read_pins(client: redis.Redis, models: list[str]) -> dict[str, int]:
    if not models:
        return {}
    values = client.mget([pin_key(m) for m in models])
    pins: dict[str, int] = {}
    for model, raw in zip(models, values, strict=True):
        try:
            if raw is not None:
                pins[model] = max(0, int(raw))
        except ValueError:
            continue
    return pins
