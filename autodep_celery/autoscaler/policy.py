"""The decision: how many processes a model's pool should have. Pure, tested by a table.

``desired_workers`` sizes the pool for ``target_backlog_per_process`` requests per process (and
one more process while the oldest request waits longer than ``max_queue_wait_s``), then damps
it: up fast (all the way at once, after ``scale_up_delay_s`` of higher demand), down slow (one
process after ``scale_down_delay_s`` of lower demand, the delay counted again for the next
step), nothing during ``cooldown_s`` after an action, always within [min, max], and never
growing past what free memory holds (one more copy of the model per process). The caller keeps
the returned History and hands it back next time. No I/O, no clock: `now` is an argument.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from autodep_celery.autoscaler.backlog import Signal
from autodep_celery.config import AutoscalerSettings

UP, DOWN, HOLD = "up", "down", "hold"


@dataclass(frozen=True)
class Pool:
    current: int
    """Processes the pool has or is growing to."""
    min: int
    max: int
    room: int | None = None
    """Processes free memory can still hold (None: unknown, no guard)."""


@dataclass(frozen=True)
class History:
    """What the policy remembers between calls (monotonic seconds)."""

    above_since: float | None = None
    below_since: float | None = None
    last_action_at: float | None = None


@dataclass(frozen=True)
class Decision:
    current: int
    desired: int
    want: int
    """The size the demand alone asks for (before delays, cooldown and the memory guard)."""
    action: str
    reason: str
    history: History


def demand(signal: Signal, current: int, cfg: AutoscalerSettings) -> int:
    """Processes the backlog asks for, before bounds and damping."""
    backlog = signal.backlog
    want = math.ceil(backlog / cfg.target_backlog_per_process - 1e-9) if backlog > 0 else 0
    if backlog > 0 and signal.oldest_wait_s > cfg.max_queue_wait_s:
        want = max(want, current + 1)
    return want


def desired_workers(
    signal: Signal, pool: Pool, cfg: AutoscalerSettings, history: History, now: float
) -> Decision:
    raw = demand(signal, pool.current, cfg)
    want = min(max(raw, pool.min), pool.max)
    if signal.backlog > 0 and pool.max > 0:
        want = max(want, 1)  # a waiting request wakes a pool scaled to zero

    def decide(desired: int, action: str, reason: str, h: History) -> Decision:
        return Decision(pool.current, desired, want, action, reason, h)

    current = pool.current
    if want == current:
        return decide(
            current, HOLD, "at target", replace(history, above_since=None, below_since=None)
        )
    cooling = history.last_action_at is not None and now - history.last_action_at < cfg.cooldown_s
    if want > current:
        since = history.above_since if history.above_since is not None else now
        h = History(above_since=since, below_since=None, last_action_at=history.last_action_at)
        # below min, or a request waits for a pool scaled to zero: no delay, no cooldown
        urgent = current < pool.min or current == 0
        if not urgent and now - since < cfg.scale_up_delay_s:
            return decide(
                current, HOLD, f"demand {want} above {current} for {now - since:.1f} s", h
            )
        if cooling and not urgent:
            return decide(current, HOLD, "cooldown after the last action", h)
        grow = want - current
        if pool.room is not None and grow > pool.room:
            if pool.room <= 0:
                return decide(
                    current, HOLD, "memory guard: free memory cannot hold one more process", h
                )
            grow = pool.room
        if current < pool.min:
            reason = "below min"
        elif current == 0:
            reason = f"cold start: backlog {signal.backlog:g}"
        else:
            reason = f"backlog {signal.backlog:g}"
        if pool.room is not None and grow < want - current:
            reason += f"; memory guard allows {grow} more"
        return decide(current + grow, UP, reason, replace(h, above_since=None, last_action_at=now))
    since = history.below_since if history.below_since is not None else now
    h = History(above_since=None, below_since=since, last_action_at=history.last_action_at)
    if current > pool.max:
        return decide(pool.max, DOWN, "above max", replace(h, below_since=None, last_action_at=now))
    if now - since < cfg.scale_down_delay_s:
        return decide(current, HOLD, f"demand {want} below {current} for {now - since:.1f} s", h)
    if cooling:
        return decide(current, HOLD, "cooldown after the last action", h)
    # one step, and the delay counts again from here for the next one
    return decide(
        current - 1,
        DOWN,
        f"backlog {signal.backlog:g} for {now - since:.0f} s",
        replace(h, below_since=now, last_action_at=now),
    )
