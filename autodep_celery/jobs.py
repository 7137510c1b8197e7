"""Asynchronous jobs (POST /jobs, GET /jobs/<id>): the record a job keeps in Redis and the writes
that move it through its states.

Both tiers write it, so it lives in the core: the web process that accepts a job creates it
``queued`` before the job's item is published (web.job_store); the worker that takes the item's
batch marks it ``running`` and stores the item's result when the batch ends (worker.tasks,
worker.runtime), so any web process answers for it, whether or not the one that accepted it
still lives. One job is the hash ``contract.job_key(id)``::

    status    queued -> running -> done | failed
    model     the model asked for
    task      the item's task type, whose web half encodes the result on GET
    created, updated, deadline    Unix time
    ttl_ms    how long a finished job is kept (the accepting web's jobs.result_ttl_s)
    result    msgpack of the item's result (contract.ok_result / error_result), once finished

Workers write through Lua scripts that never recreate a deleted job (expired or cancelled) and
never move a finished one back (a redelivered batch may run twice: the first result stays).
Imports redis and msgpack only.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import msgpack
import redis

from autodep_celery import contract, errors

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
STATES = (QUEUED, RUNNING, DONE, FAILED)
FINISHED = frozenset((DONE, FAILED))

QUEUED_GRACE_S = 5.0
"""A job still queued this long after its deadline has failed: a worker skips an item past its
deadline (and Celery drops an expired batch unrun); the grace covers a worker that took the
item just before the deadline and is writing ``running``."""

_ID = re.compile(r"\A[0-9a-f]{32}\Z")

_MARK_RUNNING = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 0 end
if status == 'queued' then redis.call('HSET', KEYS[1], 'status', 'running', 'updated', ARGV[1]) end
return 1
"""
"""queued -> running; 0 when the job is gone (cancelled or expired): its item is not computed."""

_FINISH = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status or status == 'done' or status == 'failed' then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'result', ARGV[2], 'updated', ARGV[3])
local ttl = tonumber(redis.call('HGET', KEYS[1], 'ttl_ms'))
if ttl then redis.call('PEXPIRE', KEYS[1], math.max(1, math.floor(ttl))) end
return 1
"""
"""queued | running -> done | failed with the result; kept ttl_ms from now."""


def new_id() -> str:
    """32 lowercase hex digits (122 random bits): not guessable, so an id is its own capability."""
    return uuid.uuid4().hex


def valid_id(text: str) -> bool:
    """True for what new_id makes; anything else never reaches a Redis key name."""
    return bool(_ID.match(text))


@dataclass(frozen=True)
class Job:
    id: str
    status: str
    model: str
    task: str
    """The item's task type (autodep_celery.task_types name)."""
    created: float
    updated: float
    deadline: float
    """Wall clock; a job not finished by then fails with deadline_exceeded."""
    result: dict[str, Any] | None = None
    """The item's result once finished: ``{"ok": True, "output", "compute_ns"}`` or
    ``{"ok": False, "error": {"code", "message", "status"}}``."""

    @property
    def error(self) -> dict[str, Any] | None:
        """The error of a failed job."""
        if self.result is None or self.result.get("ok"):
            return None
        error = self.result.get("error")
        return error if isinstance(error, dict) else {}


def new(model: str, task: str, now: float, deadline: float) -> Job:
    return Job(new_id(), QUEUED, model, task, now, now, deadline)


# ---- the web: create, read, delete ----------------------------------------------------------
def create(
    client: redis.Redis, job: Job, result_ttl_s: float, running_grace_s: float, now: float
) -> None:
    """Write `job` (queued). Until a worker finishes it, it is kept until its deadline plus
    `running_grace_s` (see settle) plus `result_ttl_s`; once finished, `result_ttl_s`."""
    key = contract.job_key(job.id)
    keep_ms = int((job.deadline - now + running_grace_s + result_ttl_s) * 1000)
    pipe = client.pipeline(transaction=True)  # never a job without its TTL
    pipe.hset(
        key,
        mapping={
            "status": job.status,
            "model": job.model,
            "task": job.task,
            "created": repr(job.created),
            "updated": repr(job.updated),
            "deadline": repr(job.deadline),
            "ttl_ms": str(max(1, int(result_ttl_s * 1000))),
        },
    )
    pipe.pexpire(key, max(1, keep_ms))
    pipe.execute()


