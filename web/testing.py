"""In-memory stand-ins for tests (dramatiq's StubBroker idea): a FakeDispatcher with the same
protocol as the real one, fake sender / reply source / worker view to drive the real Dispatcher
without Redis, and a tiny image builder. Used by tests/unit; never by production code.
"""

from __future__ import annotations

import dataclasses
import io
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from PIL import Image

from autodep_celery import contract, errors, jobs
from autodep_celery.config import ModelSettings
from autodep_celery.contract import Batch, Item
from autodep_celery.status import ProcStatus
from autodep_celery.web.interfaces import Readiness

Handler = Callable[[str, Item], "dict[str, Any] | Exception | None"]


def png_bytes(
    width: int = 4, height: int = 3, color: tuple[int, int, int] = (200, 10, 10)
) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, format="PNG")
    return buf.getvalue()


def proc(
    model: str, pid: int = 1, *, ready: bool = True, state: str = "Idle", served: int = 0
) -> ProcStatus:
    return ProcStatus(
        worker="host",
        pid=pid,
        models=[model],
        queues=[f"autodep.{model}"],
        state=state,
        served=served,
        ready=ready,
    )


def canned_result(model: str, item: Item) -> dict[str, Any]:
    """A plausible worker answer for `item`: classification, echoed image, echoed text."""
    if item["kind"] == "text":
        return contract.ok_result({"Text": item["text"]}, 1_500_000_000)
    if item["task"] == "ImageToImage":
        with Image.open(io.BytesIO(item["image"])) as img:
            w, h = img.size
        return contract.ok_result(
            {"B64Image": {"image": item["image"], "height": h, "width": w}}, 7
        )
    labels = [{"probability": 0.5 / (i + 1), "label": f"class{i}"} for i in range(10)]
    return contract.ok_result({"Classification": labels[: item.get("top_n", 5)]}, 1234)


class FakeDispatcher:
    """Answers at once with `handler(model, item)`: a result dict, an exception to fail the
    future with, or None to never answer (to test deadlines). Its worker processes live in
    `status_view` (a StaticView), which create_app also hands to the status routes."""

    def __init__(
        self,
        procs: list[ProcStatus] | None = None,
        handler: Handler = canned_result,
        models: list[str] | None = None,
    ):
        self.status_view = StaticView(procs)
        self.models = models
        """Configured model names for ready(); default: the models of `procs`."""
        self.handler = handler
        self.submitted: list[tuple[str, Item]] = []
        self.overloaded = False
        self.hold = False
        """True: items are held, never sent nor answered, as when every batch slot of the model
        is taken."""

    @property
    def view(self) -> list[ProcStatus]:
        return self.status_view.view

    @property
    def error(self) -> str | None:
        """Set to make Redis look unreachable (status reads raise, readiness fails)."""
        return self.status_view.error

    @error.setter
    def error(self, message: str | None) -> None:
        self.status_view.error = message

    def submit(
        self, model: str, item: Item, on_sent: Callable[[], None] | None = None
    ) -> Future[dict[str, Any]]:
        if self.overloaded:
            raise errors.Overloaded(f"model {model} is overloaded", retry_after_s=2)
        self.submitted.append((model, item))
        future: Future[dict[str, Any]] = Future()
        if self.hold:
            return future
        answer = self.handler(model, item)
        if isinstance(answer, Exception):  # failed before it left (as a dead broker fails it)
            future.set_exception(answer)
            return future
        if on_sent is not None:
            on_sent()
        if answer is not None:
            future.set_result(answer)
        return future

    def has_worker(self, model: str) -> bool:
        ready = any(p.ready and model in p.models for p in self.status_view.procs())
        return ready or model in self.status_view.startable()

    def ready(self) -> Readiness:
        if self.error:
            return Readiness({}, error=self.error)
        models = (
            self.models if self.models is not None else {m for p in self.view for m in p.models}
        )
        return Readiness(
            {m: sum(1 for p in self.view if p.ready and m in p.models) for m in models},
            startable=self.status_view.startable(),
        )


