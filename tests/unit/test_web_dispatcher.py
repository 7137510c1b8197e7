"""The batching dispatcher, driven without Redis: a recording sender, a queue of replies and a
static worker view. Covers adaptive sending, gathering, batch size/delay, the in-flight limit,
late replies, batch errors, broker failures and backpressure.
"""

from __future__ import annotations

import time

import pytest
from autodep_celery.web.dispatcher import Dispatcher
from autodep_celery.web.testing import QueueReplySource, RecordingSender, StaticView, proc

from autodep_celery import contract, errors
from autodep_celery.config import ModelSettings, Settings, WebSettings

pytestmark = pytest.mark.unit


@pytest.fixture
def make():
    made = []

    def factory(
        workers=1, max_batch_size=8, max_batch_delay_ms=10_000.0, max_queue=256, web_processes=1
    ):
        model = ModelSettings(
            "m",
            "/tmp/m.pt",
            max_batch_size=max_batch_size,
            max_batch_delay_ms=max_batch_delay_ms,
            max_queue=max_queue,
        )
        web = WebSettings(worker_check_interval_s=0.05, processes=web_processes)
        settings = Settings(web=web, models=(model,))
        sender, replies = RecordingSender(), QueueReplySource()
        view = StaticView([proc("m", pid=i) for i in range(workers)])
        d = Dispatcher(settings, sender, replies, view)
        made.append(d)
        return d, sender, replies

    yield factory
    for d in made:
        d.close()


def item(text="x", timeout_s=10.0):
    return contract.text_item(text, time.time() + timeout_s)


def reply_to(replies, batch, results=None):
    if results is None:
        results = [contract.ok_result({"Text": i["text"]}, 5) for i in batch["items"]]
    replies.replies.put(contract.make_reply(batch["batch_id"], "w/1", results))


def settle(seconds=0.1):
    time.sleep(seconds)


def test_sends_at_once_when_idle(make):
    d, sender, replies = make()
    started = time.monotonic()
    f = d.submit("m", item("a"))
    batch = sender.wait_for(1)[0]
    assert time.monotonic() - started < 1.0  # the 10 s batch delay was not paid
    assert [i["text"] for i in batch["items"]] == ["a"]
    assert batch["model"] == "m" and batch["reply_to"] == d.reply_to
    assert 9 < sender.expires[0] <= 10
    reply_to(replies, batch)
    assert f.result(timeout=2) == contract.ok_result({"Text": "a"}, 5)


def test_gathers_while_in_flight_and_sends_when_reply_frees_the_slot(make):
    d, sender, replies = make()
    first = d.submit("m", item("a"))
    b1 = sender.wait_for(1)[0]
    rest = [d.submit("m", item(t)) for t in "bcde"]
    settle()
    assert len(sender.batches) == 1  # at the limit of 1 worker: gathering
    reply_to(replies, b1)
    assert first.result(timeout=2)["ok"]
    b2 = sender.wait_for(2)[1]
    assert [i["text"] for i in b2["items"]] == list("bcde")
    reply_to(replies, b2)
    assert [f.result(timeout=2)["output"]["Text"] for f in rest] == list("bcde")


def test_respects_max_batch_size(make):
    d, sender, replies = make(max_batch_size=8)
    d.submit("m", item())
    sender.wait_for(1)
    futures = [d.submit("m", item(str(i))) for i in range(20)]
    settle()
    for n in (2, 3, 4):
        reply_to(replies, sender.batches[n - 2])
        sender.wait_for(n)
    assert [len(b["items"]) for b in sender.batches] == [1, 8, 8, 4]
    reply_to(replies, sender.batches[3])
    assert [f.result(timeout=2)["output"]["Text"] for f in futures] == [str(i) for i in range(20)]


def test_full_batch_goes_before_the_delay_when_under_the_limit(make):
    d, sender, _ = make(workers=2, max_batch_size=4)
    d.submit("m", item())
    sender.wait_for(1)
    for i in range(4):
        d.submit("m", item(str(i)))
    assert len(sender.wait_for(2)[1]["items"]) == 4


