"""From raw records of an autoscale run to what is reported: windows, worker-seconds, the oracle.

bench.openloop produces one Request per arrival and one PoolSample per sampling tick; this module
turns them into per-window series (offered and completed req/s, latency percentiles over a
trailing window, processes, backlog) and the run's figures: worker-seconds (the integral of pool
processes over time), the same for an oracle that knew the trace, throughput over an interval,
reaction time, time back to the minimum and the number of scale actions. Pure functions of their
arguments (unit-tested); imports nothing of the project but bench.traces' type.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

ORACLE_STEP_S = 0.05
"""Resolution of the oracle's integral."""


@dataclass(frozen=True)
class Request:
    intended_s: float
    """When the trace asked for it (s from the start): latency is measured from here, so time
    spent waiting for a free client slot counts (no coordinated omission)."""
    done_s: float | None
    """When its answer (or error) arrived; None when it was never sent."""
    status: int
    """HTTP status, or 0 when there was none."""
    error: str | None = None
    """None, "timeout", "connection" or "shed" (not sent: the client's in-flight cap was hit)."""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def latency_s(self) -> float | None:
        return None if self.done_s is None else self.done_s - self.intended_s


@dataclass(frozen=True)
class PoolSample:
    t_s: float
    processes: int | None
    """Pool processes of the model (autoscaler's "current", else entries in /workers/_status)."""
    ready: int | None = None
    desired: int | None = None
    backlog: float | None = None
    queue_wait_s: float | None = None
    outstanding: int = 0
    """Requests the load generator had sent and not yet seen answered."""


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of already sorted values; None when empty."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def windows(
    requests: Sequence[Request],
    samples: Sequence[PoolSample],
    end_s: float,
    step_s: float,
    latency_window_s: float,
) -> list[dict[str, Any]]:
    """One row per `step_s` window up to `end_s`: offered and completed (2xx) req/s, errors,
    p50/p99 latency (ms) of the 2xx answers completed in the trailing `latency_window_s`, and
    the last pool sample taken in the window."""
    n = max(1, math.ceil(end_s / step_s - 1e-9))
    offered, completed, errors = [0] * n, [0] * n, [0] * n
    done: list[tuple[float, float]] = []
    for r in requests:
        k = int(r.intended_s // step_s)
        if 0 <= k < n:
            offered[k] += 1
        if r.done_s is None or r.error == "shed":
            if 0 <= k < n:
                errors[k] += 1  # shed: counted where it was due
            continue
        j = int(r.done_s // step_s)
        if 0 <= j < n:
            if r.ok:
                completed[j] += 1
            else:
                errors[j] += 1
        if r.ok:
            done.append((r.done_s, r.done_s - r.intended_s))
    done.sort()
    done_at = [d for d, _ in done]
    sample_at = [s.t_s for s in samples]
    rows = []
    for k in range(n):
        hi = (k + 1) * step_s
        recent = sorted(
            lat
            for _, lat in done[
                bisect.bisect_left(done_at, hi - latency_window_s) : bisect.bisect_left(done_at, hi)
            ]
        )
        i = bisect.bisect_left(sample_at, hi) - 1
        s = samples[i] if i >= 0 else None
        p50, p99 = percentile(recent, 50), percentile(recent, 99)
        rows.append(
            {
                "t_s": hi,
                "offered_rps": offered[k] / step_s,
                "completed_rps": completed[k] / step_s,
                "errors": errors[k],
                "p50_ms": None if p50 is None else p50 * 1000,
                "p99_ms": None if p99 is None else p99 * 1000,
                "processes": s.processes if s else None,
                "ready": s.ready if s else None,
                "desired": s.desired if s else None,
                "backlog": s.backlog if s else None,
                "outstanding": s.outstanding if s else None,
            }
        )
    return rows


def worker_seconds(samples: Sequence[PoolSample], start_s: float, end_s: float) -> float:
    """Integral of pool processes over [start_s, end_s]: each sample's count holds until the
    next sample; a sample with no count keeps the last known one."""
    total, last, last_t = 0.0, None, start_s
    for s in samples:
        t = min(max(s.t_s, start_s), end_s)
        if last is not None:
            total += last * (t - last_t)
        last_t = t
        if s.processes is not None:
            last = s.processes
    if last is not None:
        total += last * (end_s - last_t)
    return total


def oracle_processes(rate_rps: float, per_process_rps: float, low: int, high: int) -> int:
    """Processes an oracle would run for `rate_rps`: ceil(rate / capacity), within [low, high]."""
    need = math.ceil(rate_rps / per_process_rps - 1e-9) if rate_rps > 0 else 0
    return min(high, max(low, need))


def oracle_worker_seconds(
    rate: Callable[[float], float],
    duration_s: float,
    per_process_rps: float,
    low: int,
    high: int,
    step_s: float = ORACLE_STEP_S,
) -> float:
    """Worker-seconds of the oracle over the trace (midpoint rule)."""
    steps = int(math.ceil(duration_s / step_s - 1e-9))
    total = 0.0
    for i in range(steps):
        t0, t1 = i * step_s, min(duration_s, (i + 1) * step_s)
        total += oracle_processes(rate((t0 + t1) / 2), per_process_rps, low, high) * (t1 - t0)
    return total


def throughput(requests: Sequence[Request], start_s: float, end_s: float) -> float | None:
    """2xx answers per second completed within [start_s, end_s)."""
    if end_s <= start_s:
        return None
    n = sum(1 for r in requests if r.ok and r.done_s is not None and start_s <= r.done_s < end_s)
    return n / (end_s - start_s)


def first_time(
    samples: Sequence[PoolSample], after_s: float, test: Callable[[PoolSample], bool]
) -> float | None:
    """Seconds from `after_s` to the first sample taken then or later that passes `test`."""
    for s in samples:
        if s.t_s >= after_s and test(s):
            return s.t_s - after_s
    return None


def actions(samples: Sequence[PoolSample], start_s: float, end_s: float) -> int:
    """Changes of the process count between samples within [start_s, end_s]."""
    counts = [s.processes for s in samples if start_s <= s.t_s <= end_s and s.processes is not None]
    return sum(1 for a, b in zip(counts, counts[1:], strict=False) if a != b)


def outcome_counts(requests: Sequence[Request]) -> dict[str, int]:
    """How the requests ended: ok, http_<status> per non-2xx status, timeout, connection, shed."""
    out: dict[str, int] = {"sent": 0, "ok": 0}
    for r in requests:
        if r.error == "shed":
            out["shed"] = out.get("shed", 0) + 1
            continue
        out["sent"] += 1
        if r.ok:
            out["ok"] += 1
        else:
            key = r.error or f"http_{r.status}"
            out[key] = out.get(key, 0) + 1
    return out
