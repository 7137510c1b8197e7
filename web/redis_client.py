"""One way for the web tier to open Redis and to say it cannot: bounded timeouts, and an error
that names the host but never a password. Used by web.replies and web.status_view."""

from __future__ import annotations

import redis

from autodep_celery import errors

CONNECT_TIMEOUT_S = 2.0
"""Bound on connecting to the broker or Redis, so a dead broker answers 503 instead of hanging."""


def connect(url: str, read_timeout_s: float = CONNECT_TIMEOUT_S) -> redis.Redis:
    if not url:
        raise errors.BrokerUnavailable(
            "no Redis URL for results and worker status; set broker.result_url "
            "(or use a redis:// broker.url)"
        )
    return redis.Redis.from_url(
        url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=read_timeout_s
    )


def unreachable(url: str, exc: Exception) -> str:
    where = url.rsplit("@", 1)[-1]  # never echo a password
    return f"cannot reach Redis at {where}: {exc}; check that it runs and broker.url is right"
