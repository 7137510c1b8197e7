"""Prometheus metrics of the serving system, for ``GET /metrics``.

Two kinds. Counted in the web processes (prometheus_client; in multiprocess mode under gunicorn,
so a scrape of any process sums all of them): requests by route and status, request latency,
batch sizes and queue wait (from the dispatcher's batch hook), and model compute time per
request (``compute_ns`` that workers put on each reply item). Read from Redis at scrape time by
:class:`RedisCollector`: backlog per model (autoscaler.backlog, the autoscaler's own signal),
worker processes per model and state (the status hash), and the running autoscaler's state
(``autodep:autoscaler``; nothing is exported when no autoscaler runs).

Multiprocess mode is on when ``PROMETHEUS_MULTIPROC_DIR`` is set before prometheus_client is
first imported: web.gunicorn_conf sets and wipes it in the master, before workers fork. Without
it (tests, a single process) each app counts in its own registry. Must not import torch.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import redis
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from autodep_celery import forksafe, status
from autodep_celery.autoscaler import backlog as backlog_mod
from autodep_celery.autoscaler import state as autoscaler_state
from autodep_celery.config import Settings
from autodep_celery.contract import PHASES

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SCRAPE_TIMEOUT_S = 0.5
"""Bound on each Redis read at scrape time: /metrics answers even while Redis does not."""

PHASE_BUCKETS_S = (
    0.0001,
    0.00025,
    0.0005,
    0.00075,
    0.001,
    0.0015,
    0.002,
    0.003,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    10,
)
"""Finer below 1 ms than LATENCY_BUCKETS_S: the hops of a small model's batch take ~0.1-1 ms."""
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
PROCESS_STATES = ("loading", "idle", "working")
AUTOSCALER_SIZES = ("current", "ready", "desired", "min", "max")
DECISIONS = ("up", "down", "hold")