def read(client: redis.Redis, job_id: str) -> Job | None:
    """The stored job, None when unknown or expired."""
    return parse(job_id, client.hgetall(contract.job_key(job_id)))


def delete(client: redis.Redis, job_id: str) -> bool:
    """Forget the job; True when it existed. A worker that takes its item later skips it."""
    return bool(client.delete(contract.job_key(job_id)))


def parse(job_id: str, raw: Mapping[Any, Any]) -> Job | None:
    """A job from its hash as redis-py returns it (bytes keys and values)."""
    if not raw:
        return None
    fields = {_text(k): v for k, v in raw.items()}

    def number(name: str) -> float:
        try:
            return float(_text(fields.get(name, b"0")))
        except ValueError:
            return 0.0

    result: dict[str, Any] | None = None
    packed = fields.get("result")
    if packed:
        try:
            unpacked = msgpack.unpackb(packed, raw=False)
        except (ValueError, msgpack.UnpackException):
            unpacked = None
        result = (
            unpacked if isinstance(unpacked, dict) else _lost("the stored result is unreadable")
        )
    return Job(
        id=job_id,
        status=_text(fields.get("status", b"")),
        model=_text(fields.get("model", b"")),
        task=_text(fields.get("task", b"")),
        created=number("created"),
        updated=number("updated"),
        deadline=number("deadline"),
        result=result,
    )


def settle(job: Job, now: float, running_grace_s: float) -> Job:
    """The job as readers report it: one still queued (running) well past its deadline has
    failed although no worker wrote so: its batch expired in the broker unrun, or the worker
    that held it was lost and the batch did not come back in time. `running_grace_s` (the
    broker's visibility timeout) lets a batch that started before the deadline finish."""
    if job.status in FINISHED:
        return job
    grace = QUEUED_GRACE_S if job.status == QUEUED else running_grace_s
    if now <= job.deadline + grace:
        return job
    error = errors.DeadlineExceeded(
        "no worker finished the job before its deadline (jobs.timeout_s after it was "
        "submitted); add workers for its model or raise jobs.timeout_s"
    )
    return replace(
        job, status=FAILED, updated=job.deadline, result=contract.error_result(error.to_dict())
    )


# ---- the worker: running, then the result ----------------------------------------------------
def job_items(items: Any) -> list[tuple[int, str]]:
    """(index, job id) of each item of a batch that belongs to a job."""
    if not isinstance(items, list):
        return []
    return [
        (index, item["job"])
        for index, item in enumerate(items)
        if isinstance(item, dict) and isinstance(item.get("job"), str)
    ]


def mark_running(client: redis.Redis, jobs: list[tuple[int, str]], now: float) -> list[int]:
    """Mark the batch's jobs running; the indices of those that are gone (deleted or expired),
    whose items need not be computed."""
    pipe = client.pipeline(transaction=False)
    for _, job_id in jobs:
        pipe.eval(_MARK_RUNNING, 1, contract.job_key(job_id), repr(now))
    found = pipe.execute()
    return [index for (index, _), there in zip(jobs, found, strict=True) if not there]


def record_results(
    pipe: Any, jobs: list[tuple[int, str]], reply: dict[str, Any], now: float
) -> None:
    """Queue on `pipe` (a redis-py pipeline) each job's final state from the batch's reply: its
    item's result, or the batch's error when the whole batch failed."""
    results = reply.get("results")
    for index, job_id in jobs:
        result = results[index] if isinstance(results, list) and index < len(results) else None
        if not isinstance(result, dict):
            error = reply.get("error")
            if isinstance(error, dict):
                result = contract.error_result(error)
            else:
                result = _lost("the worker sent no result for this item")
        status = DONE if result.get("ok") else FAILED
        packed = msgpack.packb(result, use_bin_type=True)
        pipe.eval(_FINISH, 1, contract.job_key(job_id), status, packed, repr(now))


def _lost(message: str) -> dict[str, Any]:
    return contract.error_result(errors.AutodepError(message).to_dict())


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
