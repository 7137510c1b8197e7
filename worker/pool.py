"""Celery's prefork pool, with hard time limits that do not count time the worker spent frozen.

Celery arms a task's hard time limit (``task_time_limit``) as a timer on the worker parent's
event loop, on the monotonic clock, which runs on while the process is stopped. A worker
SIGSTOPped (or its VM paused) for longer than the limit killed, on SIGCONT, the pool child of
every batch it had been computing, healthy or not, for another outage of the model load time
(issue #11). Here a 0.5 s tick on the same loop measures how long the loop did not run; a hard
limit that comes due is postponed by the stall time that fell within it, once per stall, so a
task is killed only after `task_time_limit` of time in which the worker ran. Selected by
celery_app's ``worker_pool`` (``autodep_celery.worker.pool:TaskPool``), so plain ``celery -A
autodep_celery worker`` gets it too.
Knows nothing of models or HTTP.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery.concurrency import asynpool, prefork

log = logging.getLogger(__name__)

TICK_S = 0.5
STALL_S = 2.0
"""A gap between ticks longer than this is a stall (the loop did not run)."""
MIN_POSTPONE_S = 1.0


class StallAwarePool(asynpool.AsynPool):  # type: ignore[misc]  # Celery is untyped
    def register_with_event_loop(self, hub: Any) -> None:
        self._stall_hub = hub
        self._stalled_s = 0.0
        """Total stall time seen by this pool's loop."""
        self._stall_mark: dict[Any, float] = {}
        """job -> _stalled_s when its limit was armed (or last postponed)."""
        self._last_tick = time.monotonic()
        super().register_with_event_loop(hub)
        hub.call_repeatedly(TICK_S, self._tick)

    def _tick(self) -> None:
        now = time.monotonic()
        gap, self._last_tick = now - self._last_tick, now
        if gap > STALL_S:
            self._stalled_s += gap - TICK_S
            log.warning("this worker did not run for %.1f s (stopped or starved)", gap)

    def _create_timelimit_handlers(self, hub: Any) -> None:
        super()._create_timelimit_handlers(hub)
        # set by Celery's handler factory above
        armed: Any = self.__dict__["on_timeout_set"]
        cancelled: Any = self.__dict__["on_timeout_cancel"]

        def on_timeout_set(result: Any, soft: Any, hard: Any) -> None:
            self._stall_mark[result._job] = self._stalled_s
            armed(result, soft, hard)

        def on_timeout_cancel(result: Any) -> None:
            self._stall_mark.pop(result._job, None)
            cancelled(result)

        self.on_timeout_set = on_timeout_set
        self.on_timeout_cancel = on_timeout_cancel

    def _on_hard_timeout(self, job: Any) -> None:
        stalled = self._stalled_s - self._stall_mark.get(job, self._stalled_s)
        if stalled >= MIN_POSTPONE_S and job in self._cache:
            self._stall_mark[job] = self._stalled_s
            self._tref_for_id[job] = self._stall_hub.call_later(stalled, self._on_hard_timeout, job)
            log.warning(
                "hard time limit of job %s postponed by %.1f s: the worker was stopped",
                job,
                stalled,
            )
            return
        self._stall_mark.pop(job, None)
        super()._on_hard_timeout(job)


class TaskPool(prefork.TaskPool):  # type: ignore[misc]  # Celery is untyped
    Pool = StallAwarePool
