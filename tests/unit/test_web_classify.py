"""POST /classify (the Drogon + libtorch server's API) over a fake dispatcher: the answer, how
the model is chosen, and the errors with Drogon's "status": "failed" beside ours."""

from __future__ import annotations

import io

import pytest

from autodep_celery.web.testing import png_bytes
from tests.unit.conftest import client_for

pytestmark = pytest.mark.unit

PNG = png_bytes(8, 6)
SUCCESS = {"status": "success", "prediction": {"label": "class0", "confidence": 0.5}}


def test_raw_body_answers_top1():
    client, fake = client_for()
    r = client.post("/classify", data=PNG, content_type="image/png")
    assert r.status_code == 200 and r.json == SUCCESS
    model, item = fake.submitted[-1]
    assert model == "m" and item["task"] == "ImageClassification" and item["top_n"] == 5


def test_multipart_image_field_as_drogon_clients_send():
    client, fake = client_for()
    r = client.post("/classify", data={"image": (io.BytesIO(PNG), "cat.png")})
    assert r.status_code == 200 and r.json == SUCCESS
    assert fake.submitted[-1][1]["image"] == PNG


def test_query_parameter_chooses_the_model():
    client, fake = client_for(models=("a", "b"))
    assert client.post("/classify?model=b", data=PNG).status_code == 200
    assert fake.submitted[-1][0] == "b"


def test_the_only_configured_classifier_is_the_default():
    tasks = {"seg": "ImageToImage", "cls": "ImageClassification"}
    client, fake = client_for(models=("seg", "cls", "untyped"), tasks=tasks)
    assert client.post("/classify", data=PNG).status_code == 200
    assert fake.submitted[-1][0] == "cls"


def test_several_candidates_is_400_listing_them():
    tasks = {"seg": "ImageToImage"}
    client, fake = client_for(models=("seg", "a", "b"), tasks=tasks)
    r = client.post("/classify", data=PNG)
    assert r.status_code == 400 and r.json["error"]["code"] == "model_required"
    assert r.json["error"]["message"].endswith("?model=<name>: a, b")
    assert r.json["status"] == "failed" and r.json["message"] == r.json["error"]["message"]
    assert not fake.submitted


def test_unknown_model_is_404():
    client, _ = client_for()
    r = client.post("/classify?model=zz", data=PNG)
    assert r.status_code == 404 and r.json["error"]["code"] == "unknown_model"
    assert r.json["status"] == "failed"


@pytest.mark.parametrize("query", ["?model=seg", ""])
def test_model_of_another_task_is_422(query):
    client, _ = client_for(models=("seg",), tasks={"seg": "ImageToImage"})
    r = client.post(f"/classify{query}", data=PNG)
    assert r.status_code == 422 and r.json["error"]["code"] == "task_mismatch"


@pytest.mark.parametrize(
    ("kw", "status", "code"),
    [
        ({"data": b""}, 400, "empty_body"),
        ({"data": {"note": "x"}, "content_type": "multipart/form-data"}, 400, "missing_file"),
        (
            {"data": {"a": (io.BytesIO(PNG), "a.png"), "b": (io.BytesIO(PNG), "b.png")}},
            400,
            "too_many_files",
        ),
        ({"data": b"{}", "content_type": "application/json"}, 415, "unsupported_media_type"),
        ({"data": b"garbage"}, 422, "invalid_image"),
    ],
)
def test_errors_are_json_with_drogon_status(kw, status, code):
    client, fake = client_for()
    r = client.post("/classify", **kw)
    assert r.status_code == status and r.json["error"]["code"] == code
    assert r.json["status"] == "failed" and r.json["message"] == r.json["error"]["message"]
    assert not fake.submitted


def test_documented_with_its_query_parameter():
    client, _ = client_for()
    op = client.get("/openapi.json").json["paths"]["/classify"]["post"]
    assert any(p.get("name") == "model" and p["in"] == "query" for p in op["parameters"])
    assert "multipart/form-data" in op["requestBody"]["content"]
