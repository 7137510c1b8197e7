"""The /v2 routes (Open Inference Protocol) over a FakeDispatcher: health, metadata, readiness,
inference with bodies built and responses parsed by tritonclient's own code (binary and JSON,
compressed or not), the Tensor item they submit, and errors as ``{"error": "<message>"}``."""

from __future__ import annotations

import gzip
import time
import zlib
from typing import Any

import numpy as np
import orjson
import pytest
import tritonclient.http as httpclient
from tritonclient.http import InferenceServerClient

import autodep_celery
from autodep_celery import contract, errors, typed
from autodep_celery.contract import Item
from autodep_celery.web.testing import FakeDispatcher, proc
from tests.unit.conftest import client_for
from tests.unit.test_oip_signature import MULTI, TINY

pytestmark = pytest.mark.unit

NUMPY = {d.oip: np.dtype(d.name).newbyteorder("<") for d in typed.DTYPES.values()}


def worker(model: str, item: Item) -> dict[str, Any]:
    """What a worker answers: `m` doubles its tensor (as float64 for float inputs), `multi`
    returns {"k": [list, str, int]}."""
    args = item["args"]  # type: ignore[typeddict-item]  # the Tensor type's field
    if model == "multi":
        out = typed.make_dict([("k", [args[0], args[4], args[3]])])
        return contract.ok_result({"Tensor": out}, 10)
    x = args[0]
    dt = typed.dtype(x["dtype"])
    values = [v * 2 if dt.kind != "bool" else v for v in typed.values_of(x)]
    return contract.ok_result({"Tensor": typed.tensor_from_values(dt, x["shape"], values)}, 10)


def client(models: tuple[str, ...] = ("m", "multi"), schemas: bool = True, **kw: Any) -> tuple:
    fake = FakeDispatcher(
        [proc(m, pid=i) for i, m in enumerate(models)], handler=worker, models=list(models)
    )
    if schemas:
        fake.status_view.schemas.update(m=TINY, multi=MULTI)
    return client_for(fake, models=models, **kw)


def infer(c: Any, inputs: list, outputs: list | None = None, model: str = "m", **kw: Any) -> Any:
    body, length = InferenceServerClient.generate_request_body(inputs, outputs=outputs)
    headers = kw.pop("headers", {})
    if length is not None:
        headers["Inference-Header-Content-Length"] = str(length)
    return c.post(f"/v2/models/{model}/infer", data=body, headers=headers, **kw)


def parsed(r: Any) -> Any:
    assert r.status_code == 200, r.data
    return InferenceServerClient.parse_response_body(
        r.data,
        header_length=r.headers.get("Inference-Header-Content-Length"),
        content_encoding=r.headers.get("Content-Encoding"),
    )


def tensor(name: str, array: np.ndarray, binary: bool = True) -> httpclient.InferInput:
    datatype = (
        "BYTES"
        if array.dtype == object
        else next(k for k, v in NUMPY.items() if v == array.dtype.newbyteorder("<"))
    )
    t = httpclient.InferInput(name, list(array.shape), datatype)
    return t.set_data_from_numpy(array, binary_data=binary)


def test_server_metadata_health_and_readiness() -> None:
    c, fake = client()
    assert c.get("/v2").json == {
        "name": "autodep-celery",
        "version": autodep_celery.__version__,
        "extensions": ["binary_tensor_data"],
    }
    assert c.get("/v2/health/live").json == {"live": True}
    assert c.get("/v2/health/ready").json == {"ready": True}
    assert c.get("/v2/models/m/ready").json == {"name": "m", "ready": True}
    assert c.get("/v2/models/m/versions/1/ready").status_code == 200
    fake.status_view.view = [proc("m")]  # nothing serves multi
    r = c.get("/v2/health/ready")
    assert (
        r.status_code == 503 and r.json["error"] == "not ready: no ready worker for model(s) multi"
    )
    r = c.get("/v2/models/multi/ready")
    assert r.status_code == 503 and "multi is not ready" in r.json["error"]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/v2/models/nope", "unknown model 'nope'; served models: m, multi"),
        ("/v2/models/nope/ready", "unknown model 'nope'"),
        ("/v2/models/m/versions/2", "model m has no version '2'; it has version 1"),
        ("/v2/models/m/versions/2/ready", "no version '2'"),
        ("/v2/models/m/stats", "no such route"),
    ],
)
def test_unknown_model_version_or_route_is_404_in_the_protocols_form(
    path: str, message: str
) -> None:
    r = client()[0].get(path)
    assert r.status_code == 404 and isinstance(r.json["error"], str), r.json
    assert message in r.json["error"]


