"""The autoscaler's loop: read, decide, act, publish, every ``[autoscaler] interval_s``.

One step reads the worker records, the process records and each model's backlog from Redis,
takes one :func:`~autodep_celery.autoscaler.policy.desired_workers` decision per model (or
follows a size pinned with `autodep scale`), spreads the result over the workers consuming each
model, resizes the pools whose size differs, starts or drains local workers where a pool cannot
follow (no worker, or scale to zero), and publishes its state. A failed step is logged and the
next one starts from what Redis says: every command is absolute, so nothing is lost by a crash.
A pool resized by someone else (celery control autoscale, Flower) is left alone for
``manual_hold_s``. Serving never depends on this loop: killed, the pools keep their size.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil
import redis

from autodep_celery import model_registry, status
from autodep_celery.autoscaler import actuators, allocate, backlog, policy, state
from autodep_celery.autoscaler.actuators import CeleryPools, LocalWorkers
from autodep_celery.config import ModelSettings, Settings

log = logging.getLogger("autodep.autoscaler")

RESEND_AFTER_S = 3.0
"""A resize not yet visible in the worker's record is sent again after this long."""
MODEL_OVERHEAD_BYTES = 200 * 1024 * 1024
"""Estimated memory of a pool process beyond twice its model file, before one has been seen."""


