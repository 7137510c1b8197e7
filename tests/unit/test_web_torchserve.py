"""TorchServe's inference API over a fake dispatcher: GET /ping, POST/PUT /predictions/{model}
[/{version}] for each task type, the item each request becomes, and the errors."""

from __future__ import annotations

import io
import json

import pytest

from autodep_celery import contract, errors
from autodep_celery.web.testing import FakeDispatcher, canned_result, png_bytes, proc
from tests.unit.conftest import client_for

pytestmark = pytest.mark.unit

PNG = png_bytes(8, 6)
TASKS = {"cls": "ImageClassification", "i2i": "ImageToImage", "t2t": "TextToText"}
MODELS = ("cls", "i2i", "t2t", "any")


@pytest.fixture
def served():
    return client_for(models=MODELS, tasks=TASKS)


# ---- /ping ---------------------------------------------------------------------------------
def test_ping_healthy():
    client, _ = client_for(FakeDispatcher([proc("m")], models=["m"]))
    r = client.get("/ping")
    assert r.status_code == 200 and r.json == {"status": "Healthy"}


@pytest.mark.parametrize(
    "procs", [[proc("m"), proc("n", ready=False)], []], ids=["one-missing", "none"]
)
def test_ping_unhealthy_when_a_model_has_no_worker(procs):
    # TorchServe answers 500 "Unhealthy" when a model has fewer workers than it needs
    client, _ = client_for(FakeDispatcher(procs, models=["m", "n"]), models=("m", "n"))
    r = client.get("/ping")
    assert r.status_code == 500 and r.json == {"status": "Unhealthy"}


def test_ping_unhealthy_when_redis_is_down():
    fake = FakeDispatcher([proc("m")], models=["m"])
    fake.error = "redis down"
    client, _ = client_for(fake)
    r = client.get("/ping")
    assert r.status_code == 500 and r.json == {"status": "Unhealthy"}


def test_ping_counts_models_started_on_demand():
    fake = FakeDispatcher([proc("m")], models=["m", "lazy"])
    fake.status_view.can_start = frozenset({"lazy"})
    client, _ = client_for(fake, models=("m", "lazy"))
    assert client.get("/ping").json == {"status": "Healthy"}


# ---- /predictions --------------------------------------------------------------------------
def test_classifier_answers_top5_object_most_probable_first(served):
    client, fake = served
    r = client.post("/predictions/cls", data=PNG, content_type="image/png")
    assert r.status_code == 200 and r.mimetype == "application/json"
    assert list(r.json.items()) == [(f"class{i}", 0.5 / (i + 1)) for i in range(5)]
    assert r.data.startswith(b'{\n  "class0": 0.5,\n')  # json.dumps(indent=2), as TorchServe
    model, item = fake.submitted[-1]
    assert model == "cls"
    assert item["kind"] == "image" and item["task"] == "ImageClassification"
    assert item["top_n"] == 5 and item["image"] == PNG and item["deadline"] > 0


@pytest.mark.parametrize("path", ["/predictions/cls/1.0", "/predictions/cls/1"])
@pytest.mark.parametrize("method", ["post", "put"])
def test_default_version_and_put(served, path, method):
    client, _ = served
    r = getattr(client, method)(path, data=PNG)  # curl -T file: PUT, no Content-Type
    assert r.status_code == 200 and len(r.json) == 5


def test_multipart_data_field(served):
    client, fake = served
    r = client.post("/predictions/cls", data={"data": (io.BytesIO(PNG), "cat.png")})
    assert r.status_code == 200 and fake.submitted[-1][1]["image"] == PNG


def test_model_without_task_classifies_an_image(served):
    client, fake = served
    r = client.post("/predictions/any", data=PNG)
    assert r.status_code == 200 and len(r.json) == 5
    assert fake.submitted[-1][1]["task"] == "ImageClassification"


def test_image_to_image_answers_png(served):
    client, fake = served
    r = client.post("/predictions/i2i", data=PNG, content_type="image/png")
    assert r.status_code == 200 and r.mimetype == "image/png" and r.data == PNG
    item = fake.submitted[-1][1]
    assert item["task"] == "ImageToImage" and "top_n" not in item


