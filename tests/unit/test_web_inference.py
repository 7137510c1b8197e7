"""POST /inference happy paths (every request form of README, HTTP API) and how worker-side outcomes
(item errors, deadlines, overload, no worker) reach the client. Flask test client + FakeDispatcher.
"""

from __future__ import annotations

import base64
import time

import orjson
import pytest

from autodep_celery import contract, errors
from autodep_celery.web.testing import FakeDispatcher, png_bytes, proc
from tests.unit.conftest import client_for

pytestmark = pytest.mark.unit

PNG = png_bytes(4, 3)
B64 = base64.b64encode(PNG).decode()


def post(client, body, **kw):
    return client.post("/inference", data=orjson.dumps(body), content_type="application/json", **kw)


@pytest.mark.parametrize(
    "image",
    [
        {"image": B64, "height": None, "width": None},
        {"image": B64},
        {"image": B64, "height": 3, "width": 4},
        {"image": "data:image/png;base64," + B64},
        {"image": B64[:10] + "\n" + B64[10:] + "\n"},
    ],
    ids=["null-size", "no-size", "matching-size", "data-url", "newlines"],
)
def test_image_classification_forms(image):
    client, fake = client_for()
    r = post(
        client,
        {"data": {"B64Image": image}, "inference_type": {"ImageClassification": {"top_n": 3}}},
    )
    assert r.status_code == 200, r.json
    inference, timing = r.json
    assert [c["label"] for c in inference["Classification"]] == ["class0", "class1", "class2"]
    assert timing == {"secs": 0, "nanos": 1234}
    model, item = fake.submitted[0]
    assert model == "m" and item["image"] == PNG and item["top_n"] == 3
    assert item["task"] == "ImageClassification" and item["deadline"] > time.time()


@pytest.mark.parametrize(
    "inference_type",
    [{"ImageClassification": {}}, {"ImageClassification": {"top_n": None}}, "ImageClassification"],
)
def test_top_n_defaults(inference_type):
    client, fake = client_for()
    r = post(client, {"data": {"B64Image": {"image": B64}}, "inference_type": inference_type})
    assert r.status_code == 200
    assert len(r.json[0]["Classification"]) == contract.DEFAULT_TOP_N
    assert fake.submitted[0][1]["top_n"] == contract.DEFAULT_TOP_N


def test_image_to_image_returns_base64_png():
    client, _ = client_for()
    r = post(
        client,
        {
            "data": {"B64Image": {"image": B64, "height": 3, "width": 4}},
            "inference_type": "ImageToImage",
        },
    )
    assert r.status_code == 200
    out = r.json[0]["B64Image"]
    assert base64.b64decode(out["image"]) == PNG and (out["height"], out["width"]) == (3, 4)
    assert r.json[1] == {"secs": 0, "nanos": 7}


@pytest.mark.parametrize("tag", ["Text", "text"])
def test_text_to_text(tag):
    client, fake = client_for()
    r = post(client, {"data": {tag: "hello"}, "inference_type": "TextToText"})
    assert r.status_code == 200
    assert r.json == [{"Text": "hello"}, {"secs": 1, "nanos": 500_000_000}]
    assert fake.submitted[0][1] == {
        "kind": "text",
        "task": "TextToText",
        "text": "hello",
        "deadline": fake.submitted[0][1]["deadline"],
        "request_id": r.headers["X-Request-ID"],
    }


@pytest.mark.parametrize("content_type", ["text/plain", None, "application/json; charset=utf-8"])
def test_lenient_content_types(content_type):
    client, _ = client_for()
    body = orjson.dumps({"data": {"Text": "x"}, "inference_type": "TextToText"})
    r = client.post("/inference", data=body, content_type=content_type)
    assert r.status_code == 200, r.json


def test_model_chosen_by_name_among_several():
    client, fake = client_for(models=("a", "b"))
    r = post(client, {"data": {"Text": "x"}, "inference_type": "TextToText", "model": "b"})
    assert r.status_code == 200 and fake.submitted[0][0] == "b"


def test_item_error_from_worker_keeps_its_status():
    def handler(model, item):
        return contract.error_result(
            {"code": "invalid_top_n", "message": "top_n 50 > 10 classes", "status": 422}
        )

    client, _ = client_for(FakeDispatcher([proc("m")], handler))
    r = post(
        client,
        {
            "data": {"B64Image": {"image": B64}},
            "inference_type": {"ImageClassification": {"top_n": 50}},
        },
    )
    assert r.status_code == 422
    assert r.json == {"error": {"code": "invalid_top_n", "message": "top_n 50 > 10 classes"}}


def test_batch_failure_exception_rendered():
    fake = FakeDispatcher([proc("m")], lambda m, i: errors.WorkerLost("worker died 3 times"))
    client, _ = client_for(fake)
    r = post(client, {"data": {"Text": "x"}, "inference_type": "TextToText"})
    assert r.status_code == 500 and r.json["error"]["code"] == "worker_lost"


def test_no_worker_is_503_immediately():
    client, fake = client_for(FakeDispatcher([proc("m", ready=False)]))
    r = post(client, {"data": {"Text": "x"}, "inference_type": "TextToText"})
    assert r.status_code == 503 and r.json["error"]["code"] == "no_worker"
    assert "m" in r.json["error"]["message"]
    assert fake.submitted == []  # refused before queueing: nothing waits for a deadline


def test_redis_down_is_503_broker_unavailable():
    fake = FakeDispatcher([proc("m")])
    fake.error = "cannot reach Redis at 127.0.0.1:1"
    client, _ = client_for(fake)
    r = post(client, {"data": {"Text": "x"}, "inference_type": "TextToText"})
    assert r.status_code == 503 and r.json["error"]["code"] == "broker_unavailable"


def test_overloaded_is_429_with_retry_after():
    client, fake = client_for()
    fake.overloaded = True
    r = post(client, {"data": {"Text": "x"}, "inference_type": "TextToText"})
    assert r.status_code == 429 and r.json["error"]["code"] == "overloaded"
    assert r.headers["Retry-After"] == "2"


def test_deadline_is_504_and_future_cancelled():
    futures = []
    fake = FakeDispatcher([proc("m")], lambda m, i: None)
    original = fake.submit

    def submit(model, item):
        futures.append(original(model, item))
        return futures[-1]

    fake.submit = submit
    client, _ = client_for(fake, request_timeout_s=0.05)
    r = post(client, {"data": {"Text": "x"}, "inference_type": "TextToText"})
    assert r.status_code == 504 and r.json["error"]["code"] == "deadline_exceeded"
    assert "0.05" in r.json["error"]["message"]
    assert futures[0].cancelled()


def test_unexpected_exception_is_fixed_500_without_traceback(caplog):
    def boom(model, item):
        raise RuntimeError("secret internals")

    client, _ = client_for(FakeDispatcher([proc("m")], boom))
    r = post(client, {"data": {"Text": "x"}, "inference_type": "TextToText"})
    assert r.status_code == 500
    assert r.json["error"]["code"] == "internal_error"
    assert "secret" not in r.get_data(as_text=True) and "Traceback" not in r.get_data(as_text=True)
    assert any(rec.exc_info for rec in caplog.records)
