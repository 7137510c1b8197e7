"""The batching dispatcher, driven without Redis and without its threads: a recording sender, a
queue of replies, a static worker view and a fake clock. Each test runs the dispatcher one turn
at a time (Dispatcher.step) and moves time itself, so what it asserts holds however loaded the
machine is. Covers adaptive sending, gathering, batch size/delay, the in-flight limit, late
replies, batch errors, broker failures, backpressure, the load report, the batch hook and
has_worker; two tests run the real threads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import pytest

from autodep_celery import contract, errors
from autodep_celery.config import ModelSettings
from autodep_celery.contract import Batch
from autodep_celery.status import ProcStatus
from autodep_celery.web.dispatcher import NO_WORKER_RECHECK_S, Dispatcher
from autodep_celery.web.testing import QueueReplySource, RecordingSender, StaticView, proc
from tests.unit.conftest import make_settings

pytestmark = pytest.mark.unit


class FakeClock:
    """The dispatcher's monotonic and wall clocks, moved only by advance(). Tests move them by
    binary fractions (0.125, 0.25, 1.5 s), so sums are exact and a limit is met exactly."""

    WALL_AT_ZERO = 1_700_000_000.0

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.WALL_AT_ZERO + self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Rig:
    """A Dispatcher serving model "m", and what drives it."""

    d: Dispatcher
    sender: RecordingSender
    replies: QueueReplySource
    view: StaticView
    clock: FakeClock

    def submit(self, text: str = "x", timeout_s: float = 10.0) -> Future[dict[str, Any]]:
        return self.d.submit("m", contract.text_item(text, self.clock.wall() + timeout_s))

    def step(self) -> None:
        self.d.step()

    def sent(self) -> list[list[str]]:
        """The texts of each batch sent so far, in order."""
        return [[i["text"] for i in b["items"]] for b in self.sender.batches]

    def batch(self, n: int) -> Batch:
        return self.sender.batches[n]

    def reply(self, batch: Batch, results: list[dict[str, Any]] | None = None) -> None:
        """The worker's answer to `batch` arrives: by default each text echoed, 5 ns each."""
        if results is None:
            results = [contract.ok_result({"Text": i["text"]}, 5) for i in batch["items"]]
        self.replies.replies.put(contract.make_reply(batch["batch_id"], "w/1", results))


@pytest.fixture
def rig() -> Iterator[Callable[..., Rig]]:
    made: list[Dispatcher] = []

    def make(
        workers: int = 1,
        max_batch_size: int = 8,
        max_batch_delay_ms: float = 10_000.0,
        max_queue: int = 256,
        web_processes: int = 1,
        view: StaticView | None = None,
        threads: bool = False,
    ) -> Rig:
        model = ModelSettings(
            "m",
            "/tmp/m.pt",
            max_batch_size=max_batch_size,
            max_batch_delay_ms=max_batch_delay_ms,
            max_queue=max_queue,
        )
        settings = make_settings([model], worker_check_interval_s=0.05, processes=web_processes)
        sender, replies, clock = RecordingSender(), QueueReplySource(), FakeClock()
        if view is None:
            view = StaticView([proc("m", pid=i) for i in range(workers)])
        d = Dispatcher(
            settings, sender, replies, view, clock=clock.monotonic, wall=clock.wall, threads=threads
        )
        made.append(d)
        return Rig(d, sender, replies, view, clock)

    yield make
    for d in made:
        d.close()


def test_sends_at_once_when_idle(rig):
    r = rig()
    f = r.submit("a")
    r.step()
    assert r.sent() == [["a"]]  # no time passed: the 10 s batch delay was not paid
    batch = r.batch(0)
    assert batch["model"] == "m" and batch["reply_to"] == r.d.reply_to
    assert r.sender.expires == [10.0]  # the task expires at the item's deadline
    assert not f.done()
    r.reply(batch)
    r.step()
    assert f.result(timeout=0) == contract.ok_result({"Text": "a"}, 5)


