"""Property tests of the request parsers: POST /inference's body (web.validation), torch-serving's
typed JSON (web.torchserving_json), the Open Inference Protocol's bodies with binary data
(web.oip_codec) and uploads (web.uploads), fed arbitrary JSON and near-valid variations of what
each takes. Only AutodepError subclasses (a 4xx) may come out, or werkzeug's 413 for a form over
the body limit, which the app's handler answers; whatever parses is well formed.
"""

from __future__ import annotations

import io
import json
import math
import struct
from typing import Any

import orjson
import pytest
from flask import Flask, request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.exceptions import RequestEntityTooLarge

from autodep_celery import errors, typed
from autodep_celery.config import ModelSettings
from autodep_celery.web import oip_codec, task_types, torchserving_json, uploads
from autodep_celery.web.validation import BODY_KEYS, parse_inference
from tests.unit.conftest import make_settings

FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
SETTINGS = make_settings(
    [
        "any",
        ModelSettings("tiny", "/tmp/tiny.pt", "ImageClassification", max_input_elements=64),
        ModelSettings("text", "/tmp/text.pt", "TextToText"),
        ModelSettings("multi", "/tmp/multi.pt", "Tensor", max_input_elements=64),
    ],
    max_image_pixels=4096,
)
NUMBERS = st.one_of(
    st.integers(-(2**70), 2**70), st.floats(width=64), st.booleans(), st.just(10**400)
)
JSON = st.recursive(
    st.none() | NUMBERS | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=16,
)
SHAPES = st.lists(st.integers(-1, 6), max_size=4) | st.lists(st.integers(0, 2**62), max_size=3)
DTYPE_NAMES = st.sampled_from((*typed.DTYPES, "float", "complex64", ""))


def refused(call: Any, *args: Any) -> bool:
    """True when `call(*args)` raised a 4xx AutodepError, False when it returned."""
    try:
        call(*args)
    except errors.AutodepError as exc:
        assert 400 <= exc.http_status < 500, (exc.http_status, exc.message)
        return True
    return False


