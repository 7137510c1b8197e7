"""Publish ``autodep.infer`` batches to a Redis broker with one LPUSH, in Celery's own format.

``app.send_task`` costs ~0.6 ms of web CPU per batch (routing, protocol building, kombu's
publish wrappers), which py-spy put at ~19% of a web process under load. On a Redis broker the
message Celery would write is fixed: a JSON envelope holding Celery's task protocol 2 headers and
the msgpack body, LPUSHed to the queue's list (kombu's Redis transport, default exchange). This
module writes exactly that message, so workers, Flower and ``celery inspect`` see an ordinary
task; an integration test compares it with what ``send_task`` writes. Other brokers keep
:class:`web.transport.CelerySender`. Must not import torch or Flask.
"""

from __future__ import annotations

import base64
import os
import socket
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import msgpack
import orjson
import redis

from autodep_celery import contract
from autodep_celery.config import ModelSettings
from autodep_celery.contract import Batch

_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def celery_message(
    queue: str, batch: Batch, expires_s: float, task_id: str | None = None, origin: str = ""
) -> dict[str, Any]:
    """The kombu envelope ``send_task(INFER_TASK, args=[batch], queue=queue, ignore_result=True,
    expires=expires_s)`` puts on a Redis broker (Celery task protocol 2, msgpack body)."""
    task_id = task_id or str(uuid.uuid4())
    body = msgpack.packb(([batch], {}, _EMBED), use_bin_type=True)
    expires = (datetime.now(UTC) + timedelta(seconds=expires_s)).isoformat()
    argsrepr = contract.batch_label(batch["model"], len(batch["items"]))
    return {
        "body": base64.b64encode(body).decode("ascii"),
        "content-encoding": "binary",
        "content-type": "application/x-msgpack",
        "headers": {
            "lang": "py",
            "task": contract.INFER_TASK,
            "id": task_id,
            "shadow": None,
            "eta": None,
            "expires": expires,
            "group": None,
            "group_index": None,
            "retries": 0,
            "timelimit": [None, None],
            "root_id": task_id,
            "parent_id": None,
            "argsrepr": argsrepr,
            "kwargsrepr": "{}",
            "origin": origin,
            "ignore_result": True,
            "replaced_task_nesting": 0,
            "stamped_headers": None,
            "stamps": {},
        },
        "properties": {
            "correlation_id": task_id,
            "reply_to": "",
            "argsrepr": argsrepr,
            "kwargsrepr": "{}",
            "delivery_mode": 2,
            "expiration": str(max(1, int(expires_s * 1000))),
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }


class RedisPublisher:
    """The Sender of the dispatcher for redis:// brokers (one LPUSH per batch)."""

    def __init__(self, broker_url: str, connect_timeout_s: float = 2.0) -> None:
        self._url = broker_url
        self._timeout_s = connect_timeout_s
        self._client: redis.Redis | None = None
        self._pid = 0
        self._lock = threading.Lock()
        self._origin = f"gen{os.getpid()}@{socket.gethostname()}"

    def _conn(self) -> redis.Redis:
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                self._client = redis.Redis.from_url(
                    self._url,
                    socket_connect_timeout=self._timeout_s,
                    socket_timeout=self._timeout_s,
                    # an LPUSH that timed out may have landed: never send a batch twice
                    retry_on_timeout=False,
                )
                self._pid = os.getpid()
                self._origin = f"gen{self._pid}@{socket.gethostname()}"
            return self._client

    def send(self, model: ModelSettings, batch: Batch, expires_s: float) -> None:
        message = celery_message(model.queue, batch, expires_s, origin=self._origin)
        self._conn().lpush(model.queue, orjson.dumps(message))

    def ping(self) -> None:
        self._conn().ping()
