"""How batches leave a web process: the two Senders of the dispatcher.

On redis:// brokers, :class:`RedisPublisher` LPUSHes the exact message Celery's ``send_task``
would write, in one round trip (docs/architecture.md §2.2); on any other broker (RabbitMQ),
:class:`CelerySender` calls ``send_task`` by name. :func:`sender_for` picks one. Connections
open lazily in the process that sends, never in the gunicorn master. Must not import torch or
Flask.
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

from autodep_celery import contract, forksafe
from autodep_celery.config import ModelSettings, Settings
from autodep_celery.contract import Batch
from autodep_celery.web.interfaces import Sender
from autodep_celery.web.redis_client import CONNECT_TIMEOUT_S

SEND_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}
"""A broker blip is retried briefly; a dead broker fails the batch within about a second."""

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
        self._lock = threading.Lock()
        self._origin = ""
        forksafe.register(self, RedisPublisher._after_fork)

    def _after_fork(self) -> None:
        self._client, self._lock = None, threading.Lock()  # the parent's sockets stay there

    def _conn(self) -> redis.Redis:
        with self._lock:
            if self._client is None:
                self._client = redis.Redis.from_url(
                    self._url,
                    socket_connect_timeout=self._timeout_s,
                    socket_timeout=self._timeout_s,
                    # an LPUSH that timed out may have landed: never send a batch twice
                    retry_on_timeout=False,
                )
                self._origin = f"gen{os.getpid()}@{socket.gethostname()}"
            return self._client

    def send(self, model: ModelSettings, batch: Batch, expires_s: float) -> None:
        message = celery_message(model.queue, batch, expires_s, origin=self._origin)
        self._conn().lpush(model.queue, orjson.dumps(message))

    def ping(self) -> None:
        self._conn().ping()


class CelerySender:
    """Publishes batches with ``send_task`` by name; the web never imports worker code."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._app: Any = None
        self._lock = threading.Lock()
        forksafe.register(self, CelerySender._after_fork)

    def _after_fork(self) -> None:
        self._app, self._lock = None, threading.Lock()  # its broker pool stayed in the parent

    def app(self) -> Any:
        with self._lock:
            if self._app is None:
                from autodep_celery.celery_app import make_celery

                self._app = make_celery(self._settings)
            return self._app

    def send(self, model: ModelSettings, batch: Batch, expires_s: float) -> None:
        self.app().send_task(
            contract.INFER_TASK,
            args=[batch],
            queue=model.queue,
            routing_key=model.queue,
            ignore_result=True,
            expires=expires_s,
            # Celery would saferepr() the whole batch (image bytes included) for monitoring
            argsrepr=contract.batch_label(model.name, len(batch["items"])),
            kwargsrepr="{}",
            retry=True,
            retry_policy=SEND_RETRY_POLICY,
        )

    def ping(self) -> None:
        with self.app().connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=CONNECT_TIMEOUT_S)


def sender_for(settings: Settings) -> Sender:
    broker = settings.broker_url
    if broker.startswith(("redis://", "rediss://")):
        return RedisPublisher(broker, CONNECT_TIMEOUT_S)
    return CelerySender(settings)