class Metrics:
    """The web process's instruments plus the scrape-time collector, rendered by :meth:`render`."""

    def __init__(self, settings: Settings, redis_url: str | None = None) -> None:
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        own = None if self.multiprocess else CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "autodep_http_requests",
            "HTTP requests answered, by route template, method and status code.",
            ["route", "method", "status"],
            registry=own,
        )
        self.latency = Histogram(
            "autodep_http_request_duration_seconds",
            "Time from a request's routing to its response, by route template and method.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS_S,
            registry=own,
        )
        self.batch_size = Histogram(
            "autodep_batch_size_items",
            "Items per batch sent to a model's queue by a web process.",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=own,
        )
        self.queue_wait = Histogram(
            "autodep_queue_wait_seconds",
            "Time an item waited in a web process's dispatcher before its batch was sent.",
            ["model"],
            buckets=LATENCY_BUCKETS_S,
            registry=own,
        )
        self.inference = Histogram(
            "autodep_inference_seconds",
            "Model forward time of the batch group that computed a request, as reported by "
            "the worker (compute_ns); one observation per answered request.",
            ["model"],
            buckets=LATENCY_BUCKETS_S,
            registry=own,
        )
        self.phases = Histogram(
            "autodep_batch_phase_seconds",
            "A batch's round trip by hop, from the worker's times on its reply: to_worker (web "
            "send to task start: broker, consumer, pool), in_worker (task start to reply "
            "pushed), to_web (reply pushed to received). Cross-machine hops are as exact as "
            "the clocks agree.",
            ["model", "phase"],
            buckets=PHASE_BUCKETS_S,
            registry=own,
        )
        if own is None:
            self.registry = CollectorRegistry()
            MultiProcessCollector(self.registry)  # type: ignore[no-untyped-call]  # untyped API
        else:
            self.registry = own
        self._collector = RedisCollector(settings, redis_url or settings.result_url)
        self.registry.register(self._collector)

    def set_settings(self, settings: Settings) -> None:
        """The model set changed (web.model_table): label the per-model gauges with it."""
        self._collector.settings = settings

    def request_done(self, route: str, method: str, status_code: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status_code)).inc()
        self.latency.labels(route, method).observe(seconds)

    def batch_sent(self, model: str, size: int, waits_s: list[float]) -> None:
        """The dispatcher's hook: one batch of `size` items left, each after waiting waits_s."""
        self.batch_size.labels(model).observe(size)
        hist = self.queue_wait.labels(model)
        for wait in waits_s:
            hist.observe(max(0.0, wait))

    def batch_phases(self, model: str, seconds: tuple[float, ...]) -> None:
        """The dispatcher's reply hook: the hops of one batch (contract.PHASES)."""
        for phase, s in zip(PHASES, seconds, strict=True):
            self.phases.labels(model, phase).observe(s)

    def result(self, model: str, result: dict[str, Any]) -> None:
        compute_ns = result.get("compute_ns")
        if result.get("ok") and isinstance(compute_ns, int) and compute_ns > 0:
            self.inference.labels(model).observe(compute_ns / 1e9)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RedisCollector(Collector):
    """Gauges read from Redis at each scrape (one client per process, made after fork)."""

    def __init__(
        self, settings: Settings, url: str, client: Callable[[], redis.Redis] | None = None
    ) -> None:
        self.settings = settings
        self._url = url
        self._make_client = client
        self._client: redis.Redis | None = None
        self._lock = threading.Lock()
        forksafe.register(self, RedisCollector._after_fork)

    def _after_fork(self) -> None:
        self._client, self._lock = None, threading.Lock()

    def _conn(self) -> redis.Redis:
        with self._lock:
            if self._client is None:
                self._client = (
                    self._make_client()
                    if self._make_client
                    else redis.Redis.from_url(
                        self._url,
                        socket_timeout=SCRAPE_TIMEOUT_S,
                        socket_connect_timeout=SCRAPE_TIMEOUT_S,
                    )
                )
            return self._client

    def describe(self) -> list[Metric]:
        return []  # dynamic: nothing to check for duplicates at registration

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        try:
            client = self._conn()
            procs = status.read_all(client)
            signals = backlog_mod.read(client, self.settings, procs)
            scaler = autoscaler_state.read(client)
        except (redis.RedisError, OSError) as exc:
            log.warning("metrics: cannot read Redis: %s", exc)
            yield _gauge("autodep_redis_up", "1 when this scrape could read Redis.", [], [([], 0)])
            return
        yield from redis_metrics(self.settings, procs, signals, scaler)
        yield _gauge(
            "autodep_scrape_redis_seconds",
            "Time this scrape spent reading Redis.",
            [],
            [([], time.perf_counter() - started)],
        )


def _gauge(
    name: str, doc: str, labels: list[str], samples: list[tuple[list[str], float]]
) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc, labels=labels)
    for values, value in samples:
        g.add_metric(values, value)
    return g


def redis_metrics(
    settings: Settings,
    procs: list[status.ProcStatus],
    signals: dict[str, backlog_mod.Signal],
    scaler: dict[str, Any] | None,
) -> Iterator[Metric]:
    """Everything a successful Redis read yields (the autoscaler's part only while it runs)."""
    yield _gauge("autodep_redis_up", "1 when this scrape could read Redis.", [], [([], 1)])
    yield from model_metrics(settings, procs, signals)
    if scaler is not None:
        yield from autoscaler_metrics(scaler)
    else:  # no state published within its TTL: none runs (an alert can fire on 0)
        yield _gauge("autodep_autoscaler_running", _RUNNING_HELP, [], [([], 0.0)])


