"""Per-model input bounds on the real stack: an image larger than a model without resize takes
is refused at once by the web (413, never queued) while that model's ordinary requests keep
succeeding, and a batch sent straight to the worker (bypassing the web) fails only its
oversized item."""

from __future__ import annotations

import io
import time
from concurrent.futures import ThreadPoolExecutor

import requests
from PIL import Image

from autodep_celery import contract, input_limits
from autodep_celery.celery_app import make_celery
from tests.integration.conftest import Stack, Web
from tests.integration.support import b64, image_bytes, tiny_body

SIDE = 2049
"""Just over the default bound of a model without resize (2048 x 2048)."""


def oversized_png(side: int = SIDE) -> bytes:
    buf = io.BytesIO()
    Image.new("1", (side, side)).save(buf, format="PNG")  # a few hundred bytes
    return buf.getvalue()


def oversized_body() -> dict:
    body = tiny_body()
    body["data"]["B64Image"]["image"] = b64(oversized_png())
    return body


def test_oversized_image_is_refused_at_once_while_the_model_keeps_serving(web: Web) -> None:
    def ordinary(seed: int) -> int:
        return web.post("/inference", json=tiny_body(seed)).status_code

    def oversized(_: int) -> tuple[int, dict, float]:
        started = time.monotonic()
        r = web.post("/inference", json=oversized_body())
        return r.status_code, r.json(), time.monotonic() - started

    with ThreadPoolExecutor(8) as pool:
        bad = pool.map(oversized, range(20))
        good = pool.map(ordinary, range(40))
        refused, served = list(bad), list(good)
    assert served == [200] * 40, served
    for status, body, elapsed_s in refused:
        assert status == 413, body
        error = body["error"]
        assert error["code"] == "input_too_large"
        assert "model tiny has no resize" in error["message"]
        assert str(input_limits.DEFAULT_MAX_INPUT_PIXELS) in error["message"]
        assert "max_input_pixels" in error["message"]
        # answered by the web from the header: well before any deadline
        assert elapsed_s < web.settings.web.request_timeout_s / 3, elapsed_s

    upload = requests.post(
        web.url + "/predictions/tiny",
        data=oversized_png(),
        headers={"Content-Type": "image/png"},
        timeout=30,
    )
    assert upload.status_code == 413 and upload.json()["error"]["code"] == "input_too_large"


def test_a_batch_sent_past_the_web_fails_only_its_oversized_item(stack: Stack) -> None:
    deadline = time.time() + 60
    items = [
        contract.image_item("ImageClassification", image_bytes(16, 16), deadline, 1),
        contract.image_item("ImageClassification", oversized_png(3000), deadline, 1),
        contract.image_item("ImageClassification", image_bytes(16, 16, seed=1), deadline, 1),
    ]
    app = make_celery(stack.settings)
    try:
        result = app.send_task(
            contract.INFER_TASK,
            args=[contract.make_batch("tiny", "direct-1", "", items)],
            queue="autodep.tiny",
            routing_key="autodep.tiny",
        )
        reply = result.get(timeout=60)
    finally:
        app.close()
    first, big, last = reply["results"]
    assert first["ok"] and last["ok"], reply
    assert big["error"]["code"] == "input_too_large" and big["error"]["status"] == 413
