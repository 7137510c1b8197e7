"""Open-loop load: requests fired at the times a trace asks for, whether or not earlier ones
have been answered, plus a sampler of the model's pool while the load runs.

bench.autoscale calls OpenLoop.run (and OpenLoop.saturate to measure capacity) and PoolSampler.
wrk cannot follow a rate that changes over time, and a closed loop (a fixed number of
connections) slows its own sending when the server slows, hiding the backlog the autoscaler must
see. In-flight requests are capped (max_in_flight threads, one keep-alive connection each) so a
saturated server cannot make the generator run away: an arrival that finds every slot busy is
recorded as "shed", never queued. Talks to 127.0.0.1 only. Stdlib HTTP; imports no torch.
"""

from __future__ import annotations

import http.client
import json
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from autodep_celery.bench.timeline import PoolSample, Request

HOST = "127.0.0.1"
SAMPLE_INTERVAL_S = 0.5
"""How often the pool is sampled (GET /autoscaler, else /workers/_status)."""
_RETRYABLE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class OpenLoop:
    """POSTs one body to http://127.0.0.1:`port``path` from `max_in_flight` threads."""

    def __init__(
        self, port: int, path: str, body: bytes, max_in_flight: int, timeout_s: float
    ) -> None:
        self.port, self.path, self.body = port, path, body
        self.max_in_flight, self.timeout_s = max_in_flight, timeout_s
        self.in_flight = 0
        self._cond = threading.Condition()
        self._jobs: queue.SimpleQueue[float | None] = queue.SimpleQueue()
        self._records: list[Request] = []
        self._t0 = 0.0

    def run(self, arrivals: Sequence[float], t0: float) -> list[Request]:
        """Send at `t0 + a` (monotonic) for each a in `arrivals`; wait for every answer (each
        bounded by timeout_s) and return one Request per arrival, times relative to `t0`."""
        self._records, self._t0 = [], t0
        threads = self._start_threads()
        try:
            for a in arrivals:
                delay = t0 + a - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                with self._cond:
                    if self.in_flight >= self.max_in_flight:
                        self._records.append(Request(a, None, 0, "shed"))
                        continue
                    self.in_flight += 1
                self._jobs.put(a)
        except BaseException:
            self._stop_threads(threads, wait=False)  # Ctrl-C: do not wait for the answers
            raise
        self._stop_threads(threads)
        return sorted(self._records, key=lambda r: r.intended_s)

    def saturate(self, duration_s: float, concurrency: int) -> list[Request]:
        """Closed loop for `duration_s`: keep `concurrency` requests in flight (capacity)."""
        self._records, self._t0 = [], time.monotonic()
        threads = self._start_threads()
        try:
            end = self._t0 + duration_s
            while time.monotonic() < end:
                with self._cond:
                    while self.in_flight >= min(concurrency, self.max_in_flight):
                        self._cond.wait(0.1)
                    self.in_flight += 1
                self._jobs.put(time.monotonic() - self._t0)
        except BaseException:
            self._stop_threads(threads, wait=False)
            raise
        self._stop_threads(threads)
        return self._records

    def records(self) -> list[Request]:
        """The requests ended so far, in the order they ended (progress lines of a long run;
        what an interrupted run keeps)."""
        with self._cond:
            return list(self._records)

    def _start_threads(self) -> list[threading.Thread]:
        threads = [
            threading.Thread(target=self._work, name=f"openloop-{i}", daemon=True)
            for i in range(self.max_in_flight)
        ]
        for t in threads:
            t.start()
        return threads

    def _stop_threads(self, threads: list[threading.Thread], wait: bool = True) -> None:
        """End the threads once every sent request has finished (or timed out); with
        wait=False, return at once (daemon threads, ended with the process)."""
        for _ in threads:
            self._jobs.put(None)
        deadline = time.monotonic() + self.timeout_s + 10
        for t in threads if wait else []:
            t.join(max(0.0, deadline - time.monotonic()))

    def _work(self) -> None:
        conn: http.client.HTTPConnection | None = None
        while (intended := self._jobs.get()) is not None:
            status, error = 0, None
            for attempt in (1, 2):  # a kept-alive connection the server closed: retry once
                fresh = conn is None
                if conn is None:
                    conn = http.client.HTTPConnection(HOST, self.port, timeout=self.timeout_s)
                try:
                    conn.request("POST", self.path, self.body, {"Content-Type": "application/json"})
                    resp = conn.getresponse()
                    resp.read()
                    status = resp.status
                    break
                except _RETRYABLE:
                    conn.close()
                    conn = None
                    if fresh or attempt == 2:
                        error = "connection"
                        break
                except TimeoutError:
                    conn.close()
                    conn, error = None, "timeout"
                    break
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conn, error = None, "connection"
                    break
            done = time.monotonic() - self._t0
            with self._cond:
                self._records.append(Request(intended, done, status, error))
                self.in_flight -= 1
                self._cond.notify()
        if conn is not None:
            conn.close()