def test_wrong_method_is_405_in_the_protocols_form() -> None:
    r = client()[0].get("/v2/models/m/infer")
    assert r.status_code == 405 and r.json == {
        "error": "GET is not allowed on /v2/models/m/infer; use OPTIONS, POST"
    }


def test_model_metadata_from_the_published_signature() -> None:
    c, _ = client()
    for path in ("/v2/models/multi", "/v2/models/multi/versions/1"):
        meta = c.get(path).json
        assert meta["name"] == "multi" and meta["versions"] == ["1"]
        assert meta["platform"] == "pytorch_torchscript"
        assert [i["name"] for i in meta["inputs"]][1:] == [
            "single_tensor",
            "tensor_dict.<key>",
            "an_integer",
            "a_string",
        ]
        assert meta["parameters"]["signature"].startswith("forward(tensor_list: List[Tensor]")


def test_model_metadata_before_any_worker_loaded_it() -> None:
    meta = client(schemas=False)[0].get("/v2/models/m").json
    assert meta["inputs"] == [] and meta["outputs"] == []
    assert "no worker has loaded this model yet" in meta["parameters"]["note"]


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("dtype", [k for k in NUMPY if k != "BOOL"])
def test_infer_round_trips_every_numeric_datatype(binary: bool, dtype: str) -> None:
    c, fake = client()
    x = np.arange(6).reshape(2, 3).astype(NUMPY[dtype])
    out = [httpclient.InferRequestedOutput("OUTPUT__0", binary_data=binary)]
    result = parsed(infer(c, [tensor("x", x, binary)], out))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT__0"), x * 2)
    assert result.as_numpy("OUTPUT__0").dtype == x.dtype
    model, item = fake.submitted[0]
    assert model == "m" and item["kind"] == "args" and item["task"] == "Tensor"
    assert item["deadline"] > time.time() and item["args"][0]["shape"] == [2, 3]  # type: ignore[typeddict-item]


def test_infer_with_client_defaults_is_binary_both_ways() -> None:
    c, _ = client()
    x = np.array([[True, False]])
    r = infer(c, [tensor("INPUT__0", x)])
    assert r.mimetype == "application/octet-stream"
    head = orjson.loads(r.data[: int(r.headers["Inference-Header-Content-Length"])])
    assert head == {
        "model_name": "m",
        "model_version": "1",
        "outputs": [
            {
                "name": "OUTPUT__0",
                "datatype": "BOOL",
                "shape": [1, 2],
                "parameters": {"binary_data_size": 2},
            }
        ],
    }
    np.testing.assert_array_equal(parsed(r).as_numpy("OUTPUT__0"), x)


def test_infer_several_inputs_bytes_and_dotted_names() -> None:
    c, fake = client()
    inputs = [
        tensor("tensor_list.0", np.ones((2,), np.float32)),
        tensor("tensor_list.1", np.zeros((1, 2), np.float32), binary=False),
        tensor("single_tensor", np.ones((1,), np.float32)),
        tensor("tensor_dict.a", np.full((2,), 3, np.float32)),
        tensor("an_integer", np.array([5], np.int64), binary=False),
        tensor("a_string", np.array(["héllo"], dtype=object)),
    ]
    result = parsed(infer(c, inputs, model="multi"))
    assert result.as_numpy("k.1").tolist() == ["héllo".encode()]
    assert result.as_numpy("k.2").tolist() == [5]
    np.testing.assert_array_equal(result.as_numpy("k.0.1"), np.zeros((1, 2), np.float32))
    args = fake.submitted[0][1]["args"]  # type: ignore[typeddict-item]
    assert args[2] == typed.make_dict([("a", args[2]["items"][0][1])]) and args[3:] == [5, "héllo"]
    json_out = [httpclient.InferRequestedOutput("k.1", binary_data=False)]
    only = orjson.loads(infer(c, inputs, json_out, model="multi").data)
    assert only["outputs"] == [
        {"name": "k.1", "datatype": "BYTES", "shape": [1], "data": ["héllo"]}
    ]


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_request_and_response(encoding: str) -> None:
    c, _ = client()
    x = np.arange(600, dtype=np.float32)
    body, length = InferenceServerClient.generate_request_body([tensor("x", x)])
    packed = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)
    r = c.post(
        "/v2/models/m/infer",
        data=packed,
        headers={
            "Content-Encoding": encoding,
            "Accept-Encoding": encoding,
            "Inference-Header-Content-Length": str(length),
        },
    )
    assert r.headers["Content-Encoding"] == encoding
    np.testing.assert_array_equal(parsed(r).as_numpy("OUTPUT__0"), x * 2)


