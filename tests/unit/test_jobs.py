"""Asynchronous jobs without Redis: ids, the [jobs] settings, how a job is read and settled, what
a worker writes for each job of a batch, the dispatcher's "sent" signal, and POST/GET/DELETE
/jobs over a fake dispatcher and an in-memory job store. The Redis side (Lua scripts, TTLs) is
tested against a real server in tests/integration/test_job_store.py."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest
from openapi_schema_validator import OAS30Validator

from autodep_celery import config, contract, errors, jobs
from autodep_celery.config import ModelSettings
from autodep_celery.web import routes
from autodep_celery.web.dispatcher import Dispatcher
from autodep_celery.web.testing import (
    FakeDispatcher,
    FakeJobStore,
    QueueReplySource,
    RecordingSender,
    StaticView,
    canned_result,
    png_bytes,
    proc,
)
from tests.unit.conftest import client_for, make_settings

pytestmark = pytest.mark.unit

PNG = base64.b64encode(png_bytes(4, 3)).decode()
CLASSIFY = {
    "data": {"B64Image": {"image": PNG}},
    "inference_type": {"ImageClassification": {"top_n": 3}},
    "model": "m",
}


# ---- ids and settings ---------------------------------------------------------------------
def test_new_ids_are_valid_and_distinct() -> None:
    ids = {jobs.new_id() for _ in range(100)}
    assert len(ids) == 100 and all(jobs.valid_id(i) for i in ids)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0" * 31,
        "0" * 33,
        "0" * 32 + "\n",
        "A" * 32,
        "g" * 32,
        "../../" + "0" * 26,
        "*",
        "0" * 16 + ":" + "0" * 15,
    ],
)
def test_malformed_ids_are_refused(text: str) -> None:
    assert not jobs.valid_id(text)


def test_jobs_settings_defaults_env_and_errors(tmp_path: Path) -> None:
    assert config.from_dict({}).jobs == config.JobsSettings(result_ttl_s=3600.0, timeout_s=3600.0)
    path = tmp_path / "config.toml"
    path.write_text("[jobs]\nresult_ttl_s = 60\ntimeout_s = 120.5\n")
    s = config.load(path, environ={"AUTODEP_JOBS__RESULT_TTL_S": "5"})
    assert (s.jobs.result_ttl_s, s.jobs.timeout_s) == (5.0, 120.5)
    assert config.from_dict({"jobs": {"timeout_s": 9}}).jobs.timeout_s == 9.0
    with pytest.raises(config.ConfigError, match=r"jobs.result_ttl_s \(0.0\) must be > 0"):
        config.from_dict({"jobs": {"result_ttl_s": 0}})
    with pytest.raises(config.ConfigError, match="did you mean timeout_s"):
        config.from_dict({"jobs": {"timeout": 9}})
    with pytest.raises(config.ConfigError, match="jobs.timeout_s must be a number"):
        config.from_dict({"jobs": {"timeout_s": "soon"}})


def test_settings_round_trip_keeps_jobs() -> None:
    s = config.from_dict({"jobs": {"result_ttl_s": 2, "timeout_s": 3}})
    assert config.from_dict(json.loads(s.to_json())).jobs == s.jobs


# ---- reading and settling -----------------------------------------------------------------
def stored(job: jobs.Job, **extra: bytes) -> dict[bytes, bytes]:
    raw = {
        b"status": job.status.encode(),
        b"model": job.model.encode(),
        b"task": job.task.encode(),
        b"created": repr(job.created).encode(),
        b"updated": repr(job.updated).encode(),
        b"deadline": repr(job.deadline).encode(),
        b"ttl_ms": b"1000",
    }
    return raw | {k.encode(): v for k, v in extra.items()}


def test_parse_reads_what_the_hash_holds() -> None:
    job = jobs.new("m", "TextToText", 100.0, 200.0)
    assert jobs.parse(job.id, stored(job)) == job
    result = contract.ok_result({"B64Image": {"image": b"\x89PNG", "height": 1, "width": 1}}, 7)
    done = jobs.parse(job.id, stored(job, status=b"done", result=msgpack.packb(result)))
    assert done is not None and done.status == jobs.DONE and done.result == result
    assert jobs.parse(job.id, {}) is None
    broken = jobs.parse(job.id, stored(job, status=b"failed", result=b"\xc1"))
    assert broken is not None and broken.error is not None
    assert broken.error["code"] == "internal_error"


@pytest.mark.parametrize(
    ("status", "now", "grace", "expected"),
    [
        (jobs.QUEUED, 200.0, 600.0, jobs.QUEUED),
        (jobs.QUEUED, 200.0 + jobs.QUEUED_GRACE_S, 600.0, jobs.QUEUED),
        (jobs.QUEUED, 200.1 + jobs.QUEUED_GRACE_S, 600.0, jobs.FAILED),
        (jobs.RUNNING, 700.0, 600.0, jobs.RUNNING),  # a batch that began in time may finish
        (jobs.RUNNING, 800.1, 600.0, jobs.FAILED),
        (jobs.DONE, 1e9, 600.0, jobs.DONE),
    ],
)
def test_settle_fails_a_job_left_unfinished_past_its_deadline(
    status: str, now: float, grace: float, expected: str
) -> None:
    job = jobs.Job("0" * 32, status, "m", "TextToText", 100.0, 150.0, 200.0)
    settled = jobs.settle(job, now, grace)
    assert settled.status == expected
    if expected == jobs.FAILED and status != jobs.FAILED:
        assert settled.error is not None and settled.error["code"] == "deadline_exceeded"
        assert settled.updated == 200.0


# ---- what the worker writes ---------------------------------------------------------------
class RecordingPipe:
    def __init__(self) -> None:
        self.evals: list[tuple[Any, ...]] = []

    def eval(self, script: str, numkeys: int, *args: Any) -> None:
        self.evals.append(args)


def test_job_items_are_found_by_their_job_field() -> None:
    plain = contract.text_item("a", 1.0)
    job = dict(contract.text_item("b", 1.0), job="f" * 32)
    assert jobs.job_items([plain, job, "junk", {"job": 5}]) == [(1, "f" * 32)]
    assert jobs.job_items(None) == []


def test_results_are_recorded_per_item_and_a_batch_error_fails_every_job() -> None:
    ok = contract.ok_result({"Text": "x"}, 5)
    bad = contract.error_result(errors.InvalidImage("broken").to_dict())
    pipe = RecordingPipe()
    reply = contract.make_reply("b", "w/1", [ok, ok, bad])
    jobs.record_results(pipe, [(0, "a" * 32), (2, "c" * 32)], reply, 5.0)
    assert [(key, status) for key, status, _, _ in pipe.evals] == [
        (contract.job_key("a" * 32), jobs.DONE),
        (contract.job_key("c" * 32), jobs.FAILED),
    ]
    assert msgpack.unpackb(pipe.evals[1][2]) == bad

    pipe = RecordingPipe()
    lost = errors.WorkerLost("died").to_dict()
    jobs.record_results(pipe, [(1, "a" * 32)], contract.batch_error_reply("b", "w", lost), 5.0)
    [(_, status, packed, _)] = pipe.evals
    assert status == jobs.FAILED and msgpack.unpackb(packed) == contract.error_result(lost)


# ---- the dispatcher's "sent" signal -------------------------------------------------------
def dispatcher(sender: RecordingSender) -> Dispatcher:
    settings = make_settings([ModelSettings("m", "/tmp/m.pt")])
    return Dispatcher(settings, sender, QueueReplySource(), StaticView([proc("m")]), threads=False)


def test_on_sent_runs_after_the_batch_is_published() -> None:
    sender = RecordingSender()
    d = dispatcher(sender)
    seen: list[int] = []
    d.submit(
        "m",
        contract.text_item("a", time.time() + 60),
        on_sent=lambda: seen.append(len(sender.batches)),
    )
    plain = d.submit("m", contract.text_item("b", time.time() + 60))
    assert seen == []
    d.step()
    assert seen == [1]  # called once, with the batch already in the broker
    assert not plain.done()
    d.close()


def test_on_sent_is_not_called_when_the_send_fails() -> None:
    sender = RecordingSender()
    sender.fail = ConnectionError("refused")
    d = dispatcher(sender)
    seen: list[bool] = []
    f = d.submit("m", contract.text_item("a", time.time() + 60), on_sent=lambda: seen.append(True))
    d.step()
    assert seen == [] and isinstance(f.exception(timeout=0), errors.BrokerUnavailable)
    d.close()


def test_a_failing_on_sent_does_not_stop_the_batch() -> None:
    sender = RecordingSender()
    d = dispatcher(sender)

    def boom() -> None:
        raise RuntimeError("callback bug")

    d.submit("m", contract.text_item("a", time.time() + 60), on_sent=boom)
    d.submit("m", contract.text_item("b", time.time() + 60))
    d.step()
    assert len(sender.batches) == 1 and len(sender.batches[0]["items"]) == 2
    d.close()


def test_a_job_batch_holds_its_slot_no_longer_than_a_request() -> None:
    wall = [1000.0]
    sender = RecordingSender()
    settings = make_settings([ModelSettings("m", "/tmp/m.pt")], request_timeout_s=2.0)
    d = Dispatcher(
        settings,
        sender,
        QueueReplySource(),
        StaticView([proc("m")]),
        clock=lambda: wall[0],
        wall=lambda: wall[0],
        threads=False,
    )
    job = d.submit("m", dict(contract.text_item("a", 1000.0 + 3600), job="a" * 32))
    d.step()
    assert sender.expires == [3600.0]  # the broker keeps it until the job's deadline
    assert d.load()["m"]["batches"] == 1
    wall[0] += 1.5
    d.step()
    assert d.load()["m"]["batches"] == 1 and not job.done()
    wall[0] += 1.0
    d.step()  # no reply after a request's timeout: the slot is freed as for any request
    assert d.load()["m"]["batches"] == 0
    assert isinstance(job.exception(timeout=0), errors.DeadlineExceeded)
    d.close()


# ---- the routes ---------------------------------------------------------------------------
def jobs_client(
    handler: Any = canned_result,
    models: tuple[str, ...] = ("m",),
    tasks: dict[str, str] | None = None,
    **web: Any,
) -> tuple[Any, FakeDispatcher, FakeJobStore]:
    fake = FakeDispatcher([proc(m, pid=i) for i, m in enumerate(models)], handler=handler)
    client, _ = client_for(fake, models, tasks, **web)
    store = FakeJobStore()
    client.application.extensions[routes.EXTENSION]["jobs"] = store
    return client, fake, store


def submit(client: Any, body: Any = CLASSIFY) -> str:
    r = client.post("/jobs", json=body)
    assert r.status_code == 202, r.json
    job_id = r.json["job_id"]
    assert r.json == {"job_id": job_id, "status_url": f"/jobs/{job_id}"}
    assert r.headers["Location"] == f"/jobs/{job_id}"
    return str(job_id)


def test_a_job_is_queued_then_done_with_what_inference_answers() -> None:
    client, fake, store = jobs_client()
    before = time.time()
    job_id = submit(client)
    [(model, item)] = fake.submitted
    assert model == "m" and item["job"] == job_id and item["top_n"] == 3
    assert before + 3600 <= item["deadline"] <= time.time() + 3600  # jobs.timeout_s
    assert store.ttl_s[job_id] == 3600.0
    r = client.get(f"/jobs/{job_id}")
    assert r.status_code == 200
    assert r.json["status"] == "queued" and r.json["model"] == "m"
    assert r.json["created"] == r.json["updated"] and r.json["deadline"] == item["deadline"]
    assert "result" not in r.json and "error" not in r.json
    store.running(job_id)
    assert client.get(f"/jobs/{job_id}").json["status"] == "running"
    store.finish(job_id, canned_result(model, item))
    r = client.get(f"/jobs/{job_id}")
    assert r.json["status"] == "done"
    assert r.json["result"] == client.post("/inference", json=CLASSIFY).json


@pytest.mark.parametrize(
    ("body", "task"),
    [
        ({"data": {"B64Image": {"image": PNG}}, "inference_type": "ImageToImage"}, "ImageToImage"),
        ({"data": {"Text": "hi"}, "inference_type": "TextToText"}, "TextToText"),
    ],
)
def test_results_are_encoded_by_the_task_type(body: dict[str, Any], task: str) -> None:
    client, fake, store = jobs_client()
    job_id = submit(client, body)
    assert store.jobs[job_id].task == task
    model, item = fake.submitted[-1]
    store.finish(job_id, canned_result(model, item))
    result = client.get(f"/jobs/{job_id}").json["result"]
    assert result == client.post("/inference", json=body).json  # ImageToImage: base64 PNG


def test_a_failed_job_carries_the_error_inference_would_answer() -> None:
    failure = contract.error_result(errors.InvalidImage("the image bytes are broken").to_dict())
    client, fake, store = jobs_client(handler=lambda _m, _i: failure)
    job_id = submit(client)
    store.finish(job_id, failure)
    r = client.get(f"/jobs/{job_id}")
    sync = client.post("/inference", json=CLASSIFY)
    assert r.status_code == 200 and r.json["status"] == "failed"
    assert (
        r.json["error"]
        == sync.json["error"]
        == {
            "code": "invalid_image",
            "message": "the image bytes are broken",
        }
    )


@pytest.mark.parametrize(
    "path",
    [
        "/jobs/" + "0" * 32,
        "/jobs/not-a-job",
        "/jobs/" + "A" * 32,
        "/jobs/%2A",
        "/jobs/" + "x" * 5000,
    ],
)
def test_unknown_and_malformed_ids_are_404_json(path: str) -> None:
    client, _, _ = jobs_client()
    for method in (client.get, client.delete):
        r = method(path)
        assert r.status_code == 404 and r.json["error"]["code"] == "unknown_job"
        assert len(r.json["error"]["message"]) < 200


def test_an_expired_job_is_404() -> None:
    client, _, store = jobs_client()
    job_id = submit(client)
    store.expire(job_id)
    r = client.get(f"/jobs/{job_id}")
    assert r.status_code == 404 and "jobs.result_ttl_s" in r.json["error"]["message"]


def test_delete_forgets_a_job() -> None:
    client, _, store = jobs_client()
    job_id = submit(client)
    r = client.delete(f"/jobs/{job_id}")
    assert r.status_code == 204 and r.data == b""
    assert job_id not in store.jobs
    assert client.get(f"/jobs/{job_id}").status_code == 404
    assert client.delete(f"/jobs/{job_id}").status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"data": {"Text": "x"}}, 422, "missing_field"),
        (dict(CLASSIFY, model="nope"), 404, "unknown_model"),
        ({**CLASSIFY, "inference_type": "Detection"}, 422, "unknown_inference_type"),
        ([1], 400, "invalid_body"),
    ],
)
def test_bad_bodies_get_the_inference_error_and_create_no_job(
    body: Any, status: int, code: str
) -> None:
    client, fake, store = jobs_client()
    r = client.post("/jobs", json=body)
    sync = client.post("/inference", json=body)
    assert (r.status_code, r.json) == (sync.status_code, sync.json)
    assert r.status_code == status and r.json["error"]["code"] == code
    assert store.jobs == {} and fake.submitted == []


def test_not_json_is_415_and_invalid_json_400() -> None:
    client, _, store = jobs_client()
    r = client.post("/jobs", data=b"x", content_type="image/png")
    assert r.status_code == 415 and r.json["error"]["code"] == "unsupported_media_type"
    r = client.post("/jobs", data=b"{nope", content_type="application/json")
    assert r.status_code == 400 and r.json["error"]["code"] == "invalid_json"
    assert store.jobs == {}


def test_no_worker_is_503_before_any_job_exists() -> None:
    client, _, store = jobs_client()
    client.application.extensions[routes.EXTENSION]["dispatcher"].status_view.view = []
    r = client.post("/jobs", json=CLASSIFY)
    assert r.status_code == 503 and r.json["error"]["code"] == "no_worker"
    assert store.jobs == {}


def test_a_job_that_could_not_be_sent_is_refused_and_forgotten() -> None:
    client, _, store = jobs_client(handler=lambda _m, _i: errors.BrokerUnavailable("down"))
    r = client.post("/jobs", json=CLASSIFY)
    assert r.status_code == 503 and r.json["error"]["code"] == "broker_unavailable"
    assert store.jobs == {}


def test_a_job_the_dispatcher_cannot_take_is_429_and_forgotten() -> None:
    client, fake, store = jobs_client()
    fake.overloaded = True
    r = client.post("/jobs", json=CLASSIFY)
    assert r.status_code == 429 and r.headers["Retry-After"] == "2"
    assert store.jobs == {}


def test_a_job_never_sent_in_time_is_withdrawn() -> None:
    client, fake, store = jobs_client(request_timeout_s=0.05)
    fake.hold = True  # every batch slot taken: the item stays in the dispatcher
    r = client.post("/jobs", json=CLASSIFY)
    assert r.status_code == 429 and r.json["error"]["code"] == "overloaded"
    assert "web.request_timeout_s" in r.json["error"]["message"]
    assert store.jobs == {}


def test_job_store_down_is_503() -> None:
    client, fake, store = jobs_client()
    store.error = "cannot reach Redis at 127.0.0.1:1"
    r = client.post("/jobs", json=CLASSIFY)
    assert r.status_code == 503 and r.json["error"]["code"] == "broker_unavailable"
    assert fake.submitted == []
    assert client.get("/jobs/" + "0" * 32).status_code == 503


def test_jobs_are_in_the_openapi_document() -> None:
    client, _, _ = jobs_client(models=("m", "n"))
    doc = client.get("/openapi.json").json
    post = doc["paths"]["/jobs"]["post"]
    schema = post["requestBody"]["content"]["application/json"]["schema"]
    for variant in schema["oneOf"]:  # one per data form
        assert variant["properties"]["model"]["enum"] == ["m", "n"]
        assert "model" in variant["required"]  # two models: the body must name one
    assert {"202", "422", "429", "503"} <= set(post["responses"])
    get = doc["paths"]["/jobs/{job_id}"]["get"]
    assert {"200", "404"} <= set(get["responses"])
    body = get["responses"]["200"]["content"]["application/json"]["schema"]
    assert body["properties"]["status"]["enum"] == list(jobs.STATES)
    assert {"204", "404"} <= set(doc["paths"]["/jobs/{job_id}"]["delete"]["responses"])


def test_job_bodies_follow_their_openapi_schemas() -> None:
    client, fake, store = jobs_client()
    doc = client.get("/openapi.json").json
    accepted = doc["paths"]["/jobs"]["post"]["responses"]["202"]["content"]
    job = doc["paths"]["/jobs/{job_id}"]["get"]["responses"]["200"]["content"]
    r = client.post("/jobs", json=CLASSIFY)
    OAS30Validator(accepted["application/json"]["schema"]).validate(r.json)
    queued_id = r.json["job_id"]
    done_id, failed_id = submit(client), submit(client)
    model, item = fake.submitted[-1]
    store.finish(done_id, canned_result(model, item))
    store.finish(failed_id, contract.error_result(errors.InvalidImage("broken").to_dict()))
    for job_id in (queued_id, done_id, failed_id):
        OAS30Validator(job["application/json"]["schema"]).validate(
            client.get(f"/jobs/{job_id}").json
        )