def test_gathers_while_in_flight_and_sends_when_the_reply_frees_the_slot(rig):
    r = rig()
    first = r.submit("a")
    r.step()
    rest = [r.submit(t) for t in "bcde"]
    r.clock.advance(9.5)
    r.step()
    assert r.sent() == [["a"]]  # a batch in flight: the rest gathers, up to the 10 s delay
    r.reply(r.batch(0))
    r.step()
    assert first.result(timeout=0)["ok"]
    assert r.sent() == [["a"], list("bcde")]  # nothing in flight any more: sent at once
    r.reply(r.batch(1))
    r.step()
    assert [f.result(timeout=0)["output"]["Text"] for f in rest] == list("bcde")


def test_respects_max_batch_size(rig):
    r = rig(max_batch_size=8)
    r.submit("first")
    r.step()
    futures = [r.submit(str(i)) for i in range(20)]
    r.step()
    assert [len(b) for b in r.sent()] == [1, 8]  # 1 worker: 2 batches in flight at most
    r.reply(r.batch(0))
    r.step()
    assert [len(b) for b in r.sent()] == [1, 8, 8]
    r.reply(r.batch(1))
    r.step()
    assert [len(b) for b in r.sent()] == [1, 8, 8]  # 4 left: they gather behind the third
    r.reply(r.batch(2))
    r.step()
    numbers = [str(i) for i in range(20)]
    assert r.sent() == [["first"], numbers[:8], numbers[8:16], numbers[16:]]
    r.reply(r.batch(3))
    r.step()
    assert [f.result(timeout=0)["output"]["Text"] for f in futures] == numbers


def test_full_batch_goes_before_the_delay_when_under_the_limit(rig):
    r = rig(workers=2, max_batch_size=4)
    r.submit("first")
    r.step()
    for t in "abc":
        r.submit(t)
    r.step()
    assert len(r.sent()) == 1  # 3 of 4: gathering
    r.submit("d")
    r.step()
    assert r.sent() == [["first"], list("abcd")]  # full: sent with the clock not moved


def test_partial_batch_waits_max_batch_delay(rig):
    r = rig(workers=2, max_batch_delay_ms=250)
    r.submit("first")
    r.step()
    for t in "abc":
        r.submit(t)
    r.step()
    r.clock.advance(0.125)
    r.step()
    assert r.sent() == [["first"]]  # half the delay: still gathering
    r.clock.advance(0.125)
    r.step()
    assert r.sent() == [["first"], list("abc")]  # at max_batch_delay_ms, not later


def test_in_flight_limit_is_this_process_share_of_ready_workers_plus_one(rig):
    r = rig(workers=3, max_batch_delay_ms=0, web_processes=2)
    for t in "abcd":
        r.submit(t)
        r.step()
    assert r.sent() == [["a"], ["b"], ["c"]]  # ceil(3 workers / 2 web processes) + 1 behind
    r.reply(r.batch(0))
    r.step()
    assert r.sent()[3:] == [["d"]]


def test_in_flight_limit_with_one_web_process_follows_the_ready_workers(rig):
    r = rig(workers=2, max_batch_delay_ms=0)
    r.view.view.append(proc("m", pid=7, ready=False))  # still loading its model: not counted
    for t in "abcd":
        r.submit(t)
        r.step()
    assert r.sent() == [["a"], ["b"], ["c"]]  # 2 workers + 1 queued; the fourth waits
    r.view.view.append(proc("m", pid=8))  # one more worker is ready: one more batch may go
    r.step()
    assert r.sent()[3:] == [["d"]]


def test_batches_gather_for_half_a_round_trip_while_one_runs(rig):
    r = rig(workers=1, max_batch_delay_ms=0)
    r.submit("first")
    r.step()
    r.clock.advance(0.5)  # a slow model: this round trip takes 0.5 s
    r.reply(r.batch(0))
    r.step()
    r.submit("a")
    r.step()
    assert r.sent()[1:] == [["a"]]  # idle again: sent at once
    r.submit("b")
    r.step()
    r.clock.advance(0.125)
    r.submit("c")
    r.step()
    assert len(r.sent()) == 2  # gathers for half the round trip (0.25 s), not leaving at once
    r.clock.advance(0.125)
    r.step()
    assert r.sent()[2:] == [["b", "c"]]


def _reply_at(r: Rig, n: int, ms_per_item: int) -> None:
    """Batch `n` comes back having computed `ms_per_item` per item (its forward's time)."""
    batch = r.batch(n)
    ns = ms_per_item * 1_000_000 * len(batch["items"])
    r.reply(batch, [contract.ok_result({"Text": i["text"]}, ns) for i in batch["items"]])


