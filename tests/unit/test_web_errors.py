"""Every bad request to the web tier gets its own 4xx code and a message that says what to fix;
every error body, on every route, is {"error": {"code", "message"}} JSON.
"""

from __future__ import annotations

import base64
import io

import orjson
import pytest
from PIL import Image

from autodep_celery.web.testing import png_bytes
from tests.unit.conftest import client_for

pytestmark = pytest.mark.unit

B64 = base64.b64encode(png_bytes(4, 3)).decode()
IMG = {"B64Image": {"image": B64}}
CLS = {"ImageClassification": {"top_n": 2}}


def check(response, status, code, *words):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.json
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    for word in words:
        assert word in body["error"]["message"]
    return body["error"]["message"]


def post_json(client, body):
    return client.post("/inference", data=orjson.dumps(body), content_type="application/json")


def big_png_b64(width, height):
    buf = io.BytesIO()
    Image.new("L", (width, height)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.mark.parametrize(
    ("body", "status", "code", "words"),
    [
        ([1, 2], 400, "invalid_body", ["JSON object"]),
        ("just a string", 400, "invalid_body", []),
        ({"inference_type": CLS}, 422, "missing_field", ["data"]),
        ({"data": IMG}, 422, "missing_field", ["inference_type"]),
        ({"data": IMG, "inference_type": CLS, "modle": "m"}, 422, "unknown_field", ["model"]),
        ({"data": {"Jpeg": "x"}, "inference_type": CLS}, 422, "unknown_data_type", ["B64Image"]),
        ({"data": "x", "inference_type": CLS}, 422, "invalid_data", []),
        ({"data": {"Text": "a", "B64Image": {}}, "inference_type": CLS}, 422, "invalid_data", []),
        ({"data": {"Text": 5}, "inference_type": "TextToText"}, 422, "invalid_text", []),
        (
            {"data": IMG, "inference_type": "Segmentation"},
            422,
            "unknown_inference_type",
            ["ImageToImage"],
        ),
        (
            {"data": IMG, "inference_type": {"ImageClassification": 3}},
            422,
            "invalid_inference_type",
            [],
        ),
        ({"data": IMG, "inference_type": "TextToText"}, 422, "data_type_mismatch", ["Text"]),
        (
            {"data": {"Text": "x"}, "inference_type": "ImageToImage"},
            422,
            "data_type_mismatch",
            ["TextToText"],
        ),
        ({"data": {"B64Image": "abc"}, "inference_type": CLS}, 422, "invalid_data", []),
        (
            {"data": {"B64Image": {"height": 3}}, "inference_type": CLS},
            422,
            "missing_field",
            ["image"],
        ),
        (
            {"data": {"B64Image": {"image": "!!notbase64!!"}}, "inference_type": CLS},
            422,
            "invalid_base64",
            ["base64"],
        ),
        (
            {"data": {"B64Image": {"image": B64[:-2]}}, "inference_type": CLS},
            422,
            "invalid_base64",
            [],
        ),
        ({"data": {"B64Image": {"image": 12}}, "inference_type": CLS}, 422, "invalid_base64", []),
        ({"data": {"B64Image": {"image": ""}}, "inference_type": CLS}, 422, "invalid_image", []),
        (
            {
                "data": {
                    "B64Image": {"image": base64.b64encode(b"hello world, no image").decode()}
                },
                "inference_type": CLS,
            },
            422,
            "invalid_image",
            ["PNG"],
        ),
        (
            {"data": {"B64Image": {"image": B64, "height": 5, "width": 4}}, "inference_type": CLS},
            422,
            "image_size_mismatch",
            ["4x3"],
        ),
        (
            {"data": {"B64Image": {"image": B64, "height": 0}}, "inference_type": CLS},
            422,
            "invalid_image_size",
            [],
        ),
        (
            {"data": {"B64Image": {"image": B64, "width": "4"}}, "inference_type": CLS},
            422,
            "invalid_image_size",
            [],
        ),
        ({"data": IMG, "inference_type": CLS, "model": "nope"}, 404, "unknown_model", ["m"]),
        ({"data": IMG, "inference_type": CLS, "model": 3}, 422, "invalid_model", []),
    ],
)
def test_bad_bodies(body, status, code, words):
    client, fake = client_for()
    check(post_json(client, body), status, code, *words)
    assert fake.submitted == []


@pytest.mark.parametrize("top_n", [0, -1, "5", True, 2.5])
def test_bad_top_n(top_n):
    client, _ = client_for()
    body = {"data": IMG, "inference_type": {"ImageClassification": {"top_n": top_n}}}
    check(post_json(client, body), 422, "invalid_top_n", "top_n")


def test_invalid_json():
    client, _ = client_for()
    r = client.post("/inference", data=b'{"data": ', content_type="application/json")
    check(r, 400, "invalid_json", "JSON")


def test_model_omitted_with_two_models_lists_names():
    client, _ = client_for(models=("a", "b"))
    check(post_json(client, {"data": IMG, "inference_type": CLS}), 400, "model_required", "a", "b")


def test_model_task_mismatch():
    client, _ = client_for(tasks={"m": "TextToText"})
    check(
        post_json(client, {"data": IMG, "inference_type": CLS}), 422, "task_mismatch", "TextToText"
    )


def test_pixel_limit_is_413():
    client, _ = client_for(max_image_pixels=100)
    body = {"data": {"B64Image": {"image": big_png_b64(20, 10)}}, "inference_type": CLS}
    check(post_json(client, body), 413, "image_too_large", "20x10", "100")


def test_body_over_max_body_bytes_is_413():
    client, _ = client_for(max_body_bytes=1000)
    body = {"data": {"Text": "x" * 5000}, "inference_type": "TextToText"}
    check(post_json(client, body), 413, "body_too_large", "1000")


@pytest.mark.parametrize(
    "content_type",
    ["multipart/form-data; boundary=x", "image/png", "application/x-www-form-urlencoded"],
)
def test_non_json_content_type_is_415(content_type):
    client, _ = client_for()
    r = client.post("/inference", data=b"abc", content_type=content_type)
    check(r, 415, "unsupported_media_type", "JSON")


def test_unknown_route_is_json_404():
    client, _ = client_for()
    check(client.get("/nope"), 404, "not_found", "/openapi.json")


def test_wrong_method_is_json_405_with_allow():
    client, _ = client_for()
    r = client.get("/inference")
    check(r, 405, "method_not_allowed", "POST")
    assert "POST" in r.headers["Allow"]