def test_partial_batch_waits_max_batch_delay(make):
    d, sender, _ = make(workers=2, max_batch_delay_ms=150)
    d.submit("m", item())
    sender.wait_for(1)
    started = time.monotonic()
    for i in range(3):
        d.submit("m", item(str(i)))
    settle(0.05)
    assert len(sender.batches) == 1
    b2 = sender.wait_for(2)[1]
    assert time.monotonic() - started >= 0.14
    assert len(b2["items"]) == 3


def test_in_flight_limit_is_this_process_share_of_ready_workers_plus_one(make):
    d, sender, replies = make(workers=3, max_batch_delay_ms=0, web_processes=2)
    for i in range(4):
        d.submit("m", item(str(i)))
        settle(0.05)
    assert len(sender.batches) == 3  # ceil(3 workers / 2 web processes) + 1 queued behind
    reply_to(replies, sender.batches[0])
    assert len(sender.wait_for(4)[3]["items"]) == 1


def test_in_flight_limit_with_one_web_process(make):
    d, sender, replies = make(workers=2, max_batch_delay_ms=0)
    for i in range(4):
        d.submit("m", item(str(i)))
        settle(0.05)
    assert len(sender.batches) == 3  # 2 workers + 1 queued; the fourth waits
    reply_to(replies, sender.batches[0])
    assert len(sender.wait_for(4)[3]["items"]) == 1


def test_batches_gather_for_half_a_round_trip_while_one_runs(make):
    d, sender, replies = make(workers=1, max_batch_delay_ms=0)
    d.submit("m", item("first"))
    b1 = sender.wait_for(1)[0]
    settle(0.3)  # a slow model: this round trip takes ~0.3 s
    reply_to(replies, b1)
    d.submit("m", item("a"))
    b2 = sender.wait_for(2)[1]  # idle again: sent at once
    d.submit("m", item("b"))
    settle(0.05)
    assert len(sender.batches) == 2  # gathers (~0.15 s) instead of leaving at once
    d.submit("m", item("c"))
    b3 = sender.wait_for(3, timeout_s=2)[2]
    assert [i["text"] for i in b3["items"]] == ["b", "c"]
    reply_to(replies, b2)


def test_late_reply_is_dropped_and_slot_freed_at_deadline(make):
    d, sender, replies = make()
    late = d.submit("m", item("late", timeout_s=0.2))
    b1 = sender.wait_for(1)[0]
    with pytest.raises(errors.DeadlineExceeded):
        late.result(timeout=2)
    fresh = d.submit("m", item("fresh"))
    b2 = sender.wait_for(2)[1]  # slot was freed: sent at once
    reply_to(replies, b1)  # the late reply: unknown batch id now, dropped
    reply_to(replies, b2)
    assert fresh.result(timeout=2)["output"] == {"Text": "fresh"}


def test_batch_error_fails_every_future(make):
    d, sender, replies = make(max_batch_delay_ms=0)
    d.submit("m", item())
    b1 = sender.wait_for(1)[0]
    futures = [d.submit("m", item(str(i))) for i in range(3)]
    reply_to(replies, b1)
    b2 = sender.wait_for(2)[1]
    error = {"code": "worker_lost", "message": "worker died 3 times", "status": 500}
    replies.replies.put(contract.batch_error_reply(b2["batch_id"], "w/1", error))
    for f in futures:
        exc = f.exception(timeout=2)
        assert exc.code == "worker_lost" and exc.http_status == 500
    assert len({id(f.exception()) for f in futures}) == len(futures)


def test_result_count_mismatch_fails_the_batch(make):
    d, sender, replies = make()
    f = d.submit("m", item())
    batch = sender.wait_for(1)[0]
    reply_to(replies, batch, results=[])
    assert isinstance(f.exception(timeout=2), errors.AutodepError)