def _backlog_rig(rig: Callable[..., Rig]) -> Rig:
    """A 50 ms/item model (batches of 4 = BATCH_TARGET_S, 8 = BACKLOG_TARGET_S), one worker
    (two batches in flight), and "a"-"d" in flight after a full normal batch."""
    r = rig(workers=1, max_batch_size=16, max_batch_delay_ms=0)
    r.submit("first")
    r.step()
    _reply_at(r, 0, 50)
    r.step()  # the first reply teaches the model's 50 ms per item
    for t in "abcdefgh":  # two normal batches' worth: no backlog beyond them
        r.submit(t)
    r.step()
    assert r.sent()[1:] == [["a", "b", "c", "d"], ["e", "f", "g", "h"]]
    return r


def test_slow_model_batches_grow_behind_a_backlog_when_that_pays(rig):
    r = _backlog_rig(rig)
    for t in "ijklmnopqrstu":
        r.submit(t)
    _reply_at(r, 1, 50)
    r.step()  # 13 pending: a backlog, and a backlog-size batch was never measured: tried
    assert r.sent()[3:] == [["i", "j", "k", "l", "m", "n", "o", "p"]]
    _reply_at(r, 2, 50)
    r.step()  # 5 pending: no backlog, normal size
    assert r.sent()[4:] == [["q", "r", "s", "t"]]
    for t in "ABCDEFGHIJKLM":
        r.submit(t)
    _reply_at(r, 3, 40)  # the batch of 8 computed 40 ms per item: bigger pays
    r.step()
    assert len(r.sent()[5]) == 8


def test_backlog_batches_stay_normal_when_bigger_ones_compute_slower(rig):
    r = _backlog_rig(rig)
    for t in "ijklmnopqrstu":
        r.submit(t)
    _reply_at(r, 1, 50)
    r.step()
    assert len(r.sent()[3]) == 8  # tried once
    for t in "ABCDEFGHIJKL":
        r.submit(t)
    _reply_at(r, 3, 60)  # 60 ms per item at 8 against 50 at 4 (a Xeon's caches, say)
    r.step()  # (the model's mean per item is now 52 ms: normal batches of 3)
    assert [len(b) for b in r.sent()[4:]] == [3]
    _reply_at(r, 2, 50)
    r.step()
    assert [len(b) for b in r.sent()[5:]] == [3]  # a backlog still, but normal batches


def test_late_reply_is_dropped_and_slot_freed_at_deadline(rig):
    r = rig()
    late = r.submit("late", timeout_s=0.25)
    r.step()
    assert r.sender.expires == [0.25]
    r.clock.advance(0.125)
    r.step()
    assert not late.done()
    r.clock.advance(0.125)
    r.step()
    with pytest.raises(errors.DeadlineExceeded):
        late.result(timeout=0)
    assert r.d.load()["m"]["batches"] == 0  # its slot is free
    fresh = r.submit("fresh")
    r.step()
    assert r.sent() == [["late"], ["fresh"]]  # nothing in flight: sent at once
    r.reply(r.batch(0))  # the late reply: an unknown batch id now, dropped
    r.reply(r.batch(1))
    r.step()
    assert fresh.result(timeout=0)["output"] == {"Text": "fresh"}
    assert isinstance(late.exception(timeout=0), errors.DeadlineExceeded)


def test_batch_error_fails_every_future(rig):
    r = rig(max_batch_delay_ms=0)
    r.submit("first")
    r.step()
    futures = [r.submit(str(i)) for i in range(3)]
    r.reply(r.batch(0))
    r.step()
    assert r.sent()[1:] == [["0", "1", "2"]]
    error = {"code": "worker_lost", "message": "worker died 3 times", "status": 500}
    r.replies.replies.put(contract.batch_error_reply(r.batch(1)["batch_id"], "w/1", error))
    r.step()
    for f in futures:
        exc = f.exception(timeout=0)
        assert exc.code == "worker_lost" and exc.http_status == 500
        assert exc.message == "worker died 3 times"
    assert len({id(f.exception()) for f in futures}) == len(futures)