# ---- torch-serving's typed JSON ------------------------------------------------------------
def typed_values(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Near-valid typed values: right tags with good or bad fields, nested lists and dicts."""
    tensor = st.lists(NUMBERS, max_size=8).flatmap(
        lambda values: st.fixed_dictionaries(
            {
                "type": st.just("tensor"),
                "shape": st.just([len(values)]) | st.just([1, len(values)]) | SHAPES,
                "value": st.just(values),
            },
            optional={"data_type": DTYPE_NAMES, "dtype": DTYPE_NAMES},
        )
    )
    return st.one_of(
        tensor,
        st.fixed_dictionaries(
            {"type": st.sampled_from(torchserving_json.INPUT_TAGS + ("bogus", 3))},
            optional={"value": inner, "shape": SHAPES, "data_type": DTYPE_NAMES},
        ),
        st.fixed_dictionaries(
            {"type": st.just("tensor_list"), "value": st.lists(tensor, max_size=3)}
        ),
        st.fixed_dictionaries(
            {"type": st.just("tensor_dict"), "value": st.dictionaries(st.text(max_size=4), tensor)}
        ),
        st.fixed_dictionaries(
            {"type": st.just("scalar"), "data_type": DTYPE_NAMES, "value": NUMBERS}
        ),
        st.fixed_dictionaries(
            {"type": st.just("generic_dict"), "value": st.dictionaries(st.text(max_size=4), inner)}
        ),
        st.lists(inner, max_size=3),
        st.none(),
    )


TYPED = st.recursive(st.none() | JSON, typed_values, max_leaves=8)


@FUZZ
@given(st.one_of(JSON, TYPED, st.lists(TYPED, max_size=4)))
def test_typed_json_is_parsed_or_refused(body: Any) -> None:
    refused(torchserving_json.parse_body, body)


@FUZZ
@given(
    st.sampled_from(tuple(typed.DTYPES)),
    st.lists(st.integers(0, 3), max_size=3),
    st.data(),
)
def test_valid_tensors_round_trip(dtype: str, shape: list[int], data: st.DataObject) -> None:
    d = typed.dtype(dtype)
    count = typed.numel(shape)
    if d.kind == "bool":
        element: st.SearchStrategy[Any] = st.booleans()
    elif d.kind == "int":
        low, high = d.bounds or (0, 0)
        element = st.integers(low, high)
    else:
        element = st.floats(-60000, 60000, width=16)  # exact in every float dtype
    values = data.draw(st.lists(element, min_size=count, max_size=count))
    body = {"type": "tensor", "shape": shape, "value": values, "data_type": dtype}
    (wire,) = torchserving_json.parse_body(body)
    assert torchserving_json.to_json(wire) == body


# ---- POST /inference -----------------------------------------------------------------------
_IMAGE = st.fixed_dictionaries(
    {"image": st.text(max_size=40) | st.just("iVBORw0KGgo=")},
    optional={"height": JSON, "width": JSON},
)
_DATA = st.dictionaries(
    st.sampled_from((*task_types.DATA_TAGS, "Audio")) | st.text(max_size=5),
    st.one_of(JSON, _IMAGE, TYPED, st.lists(TYPED, max_size=3)),
    max_size=2,
)
_TYPE = st.one_of(
    st.sampled_from(tuple(task_types.TASKS)) | st.text(max_size=8),
    st.dictionaries(
        st.sampled_from(tuple(task_types.TASKS)),
        st.none() | st.dictionaries(st.sampled_from(("top_n", "k")), JSON, max_size=2) | JSON,
        max_size=2,
    ),
)
BODIES = st.one_of(
    JSON,
    st.fixed_dictionaries(
        {},
        optional={
            "data": _DATA | JSON,
            "inference_type": _TYPE,
            "model": st.sampled_from([m.name for m in SETTINGS.models]) | JSON,
            "extra": JSON,
        },
    ),
)


@FUZZ
@given(BODIES)
def test_inference_bodies_are_parsed_or_refused(body: Any) -> None:
    try:
        parsed = parse_inference(body, SETTINGS, deadline=1e12)
    except errors.AutodepError as exc:
        assert 400 <= exc.http_status < 500, (exc.http_status, exc.message)
        return
    assert set(body) <= set(BODY_KEYS)
    item = parsed.item
    assert item["task"] == parsed.task.name and item["kind"] == parsed.task.data.kind
    orjson.dumps(item, option=orjson.OPT_PASSTHROUGH_DATACLASS)  # JSON-able but for bytes


# ---- the Open Inference Protocol -----------------------------------------------------------
@st.composite
def oip_bodies(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """An inference request: JSON inputs, some with binary data after the JSON, and a header
    length that is right, off, or garbage."""
    inputs, blobs = [], []
    for i in range(draw(st.integers(0, 3))):
        spec: dict[str, Any] = {
            "name": draw(st.sampled_from((f"in{i}", "x", "", 5))),
            "datatype": draw(st.sampled_from((*oip_codec.DATATYPES, "UINT32", None))),
            "shape": draw(SHAPES),
        }
        if draw(st.booleans()):
            blob = draw(st.binary(max_size=40))
            if draw(st.booleans()) and spec["datatype"] == oip_codec.BYTES:
                items = draw(st.lists(st.binary(max_size=6), max_size=4))
                blob = b"".join(struct.pack("<I", len(b)) + b for b in items)
            spec["parameters"] = {"binary_data_size": draw(st.sampled_from((len(blob), -1, 3)))}
            blobs.append(blob)
        else:
            spec["data"] = draw(
                JSON | st.lists(NUMBERS, max_size=8) | st.lists(st.text(), max_size=3)
            )
        inputs.append(spec)
    head = {"inputs": inputs}
    for key, values in (
        ("id", JSON),
        ("outputs", JSON | st.lists(st.fixed_dictionaries({"name": st.text(max_size=3)}))),
        (
            "parameters",
            JSON
            | st.dictionaries(
                st.sampled_from(("timeout", "binary_data_output", "sequence_id")), JSON
            ),
        ),
    ):
        if draw(st.booleans()):
            head[key] = draw(values)
    json_part = json.dumps(head).encode()  # big ints and NaN too: orjson refuses them
    header = draw(
        st.sampled_from((None, str(len(json_part)), str(len(json_part) + 1), "0", "-5", "x", ""))
    )
    return json_part + b"".join(blobs), header


@FUZZ
@given(st.one_of(oip_bodies(), st.tuples(st.binary(max_size=64), st.none() | st.text(max_size=5))))
def test_oip_bodies_are_parsed_or_refused(case: tuple[bytes, str | None]) -> None:
    body, header = case
    try:
        parsed = oip_codec.decode_request(body, header)
    except errors.AutodepError as exc:
        assert exc.http_status == 400, exc.message
        return
    for tensor in parsed.inputs:
        assert len(tensor.values()) == typed.numel(tensor.shape)
    chosen = [(t, bool(i % 2)) for i, t in enumerate(parsed.inputs)]
    payload, json_length = oip_codec.encode_response("m", "1", parsed.id, chosen)
    assert json_length is None or 0 < json_length <= len(payload)


# ---- uploads -------------------------------------------------------------------------------
APP = Flask("fuzz")
APP.config["MAX_CONTENT_LENGTH"] = 4096


@st.composite
def uploads_requests(draw: st.DrawFn) -> dict[str, Any]:
    """A POST the upload routes read: a raw body of some type, a real multipart form, or a
    multipart Content-Type over bytes that are no form."""
    kind = draw(st.sampled_from(("raw", "form", "fake-form")))
    if kind == "raw":
        media = draw(st.sampled_from(("", "image/png", "text/plain", "application/json", "x/y")))
        return {"data": draw(st.binary(max_size=200)), "content_type": media}
    if kind == "form":
        fields: dict[str, Any] = {}
        for _ in range(draw(st.integers(0, 20))):
            name = draw(st.sampled_from(("data", "body", "file", "x")))
            if draw(st.booleans()):
                payload = io.BytesIO(draw(st.binary(max_size=120)))
                fields[name] = (payload, draw(st.sampled_from(("a.png", "a.txt", ""))))
            else:
                fields[name] = draw(st.text(max_size=30))
        return {"data": fields, "content_type": "multipart/form-data"}
    boundary = draw(st.text("abcXYZ-_'\" ", max_size=12))
    return {
        "data": draw(st.binary(max_size=300)),
        "content_type": f"multipart/form-data; boundary={boundary}",
    }


@FUZZ
@given(uploads_requests(), st.booleans())
def test_uploads_are_read_or_refused(kwargs: dict[str, Any], as_text: bool) -> None:
    with APP.test_request_context("/upload", method="POST", **kwargs):
        try:
            upload = uploads.read(request)
            if as_text:
                text = uploads.check_text(upload)
                assert isinstance(text, str)
            else:
                assert uploads.check_image(upload, 4096) == upload.data
        except errors.AutodepError as exc:
            assert 400 <= exc.http_status < 500, (exc.http_status, exc.message)
        except RequestEntityTooLarge:
            pass  # the app's handler answers 413 in the JSON error shape


@pytest.mark.parametrize("body", [b"", b"{", b"[]", b'{"inputs": 1}'])
def test_oip_examples_are_refused(body: bytes) -> None:
    assert refused(oip_codec.decode_request, body, None)


# ---- what the properties found -------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_an_integer_past_any_float_is_a_typed_value_error(dtype: str) -> None:
    # array.array('f', [10**400]) raised OverflowError, which no caller expected
    with pytest.raises(typed.TypedValueError, match=f"does not fit {dtype}"):
        typed.pack(typed.dtype(dtype), [1, 10**400])
    body = {"type": "tensor", "shape": [1], "value": [10**400], "data_type": dtype}
    assert refused(torchserving_json.parse_body, body)


@pytest.mark.parametrize("value", [1e39, -1e39, 10**39, 3.5e38])
def test_a_finite_value_past_float32_is_refused_not_inf(value: float) -> None:
    # array.array('f', [1e39]) gives inf without a word: the model got inf for a typo
    with pytest.raises(typed.TypedValueError, match="does not fit float32"):
        typed.pack(typed.dtype("float32"), [0.5, value])
    body = {"type": "tensor", "shape": [1], "value": [value], "data_type": "float32"}
    assert refused(torchserving_json.parse_body, body)
    largest = typed.unpack(typed.dtype("float32"), typed.pack(typed.dtype("float32"), [3.4e38]))
    assert largest[0] == pytest.approx(3.4e38, rel=1e-6)


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_float32_packs_or_refuses_never_inf(value: float) -> None:
    try:
        packed = typed.pack(typed.dtype("float32"), [value])
    except typed.TypedValueError:
        assert abs(value) > 3.4028234663852886e38
        return
    assert math.isfinite(typed.unpack(typed.dtype("float32"), packed)[0])


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_an_integer_past_any_float_as_a_scalar_is_refused(dtype: str) -> None:
    # float(10**400) raised OverflowError: a 500 for a bad request (found by the property above)
    body = {"type": "scalar", "value": 10**400, "data_type": dtype}
    assert refused(torchserving_json.parse_body, body)
