"""The autoscaler's effects: resize pools through Celery's remote control, and start and stop
whole worker processes on this host.

`CeleryPools` sends ``autodep_autoscale`` (worker.control: Celery's autoscale, then fork now)
with max = min = n to one worker: raising min grows at once, lowering max shrinks at once
(billiard stops only idle children), and max = min keeps Celery's own autoscaler, which counts
only the tasks a worker already reserved, from moving the pool. Commands are absolute, so a lost
broadcast is repaired by the next interval.

`LocalWorkers` owns the worker processes this host runs for the autoscaler (`autodep serve`, or
`autodep autoscaler` with ``spawn_workers``): one per model, started with
``--autoscale=MAX,MIN``, restarted with backoff when they die, and stopped for scale to zero by
draining first (cancel the consumer, wait for running batches) and then a warm shutdown.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autodep_celery import launch, processes
from autodep_celery.config import Settings, queue_name
from autodep_celery.contract import POOL_CONTROL

log = logging.getLogger(__name__)

CONTROL_TIMEOUT_S = 2.0


class CeleryPools:
    def __init__(self, app: Any) -> None:
        self._app = app

    def resize(self, hostname: str, processes: int) -> bool:
        """Set the pool of `hostname` to `processes`; True when the worker confirmed."""
        replies = self._app.control.broadcast(
            POOL_CONTROL,
            arguments={"max": processes, "min": processes},
            destination=[hostname],
            reply=True,
            timeout=CONTROL_TIMEOUT_S,
            limit=1,
        )
        for reply in replies or []:
            answer = reply.get(hostname) if isinstance(reply, dict) else None
            if isinstance(answer, dict) and "ok" in answer:
                return True
            if answer is not None:
                log.warning("worker %s refused to resize: %s", hostname, answer)
        return False

    def cancel_consumer(self, hostname: str, queue: str) -> None:
        self._app.control.cancel_consumer(
            queue, destination=[hostname], reply=True, timeout=CONTROL_TIMEOUT_S
        )

    def add_consumer(self, hostname: str, queue: str) -> None:
        self._app.control.add_consumer(
            queue, destination=[hostname], reply=True, timeout=CONTROL_TIMEOUT_S
        )


@dataclass
class _Local:
    model: str
    child: processes.Child
    processes: int = 1
    stopping: bool = False


@dataclass
class LocalWorkers:
    """Whole worker processes on this host, one per model, owned by the autoscaler."""

    settings: Settings
    env: dict[str, str]
    log_dir: Path | None = None
    autoscale: bool = True
    """False: fixed pools (`[autoscaler] enabled = false`), only supervised."""
    clock: Callable[[], float] = time.monotonic
    _workers: dict[str, _Local] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _closed: bool = False
    """Set by stop_all: a step still running must not start a worker that nobody stops."""
    _restarts: processes.Restarts = field(init=False)

    def __post_init__(self) -> None:
        self._restarts = processes.Restarts(self.clock)

    def hostname(self, model: str) -> str:
        return f"{model}@{socket.gethostname()}"

    def starting(self, model: str) -> int | None:
        """Pool size of `model`'s worker here while it runs and is not being stopped."""
        w = self._workers.get(model)
        return None if w is None or w.stopping else w.processes

    def present(self, model: str) -> bool:
        """A worker of `model` runs here, or is still being stopped."""
        return model in self._workers

    def pids(self) -> dict[int, str]:
        with self._lock:
            return {w.child.pid: m for m, w in self._workers.items()}

    def start(self, model: str, processes_: int) -> None:
        """Start a worker for `model` with `processes_` pool children (at least 1)."""
        m = self.settings.model(model)
        if m is None:
            raise KeyError(model)
        _, high = self.settings.pool_bounds(m)
        low = max(1, min(processes_, high))
        argv = launch.worker_argv(
            self.settings,
            [model],
            autoscale=(high, low) if self.autoscale else None,
            hostname=self.hostname(model),
        )
        path = self.log_dir / f"worker-{model}.log" if self.log_dir else None
        with self._lock:
            if self._closed:
                return
        child = processes.start(f"worker {model}", argv, env=self.env, log_path=path)
        with self._lock:
            closed = self._closed
            if not closed:
                self._workers[model] = _Local(model, child, low)
                self._restarts.started(model)
        if closed:  # stop_all ran meanwhile: nobody else would stop this one
            child.stop()
            return
        log.info("started worker %s (pid %d, pool %d..%d)", model, child.pid, low, high)

    def stop(self, model: str, drain: Callable[[], bool | None] | None = None) -> None:
        """Drain (in a thread, so the caller goes on), then warm-shut down `model`'s worker;
        a drain that answers False (demand came back) keeps the worker, serving again."""
        with self._lock:
            w = self._workers.get(model)
            if w is None or w.stopping:
                return
            w.stopping = True

        def run() -> None:
            try:
                if drain is not None and drain() is False:
                    with self._lock:
                        w.stopping = False
                    log.info("demand for %s came back while draining: worker kept", model)
                    return
            except Exception as exc:  # stop it anyway: a warm shutdown still finishes batches
                log.warning("draining worker %s failed: %s", model, exc)
            w.child.stop()  # SIGTERM: Celery's warm shutdown, then SIGKILL after the grace
            with self._lock:
                if self._workers.get(model) is w:
                    del self._workers[model]
            log.info("stopped worker %s", model)

        threading.Thread(target=run, name=f"autodep-stop-{model}", daemon=True).start()

    def supervise(self) -> list[str]:
        """Restart workers that died (not being stopped) with backoff; returns what restarted."""
        restarted: list[str] = []
        with self._lock:
            workers = list(self._workers.items())
        for model, w in workers:
            if w.child.alive():
                self._restarts.alive(model)
                continue
            if w.stopping:
                continue
            wait = self._restarts.died(model)
            if wait is not None:
                log.error(
                    "worker %s exited with code %s; restarting in %.0f s",
                    model,
                    w.child.proc.returncode,
                    wait,
                )
            elif self._restarts.due(model):
                m = self.settings.model(model)
                low = self.settings.pool_bounds(m)[0] if m else 1
                self.start(model, max(1, low))
                restarted.append(model)
        return restarted

    def stop_all(self) -> None:
        with self._lock:
            self._closed = True
            children = [w.child for w in self._workers.values()]
            self._workers.clear()
        processes.stop_together(children)


def drain_worker(
    pools: CeleryPools,
    hostname: str,
    model: str,
    busy: Callable[[], bool],
    timeout_s: float,
    clock: Callable[[], float] = time.monotonic,
    wanted: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Stop `hostname` taking new batches of `model`, then wait until it computes none: True.
    If `wanted` (batches of the model waiting again) turns true meanwhile, the worker takes
    the queue again and the answer is False: stopping it would leave them to a cold start."""
    queue = queue_name(model)
    pools.cancel_consumer(hostname, queue)
    deadline = clock() + timeout_s
    quiet = 0
    while clock() < deadline:
        if wanted():
            pools.add_consumer(hostname, queue)
            return False
        quiet = quiet + 1 if not busy() else 0
        if quiet >= 2:
            return True
        sleep(0.25)
    log.warning("worker %s still busy after %.0f s of draining; stopping it", hostname, timeout_s)
    return True