class PoolSampler:
    """A thread that samples the model's pool every `interval_s` until stopped."""

    def __init__(
        self,
        port: int,
        model: str,
        t0: float,
        outstanding: Callable[[], int],
        interval_s: float = SAMPLE_INTERVAL_S,
        on_sample: Callable[[PoolSample], None] | None = None,
    ) -> None:
        self.port, self.model, self.t0 = port, model, t0
        self.outstanding, self.interval_s, self.on_sample = outstanding, interval_s, on_sample
        self.samples: list[PoolSample] = []
        self.source: str | None = None
        """"autoscaler" or "workers": where the process counts came from."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pool-sampler", daemon=True)

    def start(self) -> PoolSampler:
        self._thread.start()
        return self

    def stop(self) -> list[PoolSample]:
        self._stop.set()
        self._thread.join(10)
        return self.samples

    def _loop(self) -> None:
        tick = time.monotonic()
        while not self._stop.is_set():
            s = self.sample()
            self.samples.append(s)
            if self.on_sample is not None:
                self.on_sample(s)
            tick += self.interval_s
            self._stop.wait(max(0.0, tick - time.monotonic()))

    def sample(self) -> PoolSample:
        t = time.monotonic() - self.t0
        out = self.outstanding()
        if self.source != "workers":
            state = get_json(self.port, "/autoscaler")
            models = state.get("models") if isinstance(state, dict) else None
            if isinstance(models, dict) and isinstance(models.get(self.model), dict):
                self.source = "autoscaler"
                return from_autoscaler(t, models[self.model], out)
            if self.source is None and state is not None:
                self.source = "workers"  # answered, but without this model: no autoscaler
        status = get_json(self.port, "/workers/_status")
        if self.source is None and status is not None:
            self.source = "workers"
        info = get_json(self.port, "/workers/_info")
        return PoolSample(t, count_processes(status, info, self.model), outstanding=out)


def get_json(port: int, path: str, timeout_s: float = 2.0) -> Any:
    """GET http://127.0.0.1:port/path as JSON; None on any error or non-200 answer."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout_s)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        data = resp.read()
        return json.loads(data) if resp.status == 200 else None
    except (OSError, ValueError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def from_autoscaler(t_s: float, m: dict[str, Any], outstanding: int) -> PoolSample:
    """A PoolSample from one model's entry of GET /autoscaler."""

    def num(key: str) -> Any:
        value = m.get(key)
        return value if isinstance(value, int | float) and not isinstance(value, bool) else None

    current = num("current")
    return PoolSample(
        t_s,
        None if current is None else int(current),
        ready=None if num("ready") is None else int(num("ready")),
        desired=None if num("desired") is None else int(num("desired")),
        backlog=num("backlog"),
        queue_wait_s=num("queue_wait_s"),
        outstanding=outstanding,
    )


def count_processes(status: Any, info: Any, model: str) -> int | None:
    """Pool processes of `model` from GET /workers/_status (one entry per pool child,
    "<worker>/<pid>"), leaving out those that GET /workers/_info shows serving only other
    models (a child still loading lists no model yet: it counts)."""
    if not isinstance(status, dict):
        return None
    others = set()
    for entry in info if isinstance(info, list) else []:
        try:
            proc, _served = entry
            models = proc.get("models") or []
            if models and model not in models:
                others.add(f"{proc['worker']}/{proc['pid']}")
        except (TypeError, ValueError, KeyError, AttributeError):
            continue
    return sum(1 for key in status if key not in others)
