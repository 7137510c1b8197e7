"""The Celery app's broker options: a dead worker's batches come back soon after the visibility
timeout (kombu's default throttle made it up to 100 s later; tests/fault has the real test)."""

from __future__ import annotations

import dataclasses

import pytest
from kombu.transport import redis as kombu_redis

from autodep_celery import celery_app
from autodep_celery.config import BrokerSettings, Settings


@pytest.mark.parametrize(("visibility", "interval"), [(5, 1.0), (20, 2.0), (600, 10.0)])
def test_restore_scan_every_tenth_of_visibility_within_1_to_10_s(
    visibility: int, interval: float
) -> None:
    settings = dataclasses.replace(
        Settings(),
        broker=BrokerSettings(url="redis://127.0.0.1:1/0", visibility_timeout_s=visibility),
    )
    options = celery_app.make_celery(settings).conf.broker_transport_options
    assert options["visibility_timeout"] == visibility
    assert options["unacked_restore_interval"] == interval
    assert options["unacked_restore_throttle"] == 1  # every timer tick scans
    assert options["unacked_mutex_expire"] == celery_app.UNACKED_MUTEX_EXPIRE_S
    # kombu reads each of them from the transport options (a typo would be silently ignored)
    known = set(kombu_redis.Channel.from_transport_options)
    assert set(options) <= known
