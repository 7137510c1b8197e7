"""Progress of a bench run on stderr: one line per step, with an ETA for the whole run.

bench.cli and bench.autoscale plan their steps up front (a key and an estimated duration per
step: start-ups, measured points, stops) and name the key when a step starts. The ETA is what
the planned steps not yet finished are estimated to take, scaled by how the finished ones
compared with their estimates, so it corrects itself as points finish. Imports nothing of the
project; `eta_s` is pure (unit-tested).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from typing import TextIO

SCALE_BOUNDS = (0.5, 3.0)
"""How far the measured/estimated ratio of finished steps may stretch the remaining estimate."""
SCALE_AFTER = 0.2
"""The ratio applies once this share of the planned time is done: a short first step (models
already built in seconds, not the minute planned) says nothing about the measuring ones."""


def eta_s(plan: Mapping[str, float], finished: Mapping[str, float]) -> float:
    """Seconds left: the estimates of unfinished steps times the measured/estimated ratio of the
    finished ones (clamped to SCALE_BOUNDS; 1 until SCALE_AFTER of the plan is done)."""
    est_done = sum(plan[k] for k in finished if k in plan)
    took = sum(v for k, v in finished.items() if k in plan)
    enough = est_done > 0 and est_done >= SCALE_AFTER * sum(plan.values())
    scale = min(max(took / est_done, SCALE_BOUNDS[0]), SCALE_BOUNDS[1]) if enough else 1.0
    left = sum(v for k, v in plan.items() if k not in finished)
    return left * scale


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {s:02d} s"
    hours, m = divmod(minutes, 60)
    return f"{hours} h {m:02d} min"


class Progress:
    """One line per step on stderr, with the time since the run started and the ETA."""

    def __init__(
        self, stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.stream = stream or sys.stderr
        self.clock = clock
        self.started = clock()
        self.step_started = self.started
        self.plan: dict[str, float] = {}
        self.finished: dict[str, float] = {}
        self.current: str | None = None

    def set_plan(self, plan: Mapping[str, float]) -> None:
        self.plan = dict(plan)
        total = sum(self.plan.values())
        self._print(f"plan: {len(self.plan)} steps, about {format_duration(total)} in all")

    def step(self, text: str, key: str | None = None) -> None:
        self._finish()
        self.step_started = self.clock()
        self.current = key
        eta = ""
        if self.plan:
            left = eta_s(self.plan, self.finished)
            eta = f"  [ETA {time.strftime('%H:%M:%S', time.localtime(time.time() + left))}, "
            eta += f"~{format_duration(left)} left]"
        self._print(f"[{self.step_started - self.started:6.1f} s] {text}{eta}")

    def done(self, text: str) -> None:
        took = self.clock() - self.step_started
        self._finish()
        print(f"           -> {text} ({took:.1f} s)", file=self.stream, flush=True)

    def note(self, text: str) -> None:
        """A line inside a long step (no ETA change)."""
        print(f"           .. {text}", file=self.stream, flush=True)

    def _finish(self) -> None:
        if self.current is not None and self.current not in self.finished:
            self.finished[self.current] = self.clock() - self.step_started
        self.current = None

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)
