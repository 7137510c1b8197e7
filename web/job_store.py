"""The web tier's JobStore: asynchronous jobs in Redis (autodep_celery.jobs), on the Redis that
holds replies and worker status (broker.result_url), which every web process and worker shares.

Used by web.routes.jobs. The client opens lazily in the process that uses it (after gunicorn
forks); a Redis failure is a 503 broker_unavailable, never a 500. Must not import torch or Flask.
"""

from __future__ import annotations

import threading
import time

import redis

from autodep_celery import errors, forksafe, jobs
from autodep_celery.jobs import Job
from autodep_celery.web.redis_client import connect, unreachable


class RedisJobStore:
    def __init__(self, url: str, running_grace_s: float) -> None:
        self._url = url
        self._grace_s = running_grace_s
        """How long a running job may outlive its deadline (jobs.settle): the visibility
        timeout, past which the broker would have redelivered its batch anyway."""
        self._client: redis.Redis | None = None
        self._lock = threading.Lock()
        forksafe.register(self, RedisJobStore._after_fork)

    def _after_fork(self) -> None:
        self._client, self._lock = None, threading.Lock()

    def _conn(self) -> redis.Redis:
        with self._lock:
            if self._client is None:
                self._client = connect(self._url)
            return self._client

    def create(self, job: Job, result_ttl_s: float) -> None:
        try:
            jobs.create(self._conn(), job, result_ttl_s, self._grace_s, time.time())
        except (redis.RedisError, OSError) as exc:
            raise errors.BrokerUnavailable(unreachable(self._url, exc)) from None

    def get(self, job_id: str) -> Job | None:
        try:
            job = jobs.read(self._conn(), job_id)
        except (redis.RedisError, OSError) as exc:
            raise errors.BrokerUnavailable(unreachable(self._url, exc)) from None
        return None if job is None else jobs.settle(job, time.time(), self._grace_s)

    def delete(self, job_id: str) -> bool:
        try:
            return jobs.delete(self._conn(), job_id)
        except (redis.RedisError, OSError) as exc:
            raise errors.BrokerUnavailable(unreachable(self._url, exc)) from None
