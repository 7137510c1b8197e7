"""The web's one-LPUSH publisher writes the very message Celery's send_task writes."""

from __future__ import annotations

import base64
import json
import time
from datetime import datetime

import msgpack
import redis

from autodep_celery import config, contract
from autodep_celery.celery_app import make_celery
from autodep_celery.config import ModelSettings, Settings
from autodep_celery.web.publisher import RedisPublisher

VOLATILE_HEADERS = {"id", "root_id", "expires", "origin"}
VOLATILE_PROPERTIES = {"correlation_id", "delivery_tag", "reply_to", "expiration"}


def test_fast_publish_equals_celery_send_task(redis_url: str) -> None:
    model = ModelSettings("nobody", "/nonexistent.pt")
    settings = Settings(broker=config.BrokerSettings(url=redis_url), models=(model,))
    batch = contract.make_batch(
        "nobody",
        "b1",
        "autodep:reply:x",
        [contract.image_item("ImageClassification", b"\x89PNG..", time.time() + 30, 3)],
    )
    app = make_celery(settings)
    sent = time.time()
    app.send_task(
        contract.INFER_TASK,
        args=[batch],
        queue=model.queue,
        routing_key=model.queue,
        ignore_result=True,
        expires=30.0,
        argsrepr=contract.batch_label("nobody", 1),
        kwargsrepr="{}",
    )
    RedisPublisher(redis_url).send(model, batch, 30.0)
    client = redis.Redis.from_url(redis_url)
    try:
        celery_raw, ours_raw = client.rpop(model.queue), client.rpop(model.queue)
    finally:
        client.delete(model.queue)
        client.close()
    celery_msg, ours = json.loads(celery_raw), json.loads(ours_raw)
    for m in (celery_msg, ours):
        headers, properties = m["headers"], m["properties"]
        # per message, but not free: one id throughout and an expiry 30 s after sending
        assert headers["root_id"] == properties["correlation_id"] == headers["id"]
        expires = datetime.fromisoformat(headers["expires"]).timestamp()
        assert sent - 1 < expires - 30 < time.time() + 1, headers["expires"]
        for key in VOLATILE_HEADERS:
            m["headers"].pop(key)
        for key in VOLATILE_PROPERTIES:
            m["properties"].pop(key)
    body = msgpack.unpackb(base64.b64decode(ours.pop("body")), raw=False)
    assert msgpack.unpackb(base64.b64decode(celery_msg.pop("body")), raw=False) == body
    assert body[0] == [batch]
    assert ours == celery_msg