def model_metrics(
    settings: Settings,
    procs: list[status.ProcStatus],
    signals: dict[str, backlog_mod.Signal],
) -> Iterator[Metric]:
    """Backlog and worker processes per configured model (zeros included, so series exist)."""
    names = [m.name for m in settings.models]
    counts = {(m, s): 0 for m in names for s in PROCESS_STATES}
    for p in procs:
        state = "loading" if not p.ready else ("working" if p.state == "Working" else "idle")
        for m in p.models:
            counts[(m, state)] = counts.get((m, state), 0) + 1
    yield _gauge(
        "autodep_worker_processes",
        "Live worker pool processes serving a model, by state (loading, idle, working).",
        ["model", "state"],
        [([m, s], n) for (m, s), n in sorted(counts.items())],
    )
    sig = {name: signals.get(name, backlog_mod.Signal()) for name in names}
    yield _gauge(
        "autodep_backlog_items",
        "Requests of a model waiting or computing: pending in web processes, sent and not "
        "answered, queued (the autoscaler's signal).",
        ["model"],
        [([m], s.backlog) for m, s in sig.items()],
    )
    yield _gauge(
        "autodep_pending_items",
        "Requests waiting in web processes' dispatchers, not yet sent.",
        ["model"],
        [([m], s.pending) for m, s in sig.items()],
    )
    yield _gauge(
        "autodep_queue_messages",
        "Batches (messages) in the model's broker queue.",
        ["model"],
        [([m], s.queued) for m, s in sig.items()],
    )
    yield _gauge(
        "autodep_oldest_pending_seconds",
        "Age of the oldest request still waiting in a web process.",
        ["model"],
        [([m], s.oldest_wait_s) for m, s in sig.items()],
    )


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    return float(value) if isinstance(value, int | float) else None


_RUNNING_HELP = "1 while an autoscaler publishes its state, else 0."


def autoscaler_metrics(state: dict[str, Any]) -> Iterator[Metric]:
    """The running autoscaler's state (``autodep:autoscaler``) as gauges and counters."""
    yield _gauge(
        "autodep_autoscaler_running",
        _RUNNING_HELP,
        [],
        [([], 1.0 if state.get("running", True) else 0.0)],
    )
    ts = _number(state.get("ts"))
    if ts is not None:
        yield _gauge(
            "autodep_autoscaler_last_update_timestamp_seconds",
            "When the autoscaler last published its state (Unix time).",
            [],
            [([], ts)],
        )
    models = state.get("models")
    models = models if isinstance(models, dict) else {}
    sizes: list[tuple[list[str], float]] = []
    backlog: list[tuple[list[str], float]] = []
    wait: list[tuple[list[str], float]] = []
    decided_at: list[tuple[list[str], float]] = []
    decisions = CounterMetricFamily(
        "autodep_autoscaler_decisions",
        "Decisions the autoscaler took per model since it started (up, down, hold).",
        labels=["model", "decision"],
    )
    for name, m in sorted(models.items()):
        if not isinstance(m, dict):
            continue
        for kind in AUTOSCALER_SIZES:
            value = _number(m.get(kind))
            if value is not None:
                sizes.append(([name, kind], value))
        if (value := _number(m.get("backlog"))) is not None:
            backlog.append(([name], value))
        if (value := _number(m.get("queue_wait_s"))) is not None:
            wait.append(([name], value))
        raw = m.get("decisions")
        counts: dict[str, Any] = raw if isinstance(raw, dict) else {}
        for decision in DECISIONS:
            decisions.add_metric([name, decision], _number(counts.get(decision)) or 0.0)
        last = m.get("last_decision")
        if isinstance(last, dict) and (value := _number(last.get("at"))) is not None:
            decided_at.append(([name], value))
    yield _gauge(
        "autodep_autoscaler_processes",
        "Pool processes per model as the autoscaler sees them: current, ready, desired, "
        "min and max.",
        ["model", "kind"],
        sizes,
    )
    yield _gauge(
        "autodep_autoscaler_backlog_items", "Backlog the autoscaler decided on.", ["model"], backlog
    )
    yield _gauge(
        "autodep_autoscaler_queue_wait_seconds",
        "Oldest pending item's wait the autoscaler decided on.",
        ["model"],
        wait,
    )
    yield decisions
    if decided_at:
        yield _gauge(
            "autodep_autoscaler_last_decision_timestamp_seconds",
            "When the autoscaler last took a decision for a model (Unix time).",
            ["model"],
            decided_at,
        )
