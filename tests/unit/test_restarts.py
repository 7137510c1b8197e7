"""The one restart policy of `autodep serve` and the autoscaler's workers: backoff that grows
with deaths in a row, fires once, and is forgiven after a stable run."""

from __future__ import annotations

import pytest

from autodep_celery.processes import RESTART_BACKOFF_S, STABLE_AFTER_S, Restarts

pytestmark = pytest.mark.unit


def test_backoff_grows_fires_once_and_is_forgiven_after_a_stable_run():
    now = [0.0]
    r = Restarts(clock=lambda: now[0])
    r.started("web")
    waits = []
    for _ in range(len(RESTART_BACKOFF_S) + 1):
        wait = r.died("web")
        assert wait is not None and r.died("web") is None  # noticed once per death
        waits.append(wait)
        now[0] += wait - 0.01
        assert not r.due("web")
        now[0] += 0.01
        assert r.due("web") and not r.due("web")  # due exactly once
        r.started("web")
    assert waits == [*RESTART_BACKOFF_S, RESTART_BACKOFF_S[-1]]
    now[0] += STABLE_AFTER_S + 1
    r.alive("web")
    assert r.died("web") == RESTART_BACKOFF_S[0]  # a stable run forgives earlier deaths
    assert r.died("redis") == RESTART_BACKOFF_S[0]  # names are counted apart
