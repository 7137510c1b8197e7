"""autodep_celery.kombu_tuning on a real Redis. kombu's Redis channel builds a new redis.Redis
(copying ~200 response callbacks) for every publish, fetch and ack; with the patch a channel
builds one and keeps it. Messages still go and come back, also after kombu replaces its
connection pool (as it does after a connection error or a fork), and the asynchronous clients
that poll the queues are left alone. Uses its own Redis database, away from the stack's queues.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import kombu
import pytest
import redis
from kombu.simple import SimpleQueue
from kombu.transport import redis as kombu_redis

from autodep_celery import kombu_tuning

N = 20
"""Messages per round trip: each is published, fetched and acked."""


@pytest.fixture
def url(redis_url: str) -> Iterator[str]:
    own = redis_url.rsplit("/", 1)[0] + "/3"
    yield own
    client = redis.Redis.from_url(own)
    try:
        client.flushdb()
    finally:
        client.close()


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[redis.Redis]:
    """Every redis.Redis built while the test runs."""
    made: list[redis.Redis] = []
    init = redis.Redis.__init__

    def counting(self: redis.Redis, *args: object, **kwargs: object) -> None:
        made.append(self)
        init(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(redis.Redis, "__init__", counting)
    return made


@dataclass
class RoundTrip:
    received: list[int]
    clients_built: int
    """redis.Redis objects built for the publishes, fetches and acks (not the channel's own)."""


def round_trip(url: str, built: list[redis.Redis]) -> RoundTrip:
    """N messages published, fetched and acked through one kombu channel."""
    with kombu.Connection(url) as conn:
        channel = conn.channel()
        queue = SimpleQueue(channel, f"kombu-tuning-{uuid.uuid4().hex}")
        try:
            before = len(built)
            for i in range(N):
                queue.put(i)
            received = []
            for _ in range(N):
                message = queue.get(timeout=5)
                received.append(message.payload)
                message.ack()
            return RoundTrip(received, len(built) - before)
        finally:
            queue.close()


def test_one_client_per_channel_instead_of_one_per_call(
    url: str, built: list[redis.Redis], monkeypatch: pytest.MonkeyPatch
) -> None:
    kombu_tuning.install()
    patched = round_trip(url, built)
    kombus_own = kombu_redis.Channel._create_client.__wrapped__  # type: ignore[attr-defined]
    monkeypatch.setattr(kombu_redis.Channel, "_create_client", kombus_own)
    unpatched = round_trip(url, built)
    assert patched.received == unpatched.received == list(range(N))
    assert patched.clients_built <= 1  # the channel's client, built on first use
    assert unpatched.clients_built >= 3 * N  # kombu's own: one per publish, fetch and ack


def test_the_kept_client_follows_the_pool_kombu_replaces(url: str) -> None:
    kombu_tuning.install()
    with kombu.Connection(url) as conn:
        channel = conn.channel()
        queue = SimpleQueue(channel, f"kombu-tuning-{uuid.uuid4().hex}")
        try:
            queue.put("before")
            kept = channel._create_client()
            assert channel._create_client() is kept and kept.connection_pool is channel.pool
            channel._disconnect_pools()  # what kombu does after a connection error
            queue.put("after")
            again = channel._create_client()
            assert again is not kept and again.connection_pool is channel.pool
            assert again.connection_pool is not kept.connection_pool
            got = [queue.get(timeout=5) for _ in range(2)]
            for message in got:
                message.ack()
            assert [m.payload for m in got] == ["before", "after"]
        finally:
            queue.close()


def test_asynchronous_clients_are_left_alone(url: str) -> None:
    kombu_tuning.install()
    with kombu.Connection(url) as conn:
        channel = conn.channel()
        kept = channel._create_client()
        polling = channel._create_client(asynchronous=True)
        assert polling is not kept and polling is not channel._create_client(asynchronous=True)
        assert polling.connection_pool is channel.async_pool


def test_install_is_idempotent() -> None:
    kombu_tuning.install()
    patched = kombu_redis.Channel._create_client
    kombu_tuning.install()
    assert kombu_redis.Channel._create_client is patched
    assert not hasattr(patched.__wrapped__, "__wrapped__")  # type: ignore[attr-defined]