@pytest.mark.parametrize("model", ["t2t", "any"])
def test_text_to_text_answers_text(served, model):
    client, fake = served
    r = client.post(f"/predictions/{model}", data="héllo".encode(), content_type="text/plain")
    assert r.status_code == 200 and r.mimetype == "text/plain" and r.text == "héllo"
    item = fake.submitted[-1][1]
    assert (item["kind"], item["task"], item["text"]) == ("text", "TextToText", "héllo")


def test_text_to_text_from_a_form_value(served):
    client, _ = served
    r = client.post("/predictions/t2t", data={"data": "hi"}, content_type="multipart/form-data")
    assert r.status_code == 200 and r.text == "hi"


def test_unknown_model_is_404(served):
    client, _ = served
    r = client.post("/predictions/nope", data=PNG)
    assert r.status_code == 404 and r.json["error"]["code"] == "unknown_model"
    assert "cls" in r.json["error"]["message"]


def test_unknown_version_is_404(served):
    client, fake = served
    r = client.post("/predictions/cls/2.0", data=PNG)
    assert r.status_code == 404 and r.json["error"]["code"] == "unknown_model_version"
    assert "/predictions/cls/1.0" in r.json["error"]["message"]
    assert not fake.submitted


def test_get_is_405_json(served):
    client, _ = served
    r = client.get("/predictions/cls")
    assert r.status_code == 405 and r.json["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize(
    ("model", "data", "content_type", "status", "code"),
    [
        ("cls", b"", None, 400, "empty_body"),
        ("cls", b"{}", "application/json", 415, "unsupported_media_type"),
        ("cls", b"hello", "text/plain", 415, "unsupported_media_type"),
        ("cls", b"not an image", None, 422, "invalid_image"),
        ("i2i", b"not an image", "image/png", 422, "invalid_image"),
        ("t2t", PNG, "image/png", 415, "unsupported_media_type"),
        ("t2t", b"\xff", "text/plain", 422, "invalid_text"),
    ],
)
def test_bad_input(served, model, data, content_type, status, code):
    client, fake = served
    r = client.post(f"/predictions/{model}", data=data, content_type=content_type)
    assert r.status_code == status and r.json["error"]["code"] == code, r.json
    assert not fake.submitted


def test_tensor_model_is_refused():
    client, _ = client_for(models=("t",), tasks={"t": "Tensor"})
    r = client.post("/predictions/t", data=PNG)
    assert r.status_code == 422 and r.json["error"]["code"] == "task_mismatch"


def test_worker_error_keeps_its_status():
    def fail(model, item):
        return contract.error_result(errors.InvalidImage("image file is truncated").to_dict())

    client, _ = client_for(FakeDispatcher([proc("m")], handler=fail))
    r = client.post("/predictions/m", data=PNG)
    assert r.status_code == 422 and r.json["error"] == {
        "code": "invalid_image",
        "message": "image file is truncated",
    }


def test_no_worker_is_503():
    client, _ = client_for(FakeDispatcher([proc("m", ready=False)]))
    r = client.post("/predictions/m", data=PNG)
    assert r.status_code == 503 and r.json["error"]["code"] == "no_worker"


def test_labels_keep_their_order_when_not_sorted_by_name():
    def labels(model, item):
        out = canned_result(model, item)
        out["output"]["Classification"] = [
            {"label": "zebra", "probability": 0.6},
            {"label": "ant", "probability": 0.3},
        ]
        return out

    client, _ = client_for(FakeDispatcher([proc("m")], handler=labels))
    r = client.post("/predictions/m", data=PNG)
    assert list(json.loads(r.data)) == ["zebra", "ant"]


def test_documented_in_openapi():
    client, _ = client_for()
    doc = client.get("/openapi.json").json
    post = doc["paths"]["/predictions/{model}"]["post"]
    assert {"image/*", "application/octet-stream", "multipart/form-data"} <= set(
        post["requestBody"]["content"]
    )
    assert {"application/json", "image/png", "text/plain"} <= set(
        post["responses"]["200"]["content"]
    )
    assert "put" in doc["paths"]["/predictions/{model}/{version}"]
    assert doc["paths"]["/ping"]["get"]["responses"]["200"]["content"]["application/json"]
