"""The job record in a real Redis (autodep_celery.jobs, web.job_store): what the web writes, the
workers' Lua transitions (running, then one final result; nothing recreated once deleted), and
the TTLs. Needs only the session's redis-server, no worker or web process."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from autodep_celery import contract, errors, jobs
from autodep_celery.web.job_store import RedisJobStore
from autodep_celery.web.redis_client import connect

GRACE_S = 600.0


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = connect(redis_url)
    yield c
    c.close()


def queued(client: redis.Redis, ttl_s: float = 60.0, timeout_s: float = 100.0) -> jobs.Job:
    now = time.time()
    job = jobs.new("m", "TextToText", now, now + timeout_s)
    jobs.create(client, job, ttl_s, GRACE_S, now)
    return job


def finish(client: redis.Redis, job_id: str, result: dict, index: int = 0) -> None:
    pipe = client.pipeline(transaction=False)
    results = [contract.ok_result({"Text": "other"}, 1)] * index + [result]
    jobs.record_results(pipe, [(index, job_id)], contract.make_reply("b", "w/1", results), 7.5)
    pipe.execute()


def test_created_queued_with_a_ttl_past_deadline_and_grace(client: redis.Redis) -> None:
    job = queued(client, ttl_s=60.0, timeout_s=100.0)
    assert jobs.read(client, job.id) == job
    ttl_ms = client.pttl(contract.job_key(job.id))
    assert (100 + GRACE_S + 60 - 5) * 1000 < ttl_ms <= (100 + GRACE_S + 60) * 1000


def test_running_then_done_and_kept_for_the_result_ttl(client: redis.Redis) -> None:
    job = queued(client, ttl_s=30.0)
    assert jobs.mark_running(client, [(0, job.id)], 5.0) == []
    running = jobs.read(client, job.id)
    assert running is not None and running.status == jobs.RUNNING and running.updated == 5.0
    result = contract.ok_result({"B64Image": {"image": b"\x89PNG\0", "height": 1, "width": 2}}, 9)
    finish(client, job.id, result, index=2)
    done = jobs.read(client, job.id)
    assert done is not None and done.status == jobs.DONE and done.updated == 7.5
    assert done.result == result  # bytes stay bytes: msgpack, not JSON
    assert 25_000 < client.pttl(contract.job_key(job.id)) <= 30_000


def test_a_finished_job_never_changes_again(client: redis.Redis) -> None:
    job = queued(client)
    failure = contract.error_result(errors.InvalidImage("broken").to_dict())
    finish(client, job.id, failure)
    finish(client, job.id, contract.ok_result({"Text": "late duplicate"}, 1))
    assert jobs.mark_running(client, [(0, job.id)], 9.0) == []  # exists: a redelivery computes
    got = jobs.read(client, job.id)
    assert got is not None and got.status == jobs.FAILED and got.error is not None
    assert got.error["code"] == "invalid_image"


def test_a_deleted_job_is_never_written_again(client: redis.Redis) -> None:
    first, second = queued(client), queued(client)
    assert jobs.delete(client, first.id) is True and jobs.delete(client, first.id) is False
    assert jobs.mark_running(client, [(0, first.id), (3, second.id)], 1.0) == [0]
    finish(client, first.id, contract.ok_result({"Text": "x"}, 1))
    assert client.exists(contract.job_key(first.id)) == 0
    assert jobs.read(client, first.id) is None


def test_a_finished_job_expires_after_its_result_ttl(client: redis.Redis) -> None:
    job = queued(client, ttl_s=0.2)
    finish(client, job.id, contract.ok_result({"Text": "x"}, 1))
    assert jobs.read(client, job.id) is not None
    time.sleep(0.5)
    assert jobs.read(client, job.id) is None


def test_the_web_store_settles_and_deletes(redis_url: str, client: redis.Redis) -> None:
    store = RedisJobStore(redis_url, running_grace_s=GRACE_S)
    now = time.time()
    late = jobs.new("m", "TextToText", now - 100, now - 10)  # deadline passed 10 s ago
    store.create(late, 60.0)
    got = store.get(late.id)
    assert got is not None and got.status == jobs.FAILED and got.error is not None
    assert got.error["code"] == "deadline_exceeded"
    # the record itself still says queued: settling is how readers report it
    assert client.hget(contract.job_key(late.id), "status") == b"queued"
    assert store.delete(late.id) and store.get(late.id) is None


def test_the_web_store_reports_redis_down_as_503() -> None:
    store = RedisJobStore("redis://127.0.0.1:1/0", running_grace_s=GRACE_S)
    with pytest.raises(
        errors.BrokerUnavailable, match="cannot reach Redis at redis://127.0.0.1:1/0"
    ):
        store.get("0" * 32)
    with pytest.raises(errors.BrokerUnavailable):
        store.create(jobs.new("m", "TextToText", 1.0, 2.0), 60.0)
