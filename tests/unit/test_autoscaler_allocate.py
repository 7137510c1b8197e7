"""Spreading a model's processes over the workers that consume its queue."""

from __future__ import annotations

import pytest

from autodep_celery.autoscaler.allocate import WorkerSlot, capacity, pool_sizes, split
from autodep_celery.autoscaler.backlog import queue_keys

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("total", "caps", "expected"),
    [
        (0, {"a": 4}, {"a": 0}),
        (3, {"a": 4}, {"a": 3}),
        (9, {"a": 4}, {"a": 4}),
        (4, {"a": 4, "b": 4}, {"a": 2, "b": 2}),
        (5, {"a": 4, "b": 4}, {"a": 3, "b": 2}),
        (5, {"a": 1, "b": 8}, {"a": 1, "b": 4}),
        (3, {"a": 1, "b": 1, "c": 1}, {"a": 1, "b": 1, "c": 1}),
        (2, {"a": 0, "b": 3}, {"a": 0, "b": 2}),
    ],
)
def test_split_fills_evenly_within_caps(total, caps, expected):
    assert split(total, caps) == expected


def slot(host, models, processes=1, low=1, high=4, resizable=True):
    return WorkerSlot(host, tuple(models), processes, low, high, resizable)


def test_a_model_spread_over_its_workers_including_one_started_by_hand():
    workers = [slot("a@x", ["m"], high=2), slot("hand@y", ["m"], high=1)]
    assert pool_sizes({"m": 3}, workers) == {"a@x": 2, "hand@y": 1}
    assert pool_sizes({"m": 1}, workers) == {"a@x": 1, "hand@y": 1}  # each keeps its min
    assert capacity(workers) == 3


def test_a_worker_of_several_models_gets_their_sum():
    workers = [slot("both@x", ["m", "n"], high=6)]
    assert pool_sizes({"m": 2, "n": 3}, workers) == {"both@x": 5}
    assert pool_sizes({"m": 5, "n": 5}, workers) == {"both@x": 6}


def test_fixed_pools_count_but_are_never_resized():
    workers = [slot("fixed@x", ["m"], processes=2, resizable=False), slot("a@y", ["m"], high=4)]
    assert pool_sizes({"m": 5}, workers) == {"fixed@x": 2, "a@y": 3}
    assert capacity(workers) == 6


def test_other_models_do_not_leak_into_a_worker():
    workers = [slot("m@x", ["m"]), slot("n@x", ["n"])]
    assert pool_sizes({"m": 3, "n": 1}, workers) == {"m@x": 3, "n@x": 1}


def test_queue_keys_cover_every_priority_sub_list():
    assert queue_keys("autodep.m") == [
        "autodep.m",
        "autodep.m\x06\x163",
        "autodep.m\x06\x166",
        "autodep.m\x06\x169",
    ]
