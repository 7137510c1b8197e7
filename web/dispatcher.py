"""Per-process batching: request threads hand items to one dispatcher thread that forms batches
per model and sends them as Celery tasks; one collector thread resolves futures from the replies.

Called by the /inference route through :class:`web.interfaces.DispatcherProtocol`. Batching rules
(docs/architecture.md §2.1, adaptive): a model's batch is sent at once when nothing of that model
is in flight from this process (so concurrency 1 pays no delay); otherwise when it holds
``max_batch_size`` items or its first item has waited ``max_batch_delay_ms``; slow models get
smaller batches, larger behind a backlog where that computes faster. At most N batches per
model are in flight, N = live ready worker processes of that model (at least 1); at the limit,
items gather. Results come back through a per-process Redis list (``reply_to``), not Celery's
result backend, so no thread ever shares a result-backend connection (docs/architecture.md §2.2).
Threads and connections start lazily in the process that uses them (after gunicorn forks). Must not
import torch or Flask.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any

from autodep_celery import contract, errors, forksafe
from autodep_celery.config import ModelSettings, Settings
from autodep_celery.contract import Item
from autodep_celery.status import models_with_workers
from autodep_celery.web.interfaces import Readiness, ReplySource, Sender, StatusView

log = logging.getLogger(__name__)

REPLY_POLL_S = 1.0
"""BLPOP timeout of the collector: how quickly it notices a stop request."""
MAX_DRAIN = 1024
"""Inbox messages handled before batches are re-evaluated, so a flood cannot starve sending."""
BATCH_TARGET_S = 0.2
"""Compute time a batch aims at (see _ModelState.batch_cap)."""
BACKLOG_TARGET_S = 0.4
"""Compute time a batch may reach when a backlog waits behind it (see _ModelState.batch_cap)."""
EXPLORE_EVERY = 8
"""Under a backlog, one reply in this many lets the batch size not preferred be measured again."""
GATHER_FRACTION = 0.5
"""Share of a batch's round trip that the next batch may wait to fill (see gather_s)."""
NO_WORKER_RECHECK_S = 0.1
"""How often a process re-reads worker status before answering 503 no_worker."""
_STOP = object()


@dataclass
class _Entry:
    item: Item
    future: Future[dict[str, Any]]
    arrived: float
    """Monotonic time the dispatcher received it; batch delay counts from the first entry."""
    on_sent: Callable[[], None] | None = None
    """Called on the dispatcher thread once the entry's batch is in the broker (POST /jobs
    answers only then); a failed send fails the future instead."""


