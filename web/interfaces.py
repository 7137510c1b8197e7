"""The interfaces of the web tier (typing Protocols; the wire format is autodep_celery.contract):
what a route needs from a dispatcher and from a status view, and what a dispatcher needs from
the outside world (a batch sender, a reply source, the status view).

The real implementations are web.dispatcher, web.publisher, web.replies and web.status_view;
the in-memory doubles are in web.testing. Imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

from autodep_celery.config import ModelSettings
from autodep_celery.contract import Batch, Item
from autodep_celery.jobs import Job
from autodep_celery.status import ProcStatus


@dataclass(frozen=True)
class Readiness:
    """What GET /ready reports: reachability of Redis/broker and ready workers per model."""

    workers: dict[str, int] = field(default_factory=dict)
    """Configured model name -> number of live, ready worker processes serving it."""
    error: str | None = None
    """Why Redis or the broker could not be reached, if it could not."""
    startable: frozenset[str] = frozenset()
    """Models with no process now that the running autoscaler starts on demand (scale to
    zero): ready, since a request for them waits for a cold start instead of failing."""

    @property
    def ok(self) -> bool:
        return (
            self.error is None
            and bool(self.workers)
            and all(n > 0 or m in self.startable for m, n in self.workers.items())
        )


class DispatcherProtocol(Protocol):
    def submit(
        self, model: str, item: Item, on_sent: Callable[[], None] | None = None
    ) -> Future[dict[str, Any]]:
        """Queue one item; the future resolves to its per-item result dict (contract.ok_result /
        error_result) or fails with an AutodepError. Raises Overloaded when the model's backlog in
        this process is full. `on_sent` is called once the item's batch is in the broker."""
        ...

    def has_worker(self, model: str) -> bool:
        """True when a live, ready worker process serves `model` (cached view), or when the
        running autoscaler starts one on demand. Raises BrokerUnavailable when the worker
        status cannot be read."""
        ...

    def ready(self) -> Readiness: ...


class Sender(Protocol):
    def send(self, model: ModelSettings, batch: Batch, expires_s: float) -> None:
        """Publish one batch to the model's queue; raise on failure (broker down)."""
        ...

    def ping(self) -> None:
        """Raise when the broker cannot be reached."""
        ...


class ReplySource(Protocol):
    def pop(self, key: str, timeout_s: float) -> dict[str, Any] | None:
        """Block up to `timeout_s` for the next reply pushed to `key`; None on timeout.
        May raise (Redis down): the collector logs, backs off and retries."""
        ...


class StatusView(Protocol):
    def procs(self, fresh: bool = False) -> list[ProcStatus]:
        """Live worker processes, refreshed at most every worker_check_interval_s unless `fresh`.
        Raises BrokerUnavailable when the status cannot be read."""
        ...

    def peek(self) -> list[ProcStatus]:
        """The last view read, without any I/O (for the dispatcher thread)."""
        ...

    def startable(self) -> frozenset[str]:
        """Models the running autoscaler starts on demand (cached like procs; no I/O)."""
        ...

    def autoscaler(self, fresh: bool = False) -> dict[str, Any] | None:
        """The running autoscaler's published state (autodep_celery.autoscaler.state), None
        when none runs. Raises BrokerUnavailable when it cannot be read."""
        ...

    def ping(self) -> None:
        """Raise BrokerUnavailable when the status store (Redis) cannot be reached."""
        ...

    def model_schema(self, model: str) -> dict[str, Any] | None:
        """`model`'s forward() signature as a worker published it (contract.schema_key), None
        before any worker has loaded it. Raises BrokerUnavailable when it cannot be read."""
        ...


class JobStore(Protocol):
    """Where asynchronous jobs live (autodep_celery.jobs): shared by every web process and
    written by the workers, so any web process answers for any job."""

    def create(self, job: Job, result_ttl_s: float) -> None:
        """Store a new (queued) job. Raises BrokerUnavailable when Redis cannot be reached."""
        ...

    def get(self, job_id: str) -> Job | None:
        """The job (a valid id) as readers report it (autodep_celery.jobs.settle), None when
        unknown or expired."""
        ...

    def delete(self, job_id: str) -> bool:
        """Forget the job; True when it existed."""
        ...
