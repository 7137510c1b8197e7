"""POST /serve and GET /healthcheck (torch-serving's API) and inference_type Tensor on
/inference, over the FakeDispatcher: the envelope, the Tensor item each sends, every error in
the envelope with our error code, and the OpenAPI document."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from openapi_schema_validator import OAS30Validator

from autodep_celery import contract, typed
from autodep_celery.contract import Item
from autodep_celery.web.testing import FakeDispatcher, proc
from tests.unit.conftest import client_for

pytestmark = pytest.mark.unit

X = {"type": "tensor", "shape": [1, 2], "value": [10, 1]}
BODY = [
    {"type": "tensor_list", "value": [X, {"type": "tensor", "shape": [1, 3], "value": [1, 2, 3]}]},
    X,
    {"type": "tensor_dict", "value": {"x": X}},
    {"type": "scalar", "data_type": "int64", "value": 2**63 - 1},
    {"type": "string", "value": "Hello!"},
]
OUT = typed.make_dict([("out", [[typed.tensor_from_values("int64", [2], [-(2**63), 5])], "s", 3])])
OUT_JSON = {
    "type": "generic_dict",
    "value": {
        "out": [
            [{"type": "tensor", "data_type": "int64", "shape": [2], "value": [-(2**63), 5]}],
            {"type": "string", "value": "s"},
            {"type": "scalar", "data_type": "int64", "value": 3},
        ]
    },
}


def answer(model: str, item: Item) -> dict[str, Any]:
    return contract.ok_result({"Tensor": OUT}, 10)


def client(handler: Any = answer, **kw: Any) -> tuple[Any, FakeDispatcher]:
    models = kw.pop("models", ("multi", "tiny"))
    fake = FakeDispatcher([proc(m, pid=i) for i, m in enumerate(models)], handler)
    c, _ = client_for(fake, models=models, tasks={"multi": "Tensor"}, **kw)
    return c, fake


def serve(c: Any, body: Any, query: str = "?servable_identifier=multi", **kw: Any) -> Any:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return c.post("/serve" + query, data=data, **kw)


def test_healthcheck_answers_torch_servings_envelope() -> None:
    c, _ = client()
    r = c.get("/healthcheck")
    assert r.status_code == 200 and r.json == {"code": 200, "message": "OK", "description": "OK"}


def test_serve_sends_one_tensor_item_and_answers_in_the_envelope() -> None:
    c, fake = client()
    # curl -d sends application/x-www-form-urlencoded: torch-serving clients do, so any type goes
    r = serve(c, BODY, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200, r.json
    assert r.json == {"code": 200, "message": "OK", "description": "Success", "result": OUT_JSON}
    assert b"-9223372036854775808" in r.data  # exact, not a float
    [(model, item)] = fake.submitted
    assert model == "multi" and item["kind"] == "args" and item["task"] == "Tensor"
    assert set(item) == {"kind", "task", "args", "deadline", "request_id"}
    tensor_list, x, table, big, text = item["args"]
    assert [t["shape"] for t in tensor_list] == [[1, 2], [1, 3]] and x["dtype"] == "float32"
    assert typed.is_dict(table) and big == 2**63 - 1 and text == "Hello!"


def test_serve_takes_any_model_and_a_single_typed_value() -> None:
    c, fake = client()
    r = serve(c, X, "?servable_identifier=tiny")
    assert r.status_code == 200
    assert fake.submitted[0][0] == "tiny" and len(fake.submitted[0][1]["args"]) == 1


def test_a_null_result_is_kept() -> None:
    c, _ = client(lambda m, i: contract.ok_result({"Tensor": None}, 1))
    assert serve(c, []).json["result"] is None


def envelope_error(r: Any, status: int, code: str, description: str) -> str:
    assert r.status_code == status, r.json
    body = r.json
    assert body["code"] == status and body["description"] == description
    assert body["message"] == ("Client Error" if status < 500 else "Server Error")
    assert body["error"]["code"] == code and body["detail"] == body["error"]["message"]
    assert "result" not in body
    return str(body["detail"])


@pytest.mark.parametrize(
    ("query", "status", "code", "description", "detail"),
    [
        ("", 400, "missing_servable_identifier", "Missing required parameter", "multi, tiny"),
        (
            "?servable_identifier=multi&servable_identifier=tiny",
            400,
            "duplicate_servable_identifier",
            "Required parameter `servable_identifier` must only be passed in once",
            "not 2 times",
        ),
        ("?servable_identifier=other", 404, "unknown_model", "Invalid servable identifier", ""),
        ("?servable_identifier=..", 404, "unknown_model", "Invalid servable identifier", ""),
        ("?servable_identifier=../multi", 404, "unknown_model", "Invalid", "mean 'multi'?"),
        ("?servable_identifier=/m/multi.pt", 404, "unknown_model", "Invalid", "mean 'multi'?"),
        ("?servable_identifier=multi.pt", 404, "unknown_model", "Invalid", "never a file path"),
    ],
)
def test_the_identifier_is_one_configured_model_name(
    query: str, status: int, code: str, description: str, detail: str
) -> None:
    c, fake = client()
    r = serve(c, BODY, query)
    assert r.status_code == status
    assert description in r.json["description"] and detail in r.json["detail"]
    envelope_error(r, status, code, r.json["description"])
    assert fake.submitted == []


@pytest.mark.parametrize(
    ("body", "code", "description", "detail"),
    [
        (b"", "empty_body", "Empty body", "the body is empty"),
        (b"[{", "invalid_json", "Invalid JSON", "the body is not valid JSON"),
        (b'"x"', "invalid_typed_value", "Invalid Input JSON", "the body must be a typed value"),
        (
            [{"type": "tensors", "value": []}],
            "invalid_typed_value",
            "Invalid Input JSON",
            "tensors",
        ),
        (
            [X, {**X, "shape": [3]}],
            "shape_mismatch",
            "Incompatible tensor shapes",
            "argument 2: shape [3] holds 3 values, but value has 2",
        ),
        (
            [{**X, "data_type": "complex64"}],
            "unknown_dtype",
            "Incompatible tensor data type",
            "argument 1: unknown data_type 'complex64'",
        ),
        (
            [{**X, "data_type": "uint8", "value": [1, -1]}],
            "invalid_tensor_value",
            "Incompatible tensor data type",
            "-1 is out of range for uint8",
        ),
    ],
)
def test_bad_bodies_are_400_in_the_envelope(
    body: Any, code: str, description: str, detail: str
) -> None:
    c, fake = client()
    got = envelope_error(serve(c, body), 400, code, description)
    assert detail in got, got
    assert fake.submitted == []


def worker_error(code: str, status: int) -> Any:
    def handler(model: str, item: Item) -> dict[str, Any]:
        return contract.error_result(
            {"code": code, "message": f"{code} says why", "status": status}
        )

    return handler


@pytest.mark.parametrize(
    ("code", "status", "description"),
    [
        ("invalid_arguments", 422, "Arguments do not fit the model's forward()"),
        ("model_rejected_input", 422, "The model rejected the input"),
        ("unsupported_output", 500, "Unexpected server error"),
        ("deadline_exceeded", 504, "Deadline exceeded"),
    ],
)
def test_worker_errors_keep_their_status_and_code(code: str, status: int, description: str) -> None:
    c, _ = client(worker_error(code, status))
    assert envelope_error(serve(c, BODY), status, code, description) == f"{code} says why"


def test_no_worker_overload_and_deadline_in_the_envelope() -> None:
    c, fake = client(models=("multi",))
    fake.view.clear()
    envelope_error(serve(c, BODY), 503, "no_worker", "Service unavailable")
    c, fake = client()
    fake.overloaded = True
    r = serve(c, BODY)
    envelope_error(r, 429, "overloaded", "Too many requests")
    assert r.headers["Retry-After"] == "2"
    c, _ = client(lambda m, i: None, request_timeout_s=0.05)
    envelope_error(serve(c, BODY), 504, "deadline_exceeded", "Deadline exceeded")
    c, _ = client(max_body_bytes=10)
    envelope_error(serve(c, BODY), 413, "body_too_large", "Body too large")


def test_an_unexpected_failure_is_a_fixed_500_in_the_envelope() -> None:
    c, _ = client(lambda m, i: RuntimeError("boom"))
    r = serve(c, BODY)
    detail = envelope_error(r, 500, "internal_error", "Unexpected server error")
    assert "boom" not in r.text and "server log" in detail


def test_other_routes_keep_the_plain_error_body() -> None:
    c, _ = client()
    r = c.post("/inference", json={"data": {"Text": "x"}, "model": "tiny"})
    assert r.status_code == 422 and set(r.json) == {"error"}
    assert c.get("/serve").status_code == 405


# ---- inference_type Tensor on /inference ----------------------------------------------------
def test_inference_takes_tensor_data_on_any_model() -> None:
    c, fake = client()
    for model in ("multi", "tiny"):
        r = c.post(
            "/inference",
            json={"data": {"Tensor": BODY}, "inference_type": "Tensor", "model": model},
        )
        assert r.status_code == 200, r.json
        assert r.json == [{"Tensor": OUT_JSON}, {"secs": 0, "nanos": 10}]
    assert [item["args"][3] for _, item in fake.submitted] == [2**63 - 1] * 2


@pytest.mark.parametrize(
    ("body", "status", "code", "message"),
    [
        (
            {"data": {"Tensor": 3}, "inference_type": "Tensor", "model": "multi"},
            422,
            "invalid_typed_value",
            "Tensor must be an array of typed values",
        ),
        (
            {
                "data": {"Tensor": [{**X, "shape": [5]}]},
                "inference_type": "Tensor",
                "model": "multi",
            },
            422,
            "shape_mismatch",
            "data.Tensor argument 1: shape [5] holds 5 values, but value has 2",
        ),
        (
            {"data": {"Text": "x"}, "inference_type": "Tensor", "model": "tiny"},
            422,
            "data_type_mismatch",
            "Text data needs inference_type TextToText, not Tensor",
        ),
        (
            {"data": {"Tensor": BODY}, "inference_type": "ImageClassification", "model": "multi"},
            422,
            "task_mismatch",
            "model multi is configured for Tensor, not ImageClassification",
        ),
        (
            {"data": {"Tensor": BODY}, "inference_type": "TextToText", "model": "tiny"},
            422,
            "data_type_mismatch",
            "Tensor data needs inference_type Tensor, not TextToText",
        ),
    ],
)
def test_inference_refuses_bad_tensor_requests(
    body: dict[str, Any], status: int, code: str, message: str
) -> None:
    c, fake = client()
    r = c.post("/inference", json=body)
    assert r.status_code == status and r.json["error"]["code"] == code
    assert message in r.json["error"]["message"], r.json
    assert fake.submitted == []


# ---- OpenAPI ----------------------------------------------------------------------------------
def test_openapi_documents_serve_healthcheck_and_the_tensor_type() -> None:
    c, _ = client()
    doc = c.get("/openapi.json").json
    serve_op = doc["paths"]["/serve"]["post"]
    assert [p["name"] for p in serve_op["parameters"] if p.get("in") == "query"] == [
        "servable_identifier"
    ]
    assert {"200", "400", "404", "422", "503", "504"} <= set(serve_op["responses"])
    assert (
        "error"
        in serve_op["responses"]["400"]["content"]["application/json"]["schema"]["properties"]
    )
    assert doc["paths"]["/healthcheck"]["get"]["summary"]

    def accepts(schema: dict[str, Any], value: Any) -> bool:
        schema = copy.deepcopy(schema)
        schema["components"] = doc["components"]
        return OAS30Validator(schema).is_valid(value)

    body_schema = serve_op["requestBody"]["content"]["application/json"]["schema"]
    assert accepts(body_schema, BODY) and accepts(body_schema, X)
    assert not accepts(body_schema, "x")
    ok_schema = serve_op["responses"]["200"]["content"]["application/json"]["schema"]
    assert accepts(
        ok_schema, {"code": 200, "message": "OK", "description": "Success", "result": OUT_JSON}
    )
    inference = doc["paths"]["/inference"]["post"]
    request_schema = inference["requestBody"]["content"]["application/json"]["schema"]
    tensor = {"data": {"Tensor": BODY}, "inference_type": "Tensor", "model": "multi"}
    assert accepts(request_schema, tensor)
    assert not accepts(request_schema, {**tensor, "data": {"Tensor": "x"}})
    # two models are served: the body must name one, as validation says (model_required)
    assert not accepts(request_schema, {"data": {"Tensor": BODY}, "inference_type": "Tensor"})
    response_schema = inference["responses"]["200"]["content"]["application/json"]["schema"]
    assert accepts(response_schema, [{"Tensor": OUT_JSON}, {"secs": 0, "nanos": 1}])