def test_result_count_mismatch_fails_the_batch(rig):
    r = rig()
    f = r.submit()
    r.step()
    r.reply(r.batch(0), results=[])
    r.step()
    exc = f.exception(timeout=0)
    assert isinstance(exc, errors.AutodepError) and "0 results for 1 items" in exc.message


def test_send_failure_is_broker_unavailable(rig):
    r = rig()
    r.sender.fail = ConnectionError("Connection refused")
    f = r.submit()
    r.step()
    exc = f.exception(timeout=0)
    assert isinstance(exc, errors.BrokerUnavailable) and "Connection refused" in exc.message
    assert r.d.load()["m"] == {"pending": 0, "sent": 0, "batches": 0, "oldest_s": 0.0}
    r.sender.fail = None
    r.submit("again")
    r.step()
    assert r.sent() == [["again"]]  # sent at once: nothing stayed in flight after the failure


def test_overloaded_at_max_queue_then_recovers(rig):
    r = rig(max_queue=2)
    r.submit("a")
    r.step()
    r.submit("b")
    with pytest.raises(errors.Overloaded) as info:
        r.submit("c")
    assert info.value.retry_after_s >= 1 and "max_queue=2" in info.value.message
    assert r.d.outstanding("m") == 2
    r.reply(r.batch(0))
    r.step()
    r.reply(r.batch(1))
    r.step()
    assert r.d.outstanding("m") == 0
    r.submit("d")


def test_cancelled_items_are_not_sent(rig):
    r = rig()
    r.submit("first")
    r.step()
    gone, kept = r.submit("gone"), r.submit("kept")
    r.step()
    assert gone.cancel()  # its request thread gave up while it waited here
    r.reply(r.batch(0))
    r.step()
    assert r.sent() == [["first"], ["kept"]]
    r.reply(r.batch(1))
    r.step()
    assert kept.result(timeout=0)["ok"]
    assert r.d.outstanding("m") == 0


def test_unknown_model_is_rejected(rig):
    r = rig()
    with pytest.raises(errors.UnknownModel):
        r.d.submit("other", contract.text_item("x", r.clock.wall() + 10))


def test_slow_models_get_smaller_batches(rig):
    r = rig(workers=1, max_batch_size=8, max_batch_delay_ms=0)
    r.submit("first")
    r.step()
    # the worker reports 0.1 s of compute for one item: batches aim at ~0.2 s, so 2 items
    r.reply(r.batch(0), [contract.ok_result({"Text": "first"}, 100_000_000)])
    r.step()
    r.submit("a")
    r.step()
    assert r.sent()[1:] == [["a"]]  # idle: at once
    for t in "bcde":  # two batches' worth: no backlog yet (see the next test)
        r.submit(t)
    r.step()
    assert r.sent()[2:] == [["b", "c"]]  # and d, e wait: two batches in flight is the limit


def test_load_reports_pending_sent_and_the_oldest_wait(rig):
    """What the autoscaler reads from each web process: with one worker the limit is two
    batches in flight, so the rest waits here and ages."""
    r = rig(workers=1, max_batch_size=2)
    assert r.d.load() == {}  # nothing submitted in this process yet
    for i in range(7):
        r.submit(str(i))
    r.step()
    r.clock.advance(1.5)
    assert r.d.load()["m"] == {"pending": 3, "sent": 4, "batches": 2, "oldest_s": 1.5}
    answered = 0
    while answered < len(r.sender.batches):
        for b in r.sender.batches[answered:]:
            r.reply(b)
            answered += 1
        r.step()
    assert r.sent() == [["0", "1"], ["2", "3"], ["4", "5"], ["6"]]
    assert r.d.load()["m"] == {"pending": 0, "sent": 0, "batches": 0, "oldest_s": 0.0}


def test_batch_hook_gets_the_size_and_each_items_wait_here(rig):
    r = rig(workers=2, max_batch_delay_ms=250)
    seen: list[tuple[str, int, list[float]]] = []
    r.d.on_batch = lambda model, n, waits: seen.append((model, n, waits))
    r.submit("first")
    r.step()
    r.submit("a")
    r.clock.advance(0.125)
    r.submit("b")
    r.clock.advance(0.125)
    r.step()
    assert seen == [("m", 1, [0.0]), ("m", 2, [0.25, 0.125])]