class RecordingSender:
    """Records sent batches; `fail` makes the next sends raise like a dead broker."""

    def __init__(self) -> None:
        self.batches: list[Batch] = []
        self.expires: list[float] = []
        self.fail: Exception | None = None
        self.sent = threading.Condition()

    def send(self, model: ModelSettings, batch: Batch, expires_s: float) -> None:
        if self.fail is not None:
            raise self.fail
        with self.sent:
            self.batches.append(batch)
            self.expires.append(expires_s)
            self.sent.notify_all()

    def wait_for(self, n: int, timeout_s: float = 2.0) -> list[Batch]:
        with self.sent:
            if not self.sent.wait_for(lambda: len(self.batches) >= n, timeout_s):
                raise AssertionError(f"expected {n} batches, got {len(self.batches)}")
            return list(self.batches)

    def ping(self) -> None:
        if self.fail is not None:
            raise self.fail


class QueueReplySource:
    """Replies put by the test are handed to the collector; key is ignored."""

    def __init__(self) -> None:
        self.replies: queue.Queue[dict[str, Any] | Exception] = queue.Queue()

    def pop(self, key: str, timeout_s: float) -> dict[str, Any] | None:
        try:
            reply = self.replies.get(timeout=min(timeout_s, 0.05))
        except queue.Empty:
            return None
        if isinstance(reply, Exception):
            raise reply
        return reply


class StaticView:
    """A StatusView of fixed processes; `error` makes every read fail like a Redis outage."""

    def __init__(
        self, procs: list[ProcStatus] | None = None, startable: frozenset[str] = frozenset()
    ) -> None:
        self.view = list(procs or [])
        self.can_start = startable
        self.scaler_state: dict[str, Any] | None = None
        self.schemas: dict[str, dict[str, Any]] = {}
        """Model -> published forward() signature (worker.schemas.describe's form)."""
        self.error: str | None = None

    def startable(self) -> frozenset[str]:
        return self.can_start

    def autoscaler(self, fresh: bool = False) -> dict[str, Any] | None:
        if self.error:
            raise errors.BrokerUnavailable(self.error)
        return self.scaler_state

    def procs(self, fresh: bool = False) -> list[ProcStatus]:
        if self.error:
            raise errors.BrokerUnavailable(self.error)
        return list(self.view)

    def peek(self) -> list[ProcStatus]:
        return self.view

    def ping(self) -> None:
        if self.error:
            raise errors.BrokerUnavailable(self.error)

    def model_schema(self, model: str) -> dict[str, Any] | None:
        if self.error:
            raise errors.BrokerUnavailable(self.error)
        return self.schemas.get(model)


class FakeJobStore:
    """A JobStore in a dict; `finish` writes a result as a worker would, `expire` drops a job as
    its TTL would."""

    def __init__(self) -> None:
        self.jobs: dict[str, jobs.Job] = {}
        self.ttl_s: dict[str, float] = {}
        self.error: str | None = None
        """Set to make Redis look unreachable."""

    def _check(self) -> None:
        if self.error:
            raise errors.BrokerUnavailable(self.error)

    def create(self, job: jobs.Job, result_ttl_s: float) -> None:
        self._check()
        self.jobs[job.id] = job
        self.ttl_s[job.id] = result_ttl_s

    def get(self, job_id: str) -> jobs.Job | None:
        self._check()
        return self.jobs.get(job_id)

    def delete(self, job_id: str) -> bool:
        self._check()
        self.ttl_s.pop(job_id, None)
        return self.jobs.pop(job_id, None) is not None

    def running(self, job_id: str) -> None:
        self.jobs[job_id] = dataclasses.replace(self.jobs[job_id], status=jobs.RUNNING)

    def finish(self, job_id: str, result: dict[str, Any]) -> None:
        status = jobs.DONE if result.get("ok") else jobs.FAILED
        self.jobs[job_id] = dataclasses.replace(self.jobs[job_id], status=status, result=result)

    def expire(self, job_id: str) -> None:
        self.jobs.pop(job_id, None)