@dataclass
class _ModelState:
    settings: ModelSettings
    pending: deque[_Entry] = field(default_factory=deque)
    in_flight: dict[str, float] = field(default_factory=dict)
    """batch_id -> latest item deadline (wall clock); owned by the dispatcher thread only."""
    sent_at: dict[str, float] = field(default_factory=dict)
    rtt_s: float = 0.0
    """Moving average of a batch's send-to-reply time."""
    item_s: float = 0.0
    """Moving average of the model's compute time per item, from the replies."""
    kinds: dict[str, str] = field(default_factory=dict)
    """batch_id -> "normal" or "backlog", for batches that left full."""
    item_s_of: dict[str, float] = field(default_factory=dict)
    """Moving average of compute per item of full batches, by kind."""
    replies: int = 0

    def gather_s(self) -> float:
        """How long a batch gathers while another of the model is running: a fraction of a
        batch's round trip, so fast models form big batches and slow ones never leave a worker
        idle; never less than max_batch_delay_ms."""
        return max(self.settings.max_batch_delay_ms / 1000.0, GATHER_FRACTION * self.rtt_s)

    def caps(self) -> tuple[int, int]:
        """(normal, backlog) batch sizes: max_batch_size, lowered for slow models so one batch
        computes in about BATCH_TARGET_S (normal) or BACKLOG_TARGET_S (behind a backlog)."""
        cap = self.settings.max_batch_size
        if self.item_s <= 0:
            return cap, cap
        return min(cap, _fits(BATCH_TARGET_S, self.item_s)), min(
            cap, _fits(BACKLOG_TARGET_S, self.item_s)
        )

    def batch_cap(self) -> int:
        """The size of the next batch. Big batches pay for fast models (a Celery round trip
        per batch is the cost there) but make slow ones slower per item, hence the normal
        size (docs/architecture.md §2.1).

        With more than two normal batches pending, the items wait for a worker anyway, and the
        backlog size is sent if full batches of it have computed faster per item than full
        normal ones (see _bigger_pays): on a 2-core AMD EPYC ResNet-18 ran 47.2 img/s at batch
        4 and 48.8 at 8, on a 2-core Xeon 69.5 at 4 and 63.9 at 12."""
        normal, backlog = self.caps()
        if backlog <= normal or len(self.pending) <= 2 * normal:
            return normal
        return backlog if self._bigger_pays() else normal

    def _bigger_pays(self) -> bool:
        """Whether full backlog-size batches computed faster per item than full normal ones.
        A kind not yet measured is tried; one reply in EXPLORE_EVERY tries the other kind, so
        the choice follows the machine and its load."""
        normal_s, backlog_s = self.item_s_of.get("normal"), self.item_s_of.get("backlog")
        if normal_s is None or backlog_s is None:
            return backlog_s is None
        better = backlog_s < normal_s
        return not better if self.replies % EXPLORE_EVERY == 0 else better

    def sent(self, batch_id: str, size: int, cap: int) -> None:
        """Remember what kind of batch left: only full ones compare sizes fairly."""
        normal, backlog = self.caps()
        if size == cap:
            self.kinds[batch_id] = "backlog" if cap == backlog != normal else "normal"

    def record(self, batch_id: str, item_s: float | None) -> None:
        """A reply came back: learn the model's compute per item, overall and by kind."""
        self.replies += 1
        kind = self.kinds.get(batch_id)
        if not item_s:
            return
        self.item_s = _average(self.item_s, item_s)
        if kind is not None:
            self.item_s_of[kind] = _average(self.item_s_of.get(kind, 0.0), item_s)

    def forget(self, batch_id: str) -> None:
        self.in_flight.pop(batch_id, None)
        self.sent_at.pop(batch_id, None)
        self.kinds.pop(batch_id, None)


def _average(average: float, sample: float) -> float:
    """Exponential moving average (weight 0.2 on the new sample); the first sample as is."""
    return sample if not average else 0.8 * average + 0.2 * sample


def _fits(target_s: float, item_s: float) -> int:
    """Items of `item_s` each in `target_s` (at least one); a moving average a hair above an
    exact divisor (0.05000000000000001) still fits."""
    return max(1, int(target_s / item_s + 1e-9))


