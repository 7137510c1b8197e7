"""Where a web process's replies come from: its own Redis list, which workers RPUSH to.

One collector thread per process BLPOPs ``autodep:reply:<token>`` (docs/architecture.md §2.2)
on a client of its own, so a blocking pop never holds a connection that others wait for.
Must not import torch or Flask.
"""

from __future__ import annotations

import logging
from typing import Any

import msgpack
import redis

from autodep_celery import forksafe
from autodep_celery.web.redis_client import connect

log = logging.getLogger(__name__)


class RedisReplySource:
    """BLPOPs msgpack replies that workers push to this process's ``reply_to`` list."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._client: redis.Redis | None = None
        forksafe.register(self, RedisReplySource._after_fork)

    def _after_fork(self) -> None:
        self._client = None

    def pop(self, key: str, timeout_s: float) -> dict[str, Any] | None:
        if self._client is None:
            # Own client: a blocking BLPOP must not hold a connection others wait for.
            self._client = connect(self._url, read_timeout_s=timeout_s + 5.0)
        got = self._client.blpop([key], timeout=timeout_s)
        if got is None:
            return None
        try:
            payload = got[1]
            reply = msgpack.unpackb(payload.encode() if isinstance(payload, str) else payload)
        except (ValueError, msgpack.UnpackException) as exc:  # not Redis trouble: drop it
            log.error("dropping an undecodable reply on %s: %s", key, exc)
            return None
        return reply if isinstance(reply, dict) else None