def test_phases_hook_splits_the_round_trip_with_the_workers_times(rig):
    r = rig()
    seen: list[tuple[str, tuple[float, ...]]] = []
    r.d.on_phases = lambda model, phases: seen.append((model, phases))
    answered = []
    for n, times in enumerate(([0.25, 0.75], None, ["soon", 0.5])):
        future = r.submit("a")
        r.step()
        sent = r.clock.wall()
        reply = contract.make_reply(r.batch(n)["batch_id"], "w/1", [{"ok": True, "output": n}])
        if times is not None:
            reply["t"] = [sent + t if isinstance(t, float) else t for t in times]
        r.replies.replies.put(reply)
        r.clock.advance(1.0)
        r.step()
        answered.append(future.result(0)["output"])
    assert seen == [("m", (0.25, 0.5, 0.25))], "only a reply with valid times is timed"
    assert answered == [0, 1, 2], "every reply is answered, timed or not"


def test_phases_of_skewed_clocks_count_as_zero_not_negative() -> None:
    reply = {"t": [99.0, 103.0]}  # the worker's clock runs 2 s behind the web's
    assert contract.batch_phases(reply, sent=100.0, received=104.0) == (0.0, 4.0, 1.0)
    assert contract.batch_phases({"t": [True, 1.0]}, 0.0, 1.0) is None
    assert contract.batch_phases({"t": [1.0]}, 0.0, 1.0) is None
    assert contract.batch_phases({}, 0.0, 1.0) is None


def test_ready_counts_ready_processes_per_model_and_says_why_not(rig):
    r = rig(workers=2)
    r.view.view.append(proc("m", pid=7, ready=False))
    r.view.can_start = frozenset({"m"})
    ready = r.d.ready()
    assert ready.ok and ready.error is None
    assert ready.workers == {"m": 2} and ready.startable == {"m"}  # the loading one is not
    r.view.error = "cannot reach Redis at 127.0.0.1:1"
    ready = r.d.ready()
    assert not ready.ok and ready.workers == {"m": 0} and "127.0.0.1:1" in str(ready.error)


class LaggingView(StaticView):
    """A worker view whose cached list predates what a fresh read returns."""

    def __init__(self) -> None:
        super().__init__([])
        self.fresh: list[ProcStatus] = []
        self.fresh_reads = 0

    def procs(self, fresh: bool = False) -> list[ProcStatus]:
        if not fresh:
            return super().procs()
        self.fresh_reads += 1
        return list(self.fresh)


def test_has_worker_counts_ready_processes_and_models_the_autoscaler_starts(rig):
    r = rig(workers=1)
    r.view.can_start = frozenset({"sleepy"})
    assert r.d.has_worker("m") and r.d.has_worker("sleepy")
    assert not r.d.has_worker("ghost")
    r.view.view = [proc("m", ready=False)]
    assert not r.d.has_worker("m")  # still loading its model


def test_a_model_without_worker_is_read_again_at_most_every_recheck_interval(rig):
    view = LaggingView()
    r = rig(view=view)
    assert not r.d.has_worker("m") and view.fresh_reads == 1
    view.fresh = [proc("m")]  # a worker came up after the cached read
    r.clock.advance(NO_WORKER_RECHECK_S / 2)
    assert not r.d.has_worker("m") and view.fresh_reads == 1  # a flood of requests stays cheap
    r.clock.advance(NO_WORKER_RECHECK_S)
    assert r.d.has_worker("m") and view.fresh_reads == 2


def test_threads_send_and_resolve_without_stepping(rig):
    """As the web tier runs it: the dispatcher and collector threads do what step() does."""
    r = rig(threads=True)
    f = r.submit("a")
    batch = r.sender.wait_for(1)[0]
    assert [i["text"] for i in batch["items"]] == ["a"]
    r.reply(batch)
    assert f.result(timeout=2) == contract.ok_result({"Text": "a"}, 5)


def test_collector_survives_reply_source_errors(rig):
    r = rig(threads=True)
    f = r.submit()
    batch = r.sender.wait_for(1)[0]
    r.replies.replies.put(ConnectionError("redis went away"))
    r.replies.replies.put({"garbage": True})
    r.reply(batch)
    assert f.result(timeout=3)["ok"]
