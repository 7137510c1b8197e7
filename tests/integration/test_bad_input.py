"""Bad input gets its own 4xx and a message that says what to fix; neighbours are unaffected."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from PIL import Image

from tests.integration.conftest import Web
from tests.integration.support import b64, image_bytes

GOOD_IMAGE = b64(image_bytes(64, 64, seed=9))


def cls_body(
    image: str = GOOD_IMAGE, top_n: object = 3, model: str = "resnet18", **extra: object
) -> dict:
    return {
        "data": {"B64Image": {"image": image, "height": None, "width": None, **extra}},
        "inference_type": {"ImageClassification": {"top_n": top_n}},
        "model": model,
    }


def huge_png() -> str:
    img = Image.new("1", (7000, 7000))  # 49 Mpx > the 40 Mpx limit, a few KB as PNG
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return b64(buf.getvalue())


# (name, request kwargs, expected status, expected code or None)
CASES: list[tuple[str, dict, int, str | None]] = [
    (
        "invalid json",
        {"data": b"{not json", "headers": {"Content-Type": "application/json"}},
        400,
        "invalid_json",
    ),
    ("body not an object", {"json": [1, 2, 3]}, None, None),
    ("missing data", {"json": {"inference_type": "TextToText", "model": "echo"}}, None, None),
    (
        "unknown data tag",
        {"json": {"data": {"Audio": "x"}, "inference_type": "TextToText", "model": "echo"}},
        None,
        None,
    ),
    (
        "unknown inference type",
        {"json": {"data": {"Text": "x"}, "inference_type": "Detection", "model": "echo"}},
        None,
        None,
    ),
    (
        "text not a string",
        {"json": {"data": {"Text": 5}, "inference_type": "TextToText", "model": "echo"}},
        None,
        None,
    ),
    ("bad base64", {"json": cls_body(image="!!! this is not base64 !!!")}, None, None),
    (
        "not an image",
        {"json": cls_body(image=b64(b"hello, I am not a picture" * 10))},
        422,
        "invalid_image",
    ),
    (
        "truncated image",
        {"json": cls_body(image=b64(image_bytes(64, 64, seed=1)[:200]))},
        422,
        None,
    ),
    ("top_n zero", {"json": cls_body(top_n=0)}, 422, None),
    ("top_n negative", {"json": cls_body(top_n=-1)}, 422, None),
    ("top_n string", {"json": cls_body(top_n="5")}, 422, None),
    ("top_n bool", {"json": cls_body(top_n=True)}, 422, None),
    ("top_n above class count", {"json": cls_body(top_n=1001)}, 422, None),
    ("top_n above small class count", {"json": cls_body(top_n=11, model="tiny")}, 422, None),
    ("unknown model", {"json": cls_body(model="no-such-model")}, 404, "unknown_model"),
    ("height mismatch", {"json": cls_body(height=10, width=64)}, 422, None),
    (
        "image for a text model",
        {
            "json": {
                "data": {"B64Image": {"image": GOOD_IMAGE}},
                "inference_type": "TextToText",
                "model": "echo",
            }
        },
        422,
        None,
    ),
    (
        "text for an image model",
        {
            "json": {
                "data": {"Text": "x"},
                "inference_type": {"ImageClassification": {"top_n": 1}},
                "model": "resnet18",
            }
        },
        422,
        None,
    ),
    (
        "task the model does not do",
        {
            "json": {
                "data": {"B64Image": {"image": GOOD_IMAGE}},
                "inference_type": "ImageToImage",
                "model": "resnet18",
            }
        },
        422,
        None,
    ),
    ("multipart", {"files": {"image": ("x.png", b"abc")}}, 415, None),
]


def check_error(resp: requests.Response, status: int | None, code: str | None) -> None:
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.text)
    if status is not None:
        assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}
    assert isinstance(body["error"]["code"], str) and body["error"]["code"]
    assert len(body["error"]["message"]) > 10
    if code is not None:
        assert body["error"]["code"] == code
    assert "Traceback" not in resp.text


@pytest.mark.parametrize(("name", "kwargs", "status", "code"), CASES, ids=[c[0] for c in CASES])
def test_bad_input(web: Web, name: str, kwargs: dict, status: int | None, code: str | None) -> None:
    if status is None:
        status = 422 if name not in ("body not an object",) else None
    resp = requests.post(web.url + "/inference", timeout=60, **kwargs)
    check_error(resp, status, code)


def test_image_over_pixel_limit(web: Web) -> None:
    resp = web.post("/inference", json=cls_body(image=huge_png()))
    check_error(resp, 413, "image_too_large")


def test_body_over_size_limit(web: Web) -> None:
    limit = web.settings.web.max_body_bytes
    resp = requests.post(
        web.url + "/inference",
        data=b"x" * (limit + 1),
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    check_error(resp, 413, None)


def test_unknown_route_and_method(web: Web) -> None:
    check_error(web.get("/no-such-route"), 404, None)
    check_error(web.get("/inference"), 405, None)


def test_bad_requests_do_not_disturb_good_ones(web: Web) -> None:
    good = cls_body(image=GOOD_IMAGE, top_n=2)
    bad = [c[1] for c in CASES] * 2
    with ThreadPoolExecutor(16) as pool:
        good_futures = [pool.submit(web.post, "/inference", good) for _ in range(24)]
        bad_futures = [
            pool.submit(requests.post, web.url + "/inference", timeout=60, **kw) for kw in bad
        ]
        for f in bad_futures:
            assert 400 <= f.result().status_code < 500
        first = good_futures[0].result().json()
        for f in good_futures:
            resp = f.result()
            assert resp.status_code == 200, resp.text
            got = resp.json()[0]["Classification"]
            assert [e["label"] for e in got] == [e["label"] for e in first[0]["Classification"]]
            for e, f0 in zip(got, first[0]["Classification"], strict=True):
                assert e["probability"] == pytest.approx(f0["probability"], abs=1e-5)
    # and the server still answers afterwards
    assert web.get("/health").status_code == 200
