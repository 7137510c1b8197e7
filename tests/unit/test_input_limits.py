"""Per-model input bounds (autodep_celery.input_limits): the defaults, config validation, and the
web's check on every route that takes an image or tensors (413 before anything is queued)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from autodep_celery import config, errors, input_limits, typed
from autodep_celery.config import ModelSettings
from autodep_celery.web.testing import FakeDispatcher, png_bytes, proc
from tests.unit.conftest import client_for

pytestmark = pytest.mark.unit

DEFAULT = input_limits.DEFAULT_MAX_INPUT_PIXELS


def model(**kw: Any) -> ModelSettings:
    return ModelSettings(kw.pop("name", "m"), "/tmp/m.pt", **kw)


# ---- the bounds -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kw", "pixels", "elements"),
    [
        ({}, 2048 * 2048, 3 * 2048 * 2048),  # no resize: the default bound
        ({"resize": (224, 224)}, None, 3 * 2048 * 2048),  # resized first: only the global one
        ({"max_input_pixels": 100}, 100, 300),
        ({"resize": (8, 8), "max_input_pixels": 100}, 100, 300),
        ({"max_input_elements": 7}, 2048 * 2048, 7),
    ],
)
def test_bounds_and_their_defaults(kw: dict[str, Any], pixels: int | None, elements: int) -> None:
    m = model(**kw)
    assert input_limits.max_input_pixels(m) == pixels
    assert input_limits.max_input_elements(m) == elements


def test_config_reads_and_validates_the_bounds() -> None:
    entry = {"name": "m", "path": "m.pt", "max_input_pixels": 1000, "max_input_elements": 50}
    m = config.from_dict({"models": [entry]}).models[0]
    assert (m.max_input_pixels, m.max_input_elements) == (1000, 50)
    for key, bad in (("max_input_pixels", 0), ("max_input_elements", -1)):
        with pytest.raises(config.ConfigError, match=rf"models\[0\] \(m\)\.{key} \({bad}\)"):
            config.from_dict({"models": [{"name": "m", "path": "m.pt", key: bad}]})
    with pytest.raises(config.ConfigError, match="whole number"):
        config.from_dict({"models": [{"name": "m", "path": "m.pt", "max_input_pixels": 1.5}]})


def test_image_checks_name_the_limit_and_the_fix() -> None:
    input_limits.check_image(2048, 2048, 40_000_000, model())  # exactly the default: fine
    with pytest.raises(errors.InputTooLarge) as info:
        input_limits.check_image(2049, 2048, 40_000_000, model(name="resnet"))
    e = info.value
    assert (e.http_status, e.code) == (413, "input_too_large")
    for part in ("2049x2048 = 4196352 pixels", "model resnet has no resize", str(DEFAULT),
                 "set resize = [height, width] or a larger max_input_pixels"):  # fmt: skip
        assert part in e.message, e.message
    with pytest.raises(errors.InputTooLarge, match="its max_input_pixels.*raise max_input_pix"):
        input_limits.check_image(20, 20, 40_000_000, model(resize=(8, 8), max_input_pixels=100))
    input_limits.check_image(5000, 5000, 40_000_000, model(resize=(8, 8)))  # resized: no bound
    with pytest.raises(errors.ImageTooLarge, match=r"web\.max_image_pixels") as glob:
        input_limits.check_image(7000, 7000, 40_000_000, model(resize=(8, 8)))
    assert glob.value.code == "image_too_large"  # the global bound keeps its own code


def test_tensor_elements_are_counted_through_lists_and_dicts() -> None:
    t = typed.tensor("float32", [2, 3], bytes(24))
    u = typed.tensor("uint8", [4], bytes(4))
    value = [t, [u, 3, "s", None], typed.make_dict([("a", t), ("b", [u])])]
    assert typed.count_elements(value) == 6 + 4 + 6 + 4
    assert typed.count_elements({"$": "tensor", "shape": "bad"}) == 0
    deep: list[Any] = [u]
    for _ in range(10_000):  # no recursion limit: an item sent past the web cannot crash it
        deep = [deep]
    assert typed.count_elements(deep) == 4
    input_limits.check_tensor_args(value, model(max_input_elements=20))
    with pytest.raises(errors.InputTooLarge, match="hold 20 elements; model m takes at most 19"):
        input_limits.check_tensor_args(value, model(max_input_elements=19))


# ---- the web refuses before queueing --------------------------------------------------------
SMALL = model(name="small", task="ImageClassification", max_input_pixels=100)
"""10x10 is the largest image it takes."""
RESIZED = model(name="resized", task="ImageClassification", resize=(8, 8))
TENSORS = model(name="tensors", task="Tensor", max_input_elements=4)


@pytest.fixture
def web() -> tuple[Any, FakeDispatcher]:
    models = (SMALL, RESIZED, TENSORS)
    fake = FakeDispatcher([proc(m.name, pid=i) for i, m in enumerate(models)])
    return client_for(fake, models=models)


def b64_body(name: str, image: bytes) -> dict[str, Any]:
    return {
        "model": name,
        "data": {"B64Image": {"image": base64.b64encode(image).decode()}},
        "inference_type": "ImageClassification",
    }


def refused(r: Any) -> dict[str, Any]:
    assert r.status_code == 413, r.data
    body = r.get_json()
    error = body["error"]
    return error if isinstance(error, dict) else {"message": error}


@pytest.mark.parametrize("path", ["/inference", "/jobs"])
def test_b64_image_over_the_models_bound_is_413_and_never_queued(web: Any, path: str) -> None:
    client, fake = web
    error = refused(client.post(path, json=b64_body("small", png_bytes(11, 10))))
    assert error["code"] == "input_too_large"
    assert "model small takes at most 100 pixels" in error["message"]
    assert fake.submitted == []
    assert client.post("/inference", json=b64_body("small", png_bytes(10, 10))).status_code == 200


def test_uploads_over_the_models_bound_are_413(web: Any) -> None:
    client, fake = web
    big = png_bytes(11, 10)
    for url in ("/predictions/small", "/classify?model=small"):
        error = refused(client.post(url, data=big, content_type="image/png"))
        assert "model small takes at most 100 pixels" in error["message"], url
    assert fake.submitted == []
    r = client.post("/predictions/resized", data=png_bytes(300, 300), content_type="image/png")
    assert r.status_code == 200  # resized in the worker: only web.max_image_pixels applies


def test_default_bound_applies_to_a_model_without_resize() -> None:
    client, fake = client_for(models=(model(name="plain", task="ImageClassification"),))
    big = png_bytes(2049, 2048)
    error = refused(client.post("/inference", json=b64_body("plain", big)))
    assert "2048x2048, the default max_input_pixels" in error["message"]
    assert fake.submitted == []


def tensor_json(n: int) -> dict[str, Any]:
    return {"type": "tensor", "shape": [1, n], "value": [1.0] * n}


def test_tensor_requests_over_the_models_bound_are_413(web: Any) -> None:
    client, fake = web
    over, fits = tensor_json(5), tensor_json(4)
    r = client.post("/serve?servable_identifier=tensors", json=[over])
    assert refused(r)["code"] == "input_too_large"
    body = {"model": "tensors", "data": {"Tensor": [over]}, "inference_type": "Tensor"}
    assert refused(client.post("/inference", json=body))["code"] == "input_too_large"
    oip = {"inputs": [{"name": "x", "shape": [1, 5], "datatype": "FP32", "data": [1.0] * 5}]}
    error = refused(client.post("/v2/models/tensors/infer", json=oip))
    assert "takes at most 4" in error["message"]
    assert fake.submitted == []
    assert client.post("/serve?servable_identifier=tensors", json=[fits]).status_code != 413
