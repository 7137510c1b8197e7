"""Pure parts of the autoscale scenario: percentile windows, worker-seconds, the oracle."""

from __future__ import annotations

import pytest

from autodep_celery.bench import timeline
from autodep_celery.bench.timeline import PoolSample, Request
from autodep_celery.bench.traces import Trace


def test_percentile_nearest_rank() -> None:
    values = sorted(float(v) for v in range(1, 101))
    assert timeline.percentile(values, 50) == 50
    assert timeline.percentile(values, 99) == 99
    assert timeline.percentile(values, 100) == 100
    assert timeline.percentile([7.0], 99) == 7
    assert timeline.percentile([], 50) is None


def test_windows_count_offered_completed_and_errors_where_they_happened() -> None:
    reqs = [
        Request(0.1, 0.3, 200),  # window 0, done in window 0
        Request(0.2, 0.7, 200),  # done in window 1
        Request(0.6, 0.9, 504),  # error in window 1
        Request(0.8, None, 0, "shed"),  # shed: an error where it was due
        Request(1.1, 1.3, 0, "timeout"),
    ]
    rows = timeline.windows(reqs, [], end_s=1.5, step_s=0.5, latency_window_s=1.0)
    assert [r["t_s"] for r in rows] == [0.5, 1.0, 1.5]
    assert [r["offered_rps"] for r in rows] == [4.0, 4.0, 2.0]
    assert [r["completed_rps"] for r in rows] == [2.0, 2.0, 0.0]
    assert [r["errors"] for r in rows] == [0, 2, 1]


def test_latency_percentiles_are_over_the_trailing_window() -> None:
    # one 2xx answer every 0.1 s; latency 10 ms before t=1 s, 100 ms after
    reqs = [Request(t / 10 - 0.01, t / 10, 200) for t in range(1, 10)]
    reqs += [Request(t / 10 - 0.1, t / 10, 200) for t in range(10, 20)]
    rows = timeline.windows(reqs, [], end_s=2.0, step_s=0.5, latency_window_s=0.5)
    p50 = [r["p50_ms"] for r in rows]
    assert p50[0] == pytest.approx(10) and p50[1] == pytest.approx(10)
    assert p50[2] == pytest.approx(100) and p50[3] == pytest.approx(100)
    wide = timeline.windows(reqs, [], end_s=2.0, step_s=0.5, latency_window_s=2.0)
    assert wide[2]["p99_ms"] == pytest.approx(100) and wide[2]["p50_ms"] == pytest.approx(10)


def test_windows_carry_the_last_pool_sample() -> None:
    samples = [PoolSample(0.2, 1, backlog=0), PoolSample(0.7, 2, backlog=5, outstanding=9)]
    rows = timeline.windows([], samples, end_s=1.5, step_s=0.5, latency_window_s=1)
    assert [r["processes"] for r in rows] == [1, 2, 2]
    assert rows[1]["backlog"] == 5 and rows[1]["outstanding"] == 9
    assert rows[0]["p50_ms"] is None


def test_worker_seconds_hold_each_count_until_the_next_sample() -> None:
    samples = [PoolSample(0, 1), PoolSample(10, 2), PoolSample(15, None), PoolSample(20, 1)]
    # 1 x 10 s + 2 x 10 s (the unknown sample keeps 2) + 1 x 10 s
    assert timeline.worker_seconds(samples, 0, 30) == pytest.approx(40)
    assert timeline.worker_seconds(samples, 5, 12) == pytest.approx(1 * 5 + 2 * 2)
    assert timeline.worker_seconds([PoolSample(-1, 2)], 0, 10) == pytest.approx(20)
    assert timeline.worker_seconds([], 0, 10) == 0


def test_oracle_processes_round_up_within_bounds() -> None:
    assert timeline.oracle_processes(0, 20, 0, 4) == 0
    assert timeline.oracle_processes(0, 20, 1, 4) == 1
    assert timeline.oracle_processes(20, 20, 0, 4) == 1
    assert timeline.oracle_processes(21, 20, 0, 4) == 2
    assert timeline.oracle_processes(500, 20, 0, 4) == 4


def test_oracle_worker_seconds_of_a_step() -> None:
    # 100 s: 10 req/s except 50 req/s from 15 s to 60 s; 20 req/s per process, at most 2
    t = Trace("step", 100, peak_rps=50, base_rps=10)
    got = timeline.oracle_worker_seconds(t.rate, t.duration_s, 20, 0, 2)
    assert got == pytest.approx(1 * 55 + 2 * 45, abs=0.2)
    at_least_min = timeline.oracle_worker_seconds(
        Trace("spike", 100, peak_rps=40).rate, 100, 20, 1, 2
    )
    assert at_least_min == pytest.approx(1 * 90 + 2 * 10, abs=0.2)


def test_throughput_counts_2xx_answers_in_the_interval() -> None:
    reqs = [Request(0, t, 200) for t in (1, 2, 3, 4)] + [Request(0, 2.5, 503)]
    assert timeline.throughput(reqs, 1, 3) == pytest.approx(1.0)
    assert timeline.throughput(reqs, 3, 3) is None


def test_reaction_and_actions() -> None:
    samples = [PoolSample(t / 2, n) for t, n in enumerate([1, 1, 1, 1, 2, 2, 1, 2, 2, 1])]
    assert timeline.first_time(samples, 1.0, lambda s: (s.processes or 0) > 1) == 1.0
    assert timeline.first_time(samples, 0, lambda s: s.processes == 5) is None
    assert timeline.actions(samples, 0, 10) == 4
    assert timeline.actions(samples, 2.0, 2.6) == 0


def test_outcome_counts() -> None:
    reqs = [
        Request(0, 1, 200),
        Request(0, 1, 429),
        Request(0, 1, 504),
        Request(0, 1, 0, "timeout"),
        Request(0, None, 0, "shed"),
    ]
    assert timeline.outcome_counts(reqs) == {
        "sent": 4,
        "ok": 1,
        "http_429": 1,
        "http_504": 1,
        "timeout": 1,
        "shed": 1,
    }