def test_send_failure_is_broker_unavailable(make):
    d, sender, _ = make()
    sender.fail = ConnectionError("Connection refused")
    f = d.submit("m", item())
    exc = f.exception(timeout=2)
    assert isinstance(exc, errors.BrokerUnavailable) and "Connection refused" in exc.message
    sender.fail = None
    d.submit("m", item())
    sender.wait_for(1)  # nothing stayed in flight after the failure


def test_overloaded_at_max_queue_then_recovers(make):
    d, sender, replies = make(max_queue=2)
    d.submit("m", item())
    sender.wait_for(1)
    d.submit("m", item())
    with pytest.raises(errors.Overloaded) as info:
        d.submit("m", item())
    assert info.value.retry_after_s >= 1 and "max_queue=2" in info.value.message
    reply_to(replies, sender.wait_for(1)[0])
    reply_to(replies, sender.wait_for(2)[1])
    deadline = time.monotonic() + 2
    while d.outstanding("m") and time.monotonic() < deadline:
        settle(0.01)
    assert d.outstanding("m") == 0
    d.submit("m", item())


def test_cancelled_items_are_not_sent(make):
    d, sender, replies = make()
    d.submit("m", item())
    b1 = sender.wait_for(1)[0]
    gone = d.submit("m", item("gone"))
    kept = d.submit("m", item("kept"))
    settle(0.05)
    assert gone.cancel()
    reply_to(replies, b1)
    b2 = sender.wait_for(2)[1]
    assert [i["text"] for i in b2["items"]] == ["kept"]
    reply_to(replies, b2)
    assert kept.result(timeout=2)["ok"]


def test_collector_survives_reply_source_errors(make):
    d, sender, replies = make()
    f = d.submit("m", item())
    batch = sender.wait_for(1)[0]
    replies.replies.put(ConnectionError("redis went away"))
    replies.replies.put({"garbage": True})
    reply_to(replies, batch)
    assert f.result(timeout=3)["ok"]


def test_unknown_model_is_rejected(make):
    d, _, _ = make()
    with pytest.raises(errors.UnknownModel):
        d.submit("other", item())


def test_slow_models_get_smaller_batches(make):
    d, sender, replies = make(workers=1, max_batch_size=8, max_batch_delay_ms=0)
    d.submit("m", item("first"))
    b1 = sender.wait_for(1)[0]
    # the worker reports 0.1 s of compute for one item: batches aim at ~0.2 s, so 2 items
    reply_to(replies, b1, [contract.ok_result({"Text": "first"}, 100_000_000)])
    settle(0.05)
    d.submit("m", item("a"))
    b2 = sender.wait_for(2)[1]  # idle: at once
    for name in "bcdef":
        d.submit("m", item(name))
    b3 = sender.wait_for(3)[2]
    assert [i["text"] for i in b3["items"]] == ["b", "c"]
    reply_to(replies, b2)
    reply_to(replies, b3)


def test_load_reports_pending_sent_and_the_oldest_wait(make):
    """What the autoscaler reads from each web process: with one worker the limit is two
    batches in flight, so the rest waits here and ages."""
    clock = [100.0]
    d, sender, replies = make(workers=1, max_batch_size=2)
    d._clock = lambda: clock[0]
    assert d.load() == {}  # nothing submitted in this process yet
    for i in range(7):
        d.submit("m", item(str(i)))
    batches = sender.wait_for(2)
    settle()
    clock[0] += 1.5
    sent = sum(len(b["items"]) for b in batches)
    assert d.load()["m"] == {"pending": 7 - sent, "sent": sent, "batches": 2, "oldest_s": 1.5}
    answered = 0
    while answered < len(sender.batches) or sum(len(b["items"]) for b in sender.batches) < 7:
        for b in sender.wait_for(answered + 1)[answered:]:
            reply_to(replies, b)
            answered += 1
    settle()
    assert d.load()["m"] == {"pending": 0, "sent": 0, "batches": 0, "oldest_s": 0.0}