class Autoscaler:
    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        pools: CeleryPools,
        local: LocalWorkers | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.static = settings
        """As given (config.toml); `settings` adds the model registry, re-read every step."""
        self.settings = settings
        self.cfg = settings.autoscaler
        self._client = client
        self._pools = pools
        self._local = local
        self._clock = clock
        self._wall = wall
        self._history: dict[str, policy.History] = {}
        self._commanded: dict[tuple[str, int], tuple[int, float, bool]] = {}
        """(hostname, pid) -> (pool size sent, when, confirmed): to resend what was lost, and to
        notice changes by hand. Keyed by pid too: a worker restarted under its old name is new."""
        self._manual_until: dict[tuple[str, int], float] = {}
        self._last: dict[str, dict[str, Any]] = {}
        self._counts: dict[str, dict[str, int]] = {}
        self._last_reason: dict[str, str] = {}
        self._stop = threading.Event()
        self._claimed_bytes = 0
        """Memory promised to the processes this step grants: two models must not both grow
        into the same free memory before either has forked."""
        self.decisions: dict[str, policy.Decision] = {}

    # ---- running ---------------------------------------------------------------------------
    def run(self) -> None:
        log.info("autoscaler running every %.1f s", self.cfg.interval_s)
        while not self._stop.is_set():
            started = self._clock()
            try:
                self.step()
            except Exception as exc:  # Redis down, a broadcast failed: try again next interval
                log.warning("autoscaler step failed: %r", exc)
            self._stop.wait(max(0.0, self.cfg.interval_s - (self._clock() - started)))
        try:  # stopped: say so at once rather than when the state expires
            state.clear(self._client)
        except (redis.RedisError, OSError):
            pass
        log.info("autoscaler stopped; pools keep their size")

    def stop(self) -> None:
        self._stop.set()

    def start_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="autodep-autoscaler", daemon=True)
        thread.start()
        return thread

    # ---- one step --------------------------------------------------------------------------
    def step(self) -> dict[str, policy.Decision]:
        now = self._clock()
        self._claimed_bytes = 0
        self._reload_models()
        if self._local is not None:
            self._local.supervise()
        procs = status.read_all(self._client)
        workers = [w for w in status.read_workers(self._client) if w.consuming]
        signals = backlog.read(self._client, self.settings, procs)
        pins = state.read_pins(self._client, [m.name for m in self.settings.models])
        self._notice_manual(workers, now)
        desired: dict[str, int] = {}
        for m in self.settings.models:
            serving = [w for w in workers if m.queue in w.queues]
            decision = self._decide(m, signals[m.name], serving, procs, pins.get(m.name), now)
            self.decisions[m.name] = decision
            desired[m.name] = decision.desired
            self._record(m, decision, signals[m.name])
        self._act(desired, workers, procs, now)
        self._publish(signals, procs, pins)
        return self.decisions

    def _reload_models(self) -> None:
        """This step's models and bounds: config.toml's with the registry's (registered, rescaled
        or unregistered through /management). A model gone has its worker of ours drained and
        stopped; workers started by others are left to them."""
        settings = model_registry.effective(self.static, self._client)
        gone = {m.name for m in self.settings.models} - {m.name for m in settings.models}
        added = {m.name for m in settings.models} - {m.name for m in self.settings.models}
        if gone or added:
            log.info(
                "models changed: added %s, removed %s",
                ", ".join(sorted(added)) or "none",
                ", ".join(sorted(gone)) or "none",
            )
        for name in gone:
            for table in (self.decisions, self._history, self._last, self._counts):
                table.pop(name, None)
        self.settings = settings
        local = self._local
        if local is None:
            return
        local.settings = settings
        served = {m.name for m in settings.models}
        for model in sorted(set(local.pids().values()) - served):
            if local.starting(model) is not None:  # not yet being stopped
                log.info("%s: unregistered; draining and stopping worker %s", model, model)
                local.stop(model, drain=self._drainer(local.hostname(model), model))

    def _decide(
        self,
        m: ModelSettings,
        signal: backlog.Signal,
        serving: list[status.WorkerRecord],
        procs: list[status.ProcStatus],
        pin: int | None,
        now: float,
    ) -> policy.Decision:
        low, high = self.settings.pool_bounds(m)
        current = _current(serving)
        starting = self._local.starting(m.name) if self._local is not None else None
        if not serving and starting is not None:
            current = starting  # its worker is starting and not yet visible
        history = self._history.get(m.name, policy.History())
        if pin is not None:
            target = min(pin, high)
            action = policy.HOLD if target == current else ("up" if target > current else "down")
            return policy.Decision(current, target, target, action, "pinned by hand", history)
        room, per_proc = self._room(m, serving, procs)
        own = self._local.pids() if self._local is not None else {}
        slots = _slots(serving, own)
        # a running worker keeps at least its own minimum, unless it is ours to stop: the pool
        # cannot go below their sum; and without a worker of our own to start, it cannot grow
        # past the workers' bounds
        floor = sum(
            s.low if s.resizable else s.processes
            for s, w in zip(slots, serving, strict=True)
            if w.pid not in own
        )
        if self._local is None and serving:
            high = max(1, min(high, allocate.capacity(slots)))
        pool = policy.Pool(current=current, min=min(max(low, floor), high), max=high, room=room)
        decision = policy.desired_workers(signal, pool, self.cfg, history, now)
        self._history[m.name] = decision.history
        if room is not None and decision.desired > decision.current:
            self._claimed_bytes += (decision.desired - decision.current) * per_proc
        return decision

    def _room(
        self, m: ModelSettings, serving: list[status.WorkerRecord], procs: list[status.ProcStatus]
    ) -> tuple[int | None, int]:
        """Processes of `m` that free memory still holds (the memory guard; None when no
        worker reports its host's memory: no guard rather than no growth), and the memory of
        one. Memory that earlier models of this step were granted counts as taken, on every
        host (conservative when several hosts serve)."""
        sizes = [p.rss_bytes for p in procs if p.ready and m.name in p.models and p.rss_bytes]
        try:
            per_proc = max(sizes) if sizes else 2 * os.path.getsize(m.path) + MODEL_OVERHEAD_BYTES
        except OSError:
            per_proc = MODEL_OVERHEAD_BYTES
        reserve = self.cfg.memory_reserve_mb * 1024 * 1024
        if serving:  # one reading per host: two workers on one host share its memory
            available = list({w.host: w.mem_available for w in serving if w.mem_available}.values())
        else:  # nothing serves it yet: a worker would start on this host
            available = [int(psutil.virtual_memory().available)]
        if not available:
            return None, per_proc
        taken = reserve + self._claimed_bytes
        return sum(max(0, (a - taken) // per_proc) for a in available), per_proc

    def _record(self, m: ModelSettings, d: policy.Decision, signal: backlog.Signal) -> None:
        counts = self._counts.setdefault(m.name, {"up": 0, "down": 0, "hold": 0})
        counts[d.action if d.action in counts else "hold"] += 1
        line = (
            f"{m.name}: backlog {signal.backlog:g}, wait {signal.oldest_wait_s:.2f} s, "
            f"{d.current} -> {d.desired}, {d.action}: {d.reason}"
        )
        if d.action != policy.HOLD:
            self._last[m.name] = {
                "action": d.action,
                "from": d.current,
                "to": d.desired,
                "reason": d.reason,
                "backlog": signal.backlog,
                "at": self._wall(),
            }
            log.info("%s", line)
        elif d.reason != self._last_reason.get(m.name):
            log.info("%s", line) if d.reason.startswith("memory") else log.debug("%s", line)
        self._last_reason[m.name] = d.reason

    # ---- acting ----------------------------------------------------------------------------
    def _notice_manual(self, workers: list[status.WorkerRecord], now: float) -> None:
        """A confirmed command whose bounds the worker no longer shows was overridden by hand
        (an unconfirmed one is simply sent again by _act)."""
        live = {(w.hostname, w.pid) for w in workers}
        for key in [k for k in self._commanded if k not in live]:
            del self._commanded[key]  # gone, or restarted under the same name
        for key in [k for k in self._manual_until if k not in live]:
            del self._manual_until[key]
        for w in workers:
            key = (w.hostname, w.pid)
            sent = self._commanded.get(key)
            if sent is None or not sent[2] or now - sent[1] < RESEND_AFTER_S:
                continue
            if (w.max, w.min) != (sent[0], sent[0]):
                log.info(
                    "worker %s was resized by hand (max=%d min=%d); leaving it alone for %.0f s",
                    w.hostname,
                    w.max,
                    w.min,
                    self.cfg.manual_hold_s,
                )
                self._manual_until[key] = now + self.cfg.manual_hold_s
                del self._commanded[key]

    def _act(
        self,
        desired: dict[str, int],
        workers: list[status.WorkerRecord],
        procs: list[status.ProcStatus],
        now: float,
    ) -> None:
        local = self._local
        local_pids = local.pids() if local else {}
        for m in self.settings.models:
            want = desired[m.name]
            serving = [w for w in workers if m.queue in w.queues]
            own = [w for w in serving if local_pids.get(w.pid) == m.name]
            if local is None:
                continue
            if want == 0 and own:
                w = own[0]
                log.info("%s: no demand; draining and stopping worker %s", m.name, w.hostname)
                local.stop(m.name, drain=self._drainer(w.hostname, m.name))
            elif want > 0 and not local.present(m.name):
                short = want - allocate.capacity(_slots(serving, local_pids))
                if short > 0:
                    log.info("%s: starting a worker on this host (%d processes)", m.name, short)
                    local.start(m.name, short)
        slots = _slots(workers, local_pids)
        sizes = allocate.pool_sizes(desired, slots)
        for w in workers:
            key = (w.hostname, w.pid)
            if not w.autoscale or now < self._manual_until.get(key, 0.0):
                continue
            n = sizes[w.hostname]
            if (w.max, w.min, w.processes) == (n, n, n):
                continue
            models = [q.removeprefix("autodep.") for q in w.queues]
            if (
                w.max == w.min
                and len(models) > 1
                and all(
                    self.decisions[x].action == policy.HOLD for x in models if x in self.decisions
                )
            ):
                continue  # a shared pool moves only on a decision, not on rounding its shares
            sent = self._commanded.get(key)
            if sent is not None and sent[0] == n and now - sent[1] < RESEND_AFTER_S:
                continue  # sent already; the record follows within a heartbeat
            confirmed = False
            try:
                confirmed = self._pools.resize(w.hostname, n)
            finally:
                self._commanded[key] = (n, now, confirmed)
            if not confirmed:
                log.warning("worker %s did not confirm a pool of %d; retrying", w.hostname, n)

    def _drainer(self, hostname: str, model: str) -> Callable[[], bool]:
        def busy() -> bool:
            procs = status.read_all(self._client)
            return any(p.worker == hostname and p.state == "Working" for p in procs)

        def wanted() -> bool:
            """Batches of the model queued, or items waiting in a web process: demand is
            back. A model unregistered meanwhile is never wanted."""
            if self.settings.model(model) is None:
                return False
            signal = backlog.read(self._client, self.settings, []).get(model)
            return signal is not None and (signal.queued > 0 or signal.pending > 0)

        def drain() -> bool:
            return actuators.drain_worker(
                self._pools, hostname, model, busy, self.cfg.drain_timeout_s, wanted=wanted
            )

        return drain

    # ---- publishing ------------------------------------------------------------------------
    def _publish(
        self,
        signals: dict[str, backlog.Signal],
        procs: list[status.ProcStatus],
        pins: dict[str, int],
    ) -> None:
        models: dict[str, Any] = {}
        for m in self.settings.models:
            d = self.decisions[m.name]
            s = signals[m.name]
            low, high = self.settings.pool_bounds(m)
            models[m.name] = {
                "current": d.current,
                "ready": sum(1 for p in procs if p.ready and m.name in p.models),
                "desired": d.desired,
                "min": low,
                "max": high,
                "backlog": s.backlog,
                "queue_wait_s": round(s.oldest_wait_s, 3),
                "pending": s.pending,
                "sent": s.sent,
                "queued": s.queued,
                "busy": s.busy,
                "pinned": pins.get(m.name),
                "startable": self._local is not None,
                "reason": d.reason,
                "decisions": dict(self._counts.get(m.name, {})),
                "last_decision": self._last.get(m.name),
            }
        payload = {
            "running": True,
            "ts": self._wall(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "interval_s": self.cfg.interval_s,
            "models": models,
        }
        state.publish(self._client, payload, self.cfg.interval_s)


def _current(serving: list[status.WorkerRecord]) -> int:
    """Processes that serve the queue now: a worker of several models counts its share."""
    total = sum(w.processes / max(1, len(w.queues)) for w in serving)
    return max(1, round(total)) if serving and total > 0 else 0


def _slots(
    workers: list[status.WorkerRecord], own: dict[int, str] | None = None
) -> list[allocate.WorkerSlot]:
    """Allocation slots; a worker of our own (pid in `own`) may shrink to one process whatever
    it was started with (it is started at the size a burst asked for)."""
    own = own or {}
    return [
        allocate.WorkerSlot(
            hostname=w.hostname,
            models=tuple(q.removeprefix("autodep.") for q in w.queues),
            processes=w.processes,
            low=1 if w.pid in own else max(1, w.declared_min),
            high=max(1, w.declared_max),
            resizable=w.autoscale,
        )
        for w in workers
    ]
