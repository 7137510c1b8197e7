"""Load traces of the autoscale scenario: shapes, peak phases and the arrivals they produce."""

from __future__ import annotations

import pytest

from autodep_celery.bench.traces import SHAPES, Trace, arrival_times, offered_requests


def test_step_is_base_then_peak_then_base() -> None:
    t = Trace("step", 100, peak_rps=40, base_rps=8)
    assert [t.rate(x) for x in (0, 14.9, 15, 59.9, 60, 99.9)] == [8, 8, 40, 40, 8, 8]
    assert t.rate(-1) == 0 and t.rate(100) == 0
    assert t.peak_phases() == [(15.0, 60.0)]
    assert (t.rise_at_s(), t.load_ends_at_s()) == (15.0, 60.0)


def test_spike_is_short() -> None:
    t = Trace("spike", 100, peak_rps=50)
    assert t.rate(29) == 0 and t.rate(35) == 50 and t.rate(41) == 0
    assert t.peak_phases() == [(30.0, 40.0)]


def test_ramp_rises_linearly_holds_and_falls() -> None:
    t = Trace("ramp", 100, peak_rps=30, base_rps=10)
    assert t.rate(5) == 10
    assert t.rate(27.5) == pytest.approx(20)  # half way up (10 s .. 45 s)
    assert t.rate(50) == 30
    assert t.rate(77.5) == pytest.approx(20)  # half way down (70 s .. 85 s)
    assert t.rate(90) == 10
    assert t.peak_phases() == [(45.0, 70.0)]


def test_sine_starts_at_base_and_crests_twice_at_peak() -> None:
    t = Trace("sine", 100, peak_rps=40, base_rps=0)
    assert t.rate(0) == pytest.approx(0)
    assert t.rate(25) == pytest.approx(40) and t.rate(75) == pytest.approx(40)
    assert t.rate(50) == pytest.approx(0, abs=1e-9)
    phases = t.peak_phases()
    assert len(phases) == 2
    for (a, b), centre in zip(phases, (25, 75), strict=True):
        assert a < centre < b
        assert t.rate(a) == pytest.approx(0.95 * 40) and t.rate(b) == pytest.approx(0.95 * 40)


@pytest.mark.parametrize("shape", SHAPES)
def test_arrivals_follow_the_rate(shape: str) -> None:
    t = Trace(shape, 40, peak_rps=30, base_rps=5)
    times = arrival_times(t)
    assert len(times) == pytest.approx(offered_requests(t), abs=1)
    assert times == sorted(times) and 0 <= times[0] and times[-1] <= 40
    in_peak = sum(1 for x in times if t.peak_phases()[0][0] <= x < t.peak_phases()[0][1])
    a, b = t.peak_phases()[0]
    assert in_peak >= 0.9 * 0.95 * 30 * (b - a)


def test_arrivals_at_a_constant_rate_are_evenly_spaced() -> None:
    t = Trace("step", 10, peak_rps=20, base_rps=20)
    times = arrival_times(t)
    assert len(times) == 200
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert min(gaps) == pytest.approx(0.05, abs=0.0011) and max(gaps) == pytest.approx(
        0.05, abs=0.0011
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"shape": "square", "duration_s": 10, "peak_rps": 1},
        {"shape": "step", "duration_s": 0, "peak_rps": 1},
        {"shape": "step", "duration_s": 10, "peak_rps": 0},
        {"shape": "step", "duration_s": 10, "peak_rps": 5, "base_rps": 6},
    ],
)
def test_bad_traces_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Trace(**kwargs)  # type: ignore[arg-type]
