"""The autoscaler's decision, as a table: demand, delays, cooldown, bounds, memory guard."""

from __future__ import annotations

import pytest

from autodep_celery.autoscaler.backlog import Signal
from autodep_celery.autoscaler.policy import (
    DOWN,
    HOLD,
    UP,
    History,
    Pool,
    demand,
    desired_workers,
)
from autodep_celery.config import AutoscalerSettings

pytestmark = pytest.mark.unit

CFG = AutoscalerSettings(
    target_backlog_per_process=4.0,
    max_queue_wait_s=2.0,
    scale_up_delay_s=1.0,
    scale_down_delay_s=20.0,
    cooldown_s=3.0,
)
NOW = 1000.0


def sig(pending: int = 0, sent: int = 0, wait: float = 0.0, **kw: int) -> Signal:
    return Signal(pending=pending, sent=sent, oldest_wait_s=wait, **kw)


# (name, signal, pool, history, expected desired, expected action, reason contains)
TABLE = [
    ("idle at min holds", sig(), Pool(1, 1, 4), History(), 1, HOLD, "at target"),
    (
        "demand above: waits for the up delay",
        sig(pending=12),
        Pool(1, 1, 4),
        History(),
        1,
        HOLD,
        "above 1 for 0.0 s",
    ),
    (
        "demand above for the delay: jumps to the demand at once",
        sig(pending=12),
        Pool(1, 1, 4),
        History(above_since=NOW - 1.0),
        3,
        UP,
        "backlog 12",
    ),
    (
        "clamped to max",
        sig(pending=100),
        Pool(1, 1, 4),
        History(above_since=NOW - 5),
        4,
        UP,
        "backlog 100",
    ),
    (
        "cooldown holds a second step up",
        sig(pending=100),
        Pool(2, 1, 4),
        History(above_since=NOW - 5, last_action_at=NOW - 1),
        2,
        HOLD,
        "cooldown",
    ),
    (
        "after the cooldown it goes on",
        sig(pending=100),
        Pool(2, 1, 4),
        History(above_since=NOW - 5, last_action_at=NOW - 3),
        4,
        UP,
        "backlog",
    ),
    (
        "a long wait asks for one more even with a small backlog",
        sig(pending=2, wait=3.0),
        Pool(1, 1, 4),
        History(above_since=NOW - 2),
        2,
        UP,
        "backlog 2",
    ),
    (
        "below min grows at once, delay and cooldown ignored",
        sig(),
        Pool(0, 2, 4),
        History(last_action_at=NOW),
        2,
        UP,
        "below min",
    ),
    (
        "scaled to zero: one request wakes it at once",
        sig(pending=1),
        Pool(0, 0, 4),
        History(),
        1,
        UP,
        "cold start",
    ),
    ("scaled to zero and idle stays at zero", sig(), Pool(0, 0, 4), History(), 0, HOLD, "target"),
    (
        "demand below: waits for the down delay",
        sig(pending=1),
        Pool(3, 1, 4),
        History(below_since=NOW - 19),
        3,
        HOLD,
        "below 3",
    ),
    (
        "after the down delay: one step only",
        sig(),
        Pool(3, 1, 4),
        History(below_since=NOW - 20),
        2,
        DOWN,
        "backlog 0",
    ),
    (
        "down to zero when min is 0",
        sig(),
        Pool(1, 0, 4),
        History(below_since=NOW - 25),
        0,
        DOWN,
        "backlog 0",
    ),
    (
        "cooldown holds a step down",
        sig(),
        Pool(3, 1, 4),
        History(below_since=NOW - 30, last_action_at=NOW - 2),
        3,
        HOLD,
        "cooldown",
    ),
    ("above max shrinks at once", sig(pending=100), Pool(6, 1, 4), History(), 4, DOWN, "max"),
    (
        "memory guard: no room, no growth",
        sig(pending=40),
        Pool(1, 1, 4, room=0),
        History(above_since=NOW - 5),
        1,
        HOLD,
        "memory guard",
    ),
    (
        "memory guard: grows only as far as memory holds",
        sig(pending=40),
        Pool(1, 1, 4, room=1),
        History(above_since=NOW - 5),
        2,
        UP,
        "memory guard allows 1",
    ),
]


@pytest.mark.parametrize(
    ("signal", "pool", "history", "desired", "action", "reason"),
    [row[1:] for row in TABLE],
    ids=[row[0] for row in TABLE],
)
def test_desired_workers(signal, pool, history, desired, action, reason):
    d = desired_workers(signal, pool, CFG, history, NOW)
    assert (d.desired, d.action) == (desired, action), d.reason
    assert reason in d.reason


def test_a_step_down_starts_the_delay_again():
    d = desired_workers(sig(), Pool(3, 1, 4), CFG, History(below_since=NOW - 20), NOW)
    assert d.desired == 2 and d.history.below_since == NOW and d.history.last_action_at == NOW
    nxt = desired_workers(sig(), Pool(2, 1, 4), CFG, d.history, NOW + 10)
    assert nxt.action == HOLD
    assert desired_workers(sig(), Pool(2, 1, 4), CFG, d.history, NOW + 20).desired == 1


def test_demand_that_falls_back_resets_the_up_timer():
    up = desired_workers(sig(pending=12), Pool(1, 1, 4), CFG, History(), NOW)
    assert up.history.above_since == NOW
    calm = desired_workers(sig(pending=3), Pool(1, 1, 4), CFG, up.history, NOW + 0.5)
    assert calm.history.above_since is None
    again = desired_workers(sig(pending=12), Pool(1, 1, 4), CFG, calm.history, NOW + 1.0)
    assert again.action == HOLD  # the delay counts from the new rise, not the first one


def test_steady_load_takes_no_action():
    """Under steady demand the policy settles and then stays put (no oscillation)."""
    history, current, actions = History(), 1, 0
    for step in range(120):
        d = desired_workers(sig(pending=10), Pool(current, 1, 4), CFG, history, NOW + step)
        history, current = d.history, d.desired
        actions += d.action != HOLD
    assert (current, actions) == (3, 1)


@pytest.mark.parametrize(
    ("signal", "current", "want"),
    [
        (sig(), 2, 0),
        (sig(pending=4), 1, 1),
        (sig(pending=5), 1, 2),
        (sig(pending=1, wait=2.5), 3, 4),
        (Signal(sent=8, batches=2, queued=1), 1, 2),
        (Signal(queued=3, busy=2), 1, 2),
    ],
)
def test_demand(signal, current, want):
    assert demand(signal, current, CFG) == want


@pytest.mark.parametrize(
    ("signal", "backlog"),
    [
        (Signal(), 0),
        (Signal(pending=3, sent=5, batches=1), 8),
        # two web batches of 4 items in flight, one of them still in the queue
        (Signal(sent=8, batches=2, queued=1, busy=1), 8),
        # messages from another producer: one item each, plus the one computing
        (Signal(queued=5, busy=1), 6),
    ],
)
def test_backlog_counts_web_queue_and_workers(signal, backlog):
    assert signal.backlog == backlog
