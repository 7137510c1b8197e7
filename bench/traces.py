"""Load traces for the autoscale scenario: offered request rate as a function of time.

bench.autoscale builds one Trace per run and replays it with bench.openloop against both the
autoscaled and the fixed pool; bench.timeline integrates it for the oracle. Every shape starts
and ends at the base rate so the pool can be seen growing and returning to its minimum. Pure
(unit-tested); imports nothing of the project.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SHAPES = ("step", "spike", "ramp", "sine")
ARRIVAL_STEP_S = 0.001
"""Resolution of the integration that places arrivals (1 ms: well below any request's cost)."""

# Where each shape holds its peak, as fractions of the duration: the "sustained saturation"
# phases over which throughput is compared. The sine holds no plateau: its crests count.
_STEP = (0.15, 0.60)
_SPIKE = (0.30, 0.40)
_RAMP_UP, _RAMP_HOLD, _RAMP_DOWN = (0.10, 0.45), (0.45, 0.70), (0.70, 0.85)
_SINE_CYCLES = 2
_SINE_CREST = 0.95
"""A sine's crest: where its rate is within 5% of the peak."""


@dataclass(frozen=True)
class Trace:
    shape: str
    duration_s: float
    peak_rps: float
    base_rps: float = 0.0

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"unknown trace {self.shape!r}; choose from {', '.join(SHAPES)}")
        if self.duration_s <= 0 or self.peak_rps <= 0:
            raise ValueError("a trace needs duration_s > 0 and peak_rps > 0")
        if not 0 <= self.base_rps <= self.peak_rps:
            raise ValueError(f"base_rps ({self.base_rps}) must be in [0, peak_rps]")

    def rate(self, t: float) -> float:
        """Offered requests per second at `t` seconds after the start (0 outside the trace)."""
        if t < 0 or t >= self.duration_s:
            return 0.0
        x, lo, hi = t / self.duration_s, self.base_rps, self.peak_rps
        if self.shape == "step":
            return hi if _STEP[0] <= x < _STEP[1] else lo
        if self.shape == "spike":
            return hi if _SPIKE[0] <= x < _SPIKE[1] else lo
        if self.shape == "ramp":
            if x < _RAMP_UP[0] or x >= _RAMP_DOWN[1]:
                return lo
            if x < _RAMP_UP[1]:
                return lo + (hi - lo) * (x - _RAMP_UP[0]) / (_RAMP_UP[1] - _RAMP_UP[0])
            if x < _RAMP_HOLD[1]:
                return hi
            return hi - (hi - lo) * (x - _RAMP_DOWN[0]) / (_RAMP_DOWN[1] - _RAMP_DOWN[0])
        # sine: starts at the base, two crests
        return lo + (hi - lo) * (1 - math.cos(2 * math.pi * _SINE_CYCLES * x)) / 2

    def peak_phases(self) -> list[tuple[float, float]]:
        """(start_s, end_s) of each phase where the trace holds (about) its peak."""
        d = self.duration_s
        if self.shape == "step":
            return [(_STEP[0] * d, _STEP[1] * d)]
        if self.shape == "spike":
            return [(_SPIKE[0] * d, _SPIKE[1] * d)]
        if self.shape == "ramp":
            return [(_RAMP_HOLD[0] * d, _RAMP_HOLD[1] * d)]
        # 1 - cos(phase) >= 2 * crest  <=>  phase within acos(1 - 2 * crest) of pi
        half = (math.pi - math.acos(1 - 2 * _SINE_CREST)) / (2 * math.pi * _SINE_CYCLES) * d
        period = d / _SINE_CYCLES
        return [(period * (k + 0.5) - half, period * (k + 0.5) + half) for k in range(_SINE_CYCLES)]

    def rise_at_s(self) -> float:
        """When the load first rises above the base (where reaction time is measured from)."""
        starts = {"step": _STEP[0], "spike": _SPIKE[0], "ramp": _RAMP_UP[0], "sine": 0.0}
        return starts[self.shape] * self.duration_s

    def load_ends_at_s(self) -> float:
        """When the last high-load phase ends (where the way back to the minimum starts)."""
        ends = {"step": _STEP[1], "spike": _SPIKE[1], "ramp": _RAMP_DOWN[1]}
        if self.shape in ends:
            return ends[self.shape] * self.duration_s
        return self.peak_phases()[-1][1]

    def to_dict(self) -> dict[str, object]:
        return {
            "shape": self.shape,
            "duration_s": self.duration_s,
            "peak_rps": self.peak_rps,
            "base_rps": self.base_rps,
            "peak_phases_s": self.peak_phases(),
        }


def arrival_times(trace: Trace, step_s: float = ARRIVAL_STEP_S) -> list[float]:
    """Send times (s from the start) of an evenly spaced arrival process following
    `trace.rate`: the k-th request goes when the integral of the rate reaches k + 0.5."""
    times: list[float] = []
    acc, due = 0.0, 0.5
    steps = int(math.ceil(trace.duration_s / step_s))
    for i in range(steps):
        t = i * step_s
        acc += trace.rate(t + step_s / 2) * step_s
        while acc >= due:
            times.append(t + step_s)
            due += 1.0
    return times


def offered_requests(trace: Trace, step_s: float = ARRIVAL_STEP_S) -> float:
    """The integral of the rate over the trace: how many requests it offers."""
    steps = int(math.ceil(trace.duration_s / step_s))
    return sum(trace.rate((i + 0.5) * step_s) * step_s for i in range(steps))