@pytest.mark.parametrize(
    ("headers", "data", "status", "message"),
    [
        ({"Content-Encoding": "br"}, b"x", 415, "Content-Encoding 'br' is not supported"),
        ({"Content-Encoding": "gzip"}, b"not gzip", 400, "not valid gzip data"),
        ({"Content-Encoding": "gzip"}, gzip.compress(b"x" * 5000)[:-30], 400, "ends inside"),
        ({"Content-Encoding": "gzip"}, gzip.compress(b" " * 5000), 413, "web.max_body_bytes"),
    ],
)
def test_bad_compressed_bodies(headers: dict, data: bytes, status: int, message: str) -> None:
    c, _ = client(max_body_bytes=4096)
    r = c.post("/v2/models/m/infer", data=data, headers=headers)
    assert r.status_code == status and message in r.json["error"], r.json


def error_of(r: Any, status: int) -> str:
    assert r.status_code == status, r.data
    assert isinstance(r.json["error"], str), r.json
    return r.json["error"]


def test_client_mistakes_are_400_with_the_message() -> None:
    c, fake = client()
    body = {"inputs": [{"name": "x", "shape": [2], "datatype": "UINT32", "data": [1, 2]}]}
    assert "datatype 'UINT32'" in error_of(c.post("/v2/models/m/infer", json=body), 400)
    body = {
        "inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]}],
        "outputs": [{"name": "nope"}],
    }
    assert "unknown output 'nope'" in error_of(c.post("/v2/models/m/infer", json=body), 400)
    assert "unknown model 'zz'" in error_of(c.post("/v2/models/zz/infer", json=body), 404)
    assert "no version '3'" in error_of(c.post("/v2/models/m/versions/3/infer", json=body), 404)
    assert not [s for s in fake.submitted if s[0] == "zz"]


def test_worker_and_dispatcher_outcomes_keep_their_status() -> None:
    body = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}
    rejected = errors.InvalidInput(
        "argument 1 (x) of model m must be int", code="invalid_arguments"
    )
    c, fake = client()
    fake.handler = lambda m, i: contract.error_result(rejected.to_dict())
    assert error_of(c.post("/v2/models/m/infer", json=body), 422) == rejected.message
    fake.overloaded = True
    r = c.post("/v2/models/m/infer", json=body)
    assert "overloaded" in error_of(r, 429) and r.headers["Retry-After"] == "2"
    fake.overloaded = False
    fake.status_view.view = []
    assert "no worker is ready for model m" in error_of(
        c.post("/v2/models/m/infer", json=body), 503
    )


def test_timeout_parameter_shortens_the_deadline() -> None:
    c, fake = client()
    body = {
        "parameters": {"timeout": 2_000_000},
        "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],
    }
    assert c.post("/v2/models/m/infer", json=body).status_code == 200
    assert fake.submitted[0][1]["deadline"] < time.time() + 2.5


def test_routes_are_in_the_openapi_document() -> None:
    doc = client()[0].get("/openapi.json").json
    infer_op = doc["paths"]["/v2/models/{model}/versions/{version}/infer"]["post"]
    assert infer_op["requestBody"]["content"]["application/json"]["schema"]["required"] == [
        "inputs"
    ]
    assert {"200", "400", "404", "503"} <= set(infer_op["responses"])
    for path in (
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/{model}",
        "/v2/models/{model}/ready",
    ):
        assert doc["paths"][path]["get"]["summary"]