class Dispatcher:
    def __init__(
        self,
        settings: Settings,
        sender: Sender,
        replies: ReplySource,
        view: StatusView,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        on_start: Callable[[Dispatcher], None] | None = None,
        threads: bool = True,
    ) -> None:
        self.settings = settings
        self._threaded = threads
        """False: no dispatcher or collector thread; the caller drives it with step() (tests)."""
        self._sender = sender
        self._replies = replies
        self._view = view
        self._clock = clock
        self._wall = wall
        self._models = {m.name: m for m in settings.models}
        self._recheck_s = max(0.05, settings.web.worker_check_interval_s)
        self._started = False
        """True once this process runs the threads; a forked child starts again (forksafe)."""
        self._start_lock = threading.Lock()
        self._no_worker_checked: dict[str, float] = {}
        self._on_start = on_start
        """Called once in each process that starts the dispatcher (the load reporter)."""
        self.on_batch: Callable[[str, int, list[float]], None] | None = None
        """Called on the dispatcher thread after each batch is sent: (model, items, each item's
        wait in this process, s); web.metrics records batch size and queue wait."""
        self.on_phases: Callable[[str, tuple[float, ...]], None] | None = None
        """Called on the collector thread for each reply that carries the worker's times:
        (model, seconds of each of contract.PHASES); web.metrics records them."""
        forksafe.register(self, Dispatcher._after_fork)

    def _after_fork(self) -> None:
        # threads, queues and locks stayed in the parent: start afresh on the first submit
        self._started = False
        self._start_lock = threading.Lock()

    # ---- lifecycle ---------------------------------------------------------------------------
    def _ensure_started(self) -> None:
        # Started lazily in the process that submits: gunicorn forks after building the app.
        if self._started:
            return
        with self._start_lock:
            if self._started:
                return
            self._lock = threading.Lock()
            self._inbox: queue.Queue[Any] = queue.Queue()
            self._stop = threading.Event()
            self._batches: dict[str, tuple[str, list[Future[dict[str, Any]]], float]] = {}
            """batch_id -> (model, its items' futures, wall-clock time it was sent)"""
            self._outstanding: dict[str, int] = {}
            self._states = {name: _ModelState(m) for name, m in self._models.items()}
            self.reply_to = contract.reply_key(uuid.uuid4().hex)
            self._threads: list[threading.Thread] = []
            if self._threaded:
                self._threads = [
                    threading.Thread(
                        target=self._dispatch_loop, name="autodep-dispatch", daemon=True
                    ),
                    threading.Thread(
                        target=self._collect_loop, name="autodep-collect", daemon=True
                    ),
                ]
            for t in self._threads:
                t.start()
            self._started = True
            if self._on_start is not None:
                self._on_start(self)
            log.debug("dispatcher started in pid %s, replies on %s", os.getpid(), self.reply_to)

    def close(self, timeout_s: float = 2.0) -> None:
        if not self._started:
            return
        self._stop.set()
        self._inbox.put(_STOP)
        for t in self._threads:
            t.join(timeout_s)
        self._started = False

    # ---- request threads ---------------------------------------------------------------------
    def submit(
        self, model: str, item: Item, on_sent: Callable[[], None] | None = None
    ) -> Future[dict[str, Any]]:
        ms = self._models.get(model)
        if ms is None:
            raise errors.UnknownModel(f"unknown model {model!r}; served: {', '.join(self._models)}")
        self._ensure_started()
        with self._lock:
            n = self._outstanding.get(model, 0)
            if n >= ms.max_queue:
                raise errors.Overloaded(
                    f"model {model} already has {n} requests waiting in this web process "
                    f"(max_queue={ms.max_queue}); retry later or add workers",
                    retry_after_s=1,
                )
            self._outstanding[model] = n + 1
        future: Future[dict[str, Any]] = Future()
        future.add_done_callback(lambda _f: self._release(model))
        self._inbox.put(("submit", model, _Entry(item, future, self._clock(), on_sent)))
        return future

    def _release(self, model: str) -> None:
        with self._lock:
            self._outstanding[model] = self._outstanding.get(model, 1) - 1

    def outstanding(self, model: str) -> int:
        if not self._started:
            return 0  # nothing submitted in this process yet
        with self._lock:
            return self._outstanding.get(model, 0)

    def set_models(self, models: Iterable[ModelSettings]) -> None:
        """Serve exactly `models` from now on (web.model_table calls it when the registry
        changes). A new model takes items at once; a removed one refuses new items (404), its
        unsent items fail with 404 and its batches in flight are answered or expire. A kept
        model's new settings (batch size, delay, max_queue) apply from its next batch."""
        table = {m.name: m for m in models}
        with self._start_lock:
            self._models = table
            if self._started:
                self._inbox.put(("models", "", table))

    def has_worker(self, model: str) -> bool:
        if model in models_with_workers(self._view.procs()) or model in self._view.startable():
            return True
        # The cached view may predate the worker: look again before refusing, at most every
        # NO_WORKER_RECHECK_S so a flood of requests for an unserved model stays cheap.
        now = self._clock()
        if now - self._no_worker_checked.get(model, float("-inf")) < NO_WORKER_RECHECK_S:
            return False
        self._no_worker_checked[model] = now
        fresh = self._view.procs(fresh=True)  # re-reads the autoscaler's state too
        return model in models_with_workers(fresh) or model in self._view.startable()

    def ready(self) -> Readiness:
        try:
            self._view.ping()
            if self.settings.broker_url != self.settings.result_url:
                self._sender.ping()
            procs = self._view.procs(fresh=True)
        except Exception as exc:  # any failure here means "not ready", with the reason
            return Readiness({m: 0 for m in self._models}, error=str(exc))
        counts = {m: sum(1 for p in procs if p.ready and m in p.models) for m in self._models}
        return Readiness(counts, startable=self._view.startable())

    def load(self) -> dict[str, dict[str, float]]:
        """Per model: items waiting here, items (and batches) sent and not answered, and the
        oldest waiting item's age. Read by the load reporter thread for the autoscaler;
        approximate by design (no lock on the dispatcher thread's queues)."""
        if not self._started:
            return {}
        now = self._clock()
        with self._lock:
            outstanding = dict(self._outstanding)
        out: dict[str, dict[str, float]] = {}
        for name, state in list(self._states.items()):  # set_models may change it meanwhile
            pending = len(state.pending)
            try:
                oldest = now - state.pending[0].arrived if pending else 0.0
            except IndexError:  # emptied meanwhile by the dispatcher thread
                oldest = 0.0
            out[name] = {
                "pending": pending,
                "sent": max(0, outstanding.get(name, 0) - pending),
                "batches": len(state.in_flight),
                "oldest_s": round(max(0.0, oldest), 3),
            }
        return out

    def step(self) -> None:
        """For a dispatcher built with ``threads=False``: apply the replies already waiting,
        then run one dispatcher turn without blocking. Tests drive batching this way, with a
        fake clock, instead of sleeping; the reply source must not block on a 0 s timeout (a
        Redis BLPOP would wait forever)."""
        self._ensure_started()
        while (reply := self._replies.pop(self.reply_to, 0.0)) is not None:
            self._resolve(reply)
        self._dispatch_once(block=False)

    # ---- dispatcher thread -------------------------------------------------------------------
    def _dispatch_loop(self) -> None:
        while True:
            try:
                if self._dispatch_once():
                    return
            except Exception:  # never let the one sending thread die
                log.exception("dispatcher loop failed; continuing")
                time.sleep(0.01)

    def _dispatch_once(self, block: bool = True) -> bool:
        """One turn: take what arrived (waiting until something is due, if `block`), expire,
        send what is due. True when told to stop."""
        try:
            msg = self._inbox.get(timeout=self._wait_s() if block else 0.0)
        except queue.Empty:
            msg = None
        handled = 0
        while msg is not None:
            if msg is _STOP:
                return True
            self._handle(msg)
            handled += 1
            if handled >= MAX_DRAIN:
                break
            try:
                msg = self._inbox.get_nowait()
            except queue.Empty:
                msg = None
        self._expire()
        self._flush()
        return False

    def _handle(self, msg: tuple[Any, ...]) -> None:
        kind, model = msg[0], msg[1]
        if kind == "models":
            self._apply_models(msg[2])
            return
        state = self._states.get(model)
        if state is None:  # registered, or unregistered, while this message was on its way
            ms = self._models.get(model)
            if ms is None:
                if kind == "submit":
                    _fail([msg[2].future], functools.partial(_unregistered, model))
                return
            state = self._states[model] = _ModelState(ms)
        if kind == "submit":
            state.pending.append(msg[2])
        elif kind == "done":
            state.record(msg[2], msg[3] if len(msg) > 3 else None)
            sent = state.sent_at.get(msg[2])
            if sent is not None:
                state.rtt_s = _average(state.rtt_s, self._clock() - sent)
            state.forget(msg[2])
            if model not in self._models and not state.in_flight:
                self._states.pop(model, None)  # unregistered, and its last batch is back

    def _apply_models(self, table: dict[str, ModelSettings]) -> None:
        """The dispatcher thread's half of set_models."""
        for name, ms in table.items():
            state = self._states.get(name)
            if state is None:
                self._states[name] = _ModelState(ms)
            else:
                state.settings = ms
        for name in [n for n in self._states if n not in table]:
            state = self._states[name]
            _fail([e.future for e in state.pending], functools.partial(_unregistered, name))
            state.pending.clear()
            if not state.in_flight:
                del self._states[name]

    def _limit(self, model: str) -> int:
        # This process's share of the model's worker processes, plus one batch queued behind
        # them so a worker never waits for a round trip; what arrives beyond that gathers into
        # bigger batches instead of many small ones (each costs ~2 ms of Celery CPU).
        n = sum(1 for p in self._view.peek() if p.ready and model in p.models)
        return max(1, -(-n // self.settings.web.processes)) + 1

    def _wait_s(self) -> float | None:
        now, wall = self._clock(), self._wall()
        waits: list[float] = []
        for state in self._states.values():
            waits.extend(deadline - wall for deadline in state.in_flight.values())
            if not state.pending:
                continue
            if len(state.in_flight) >= self._limit(state.settings.name):
                waits.append(self._recheck_s)  # the worker count may grow
            elif not state.in_flight:
                waits.append(0.0)
            else:
                waits.append(state.pending[0].arrived + state.gather_s() - now)
        return max(0.0, min(waits)) if waits else None

    def _flush(self) -> None:
        for name, state in self._states.items():
            limit = self._limit(name)
            while state.pending and len(state.in_flight) < limit:
                full = len(state.pending) >= state.batch_cap()
                idle = not state.in_flight
                waited = self._clock() - state.pending[0].arrived >= state.gather_s()
                if not (full or idle or waited):
                    break
                self._send(state)

    def _send(self, state: _ModelState) -> None:
        ms = state.settings
        entries: list[_Entry] = []
        cap = state.batch_cap()
        while state.pending and len(entries) < cap:
            entry = state.pending.popleft()
            # False when the request thread already gave up (cancelled): drop it unsent.
            if entry.future.set_running_or_notify_cancel():
                entries.append(entry)
        if not entries:
            return
        futures = [e.future for e in entries]
        latest = max(float(e.item.get("deadline", 0.0)) for e in entries)
        expires_s = latest - self._wall()
        if expires_s <= 0:
            _fail(futures, lambda: errors.DeadlineExceeded("deadline passed before sending"))
            return
        batch_id = uuid.uuid4().hex
        batch = contract.make_batch(ms.name, batch_id, self.reply_to, [e.item for e in entries])
        with self._lock:
            self._batches[batch_id] = (ms.name, futures, self._wall())
        # A job's deadline is jobs.timeout_s away: its batch holds a slot here no longer than a
        # request's (a lost reply must not shrink the model's slots for an hour); the broker
        # keeps the batch until the job's deadline, and the worker records the job's result.
        state.in_flight[batch_id] = min(latest, self._wall() + self.settings.web.request_timeout_s)
        state.sent_at[batch_id] = self._clock()
        state.sent(batch_id, len(entries), cap)
        try:
            self._sender.send(ms, batch, expires_s)
        except Exception as exc:
            log.warning("could not send a batch of %s to the broker: %s", ms.name, exc)
            state.forget(batch_id)
            with self._lock:
                self._batches.pop(batch_id, None)
            message = (
                f"could not send the request to the broker ({exc}); "
                "check that the broker is running and broker.url is right"
            )
            _fail(futures, lambda: errors.BrokerUnavailable(message))
            return
        for entry in entries:
            if entry.on_sent is not None:
                _notify_sent(entry.on_sent)
        if self.on_batch is not None:
            now = self._clock()
            try:
                self.on_batch(ms.name, len(entries), [now - e.arrived for e in entries])
            except Exception:  # metrics must never stop batches
                log.exception("batch hook failed")

    def _expire(self) -> None:
        # A batch whose deadline passed frees its slot; a reply that still comes is dropped.
        wall = self._wall()
        for state in self._states.values():
            for batch_id, deadline in list(state.in_flight.items()):
                if deadline > wall:
                    continue
                state.forget(batch_id)
                with self._lock:
                    entry = self._batches.pop(batch_id, None)
                if entry is not None:
                    _fail(
                        entry[1],
                        lambda: errors.DeadlineExceeded("the worker did not answer in time"),
                    )

    # ---- collector thread --------------------------------------------------------------------
    def _collect_loop(self) -> None:
        backoff_s = 0.1
        while not self._stop.is_set():
            try:
                reply = self._replies.pop(self.reply_to, REPLY_POLL_S)
            except Exception as exc:  # Redis down: keep the thread, retry with backoff
                log.warning("reading replies failed (%s); retrying in %.1f s", exc, backoff_s)
                self._stop.wait(backoff_s)
                backoff_s = min(backoff_s * 2, 2.0)
                continue
            backoff_s = 0.1
            if reply is not None:
                try:
                    self._resolve(reply)
                except Exception:
                    log.exception("could not apply a reply; dropped")

    def _resolve(self, reply: dict[str, Any]) -> None:
        batch_id = reply.get("batch_id") if isinstance(reply, dict) else None
        with self._lock:
            entry = self._batches.pop(batch_id, None) if isinstance(batch_id, str) else None
        if entry is None:
            log.debug("dropping a reply for unknown or expired batch %r", batch_id)
            return
        model, futures, sent = entry
        if self.on_phases is not None:
            phases = contract.batch_phases(reply, sent, self._wall())
            if phases is not None:
                try:
                    self.on_phases(model, phases)
                except Exception:  # metrics must never stop replies
                    log.exception("phases hook failed")
        results = reply.get("results")
        self._inbox.put(("done", model, batch_id, _seconds_per_item(results)))
        if reply.get("ok") is False or not isinstance(results, list):
            error = reply.get("error") if isinstance(reply.get("error"), dict) else {}
            _fail(futures, lambda: errors.from_dict(error or {"message": "malformed reply"}))
            return
        if len(results) != len(futures):
            message = f"worker answered {len(results)} results for {len(futures)} items"
            _fail(futures, lambda: errors.AutodepError(message))
            return
        for future, result in zip(futures, results, strict=True):
            try:
                future.set_result(result)
            except InvalidStateError:  # already failed or cancelled: a late answer
                pass


def _seconds_per_item(results: Any) -> float | None:
    """Model compute time per item of a batch (its longest group's forward over its size)."""
    if not isinstance(results, list) or not results:
        return None
    compute = [r.get("compute_ns") for r in results if isinstance(r, dict) and r.get("ok")]
    numbers = [c for c in compute if isinstance(c, int) and c > 0]
    return max(numbers) / 1e9 / len(results) if numbers else None


def _notify_sent(callback: Callable[[], None]) -> None:
    try:
        callback()
    except Exception:  # a caller's callback must never stop batches
        log.exception("on_sent callback failed")


def _unregistered(model: str) -> errors.UnknownModel:
    return errors.UnknownModel(f"model {model} was unregistered before this request was sent")


def _fail(futures: list[Future[dict[str, Any]]], make: Callable[[], Exception]) -> None:
    # One exception object per future: waiting threads each raise (and mutate) their own.
    for future in futures:
        if future.done():
            continue
        try:
            future.set_exception(make())
        except InvalidStateError:  # cancelled meanwhile by its request thread
            pass
