"""GET /openapi.json (a valid OpenAPI 3.0 document describing every route, whose request schema
accepts and refuses exactly what validation does), GET /docs and its assets (no CDN), and the
X-Request-ID header."""

from __future__ import annotations

import base64
import copy
import re
from pathlib import Path

import pytest
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate
from swagger_ui_bundle import swagger_ui_path

from autodep_celery import errors
from autodep_celery.web.app import create_app
from autodep_celery.web.testing import FakeDispatcher, png_bytes, proc
from autodep_celery.web.validation import parse_inference
from tests.unit.conftest import client_for, make_settings

pytestmark = pytest.mark.unit

SETTINGS = make_settings(["m"])
B64 = base64.b64encode(png_bytes(4, 3)).decode()


@pytest.fixture(scope="module")
def app():
    return create_app(SETTINGS, FakeDispatcher([proc("m")]))


@pytest.fixture(scope="module")
def doc(app):
    r = app.test_client().get("/openapi.json")
    assert r.status_code == 200
    return r.json


def test_document_is_valid_openapi(doc):
    validate(doc)
    assert doc["openapi"].startswith("3.0")


def test_every_route_is_described(app, doc):
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            op = doc["paths"][path][method.lower()]
            assert op["summary"] and op["responses"], (path, method)
    inference = doc["paths"]["/inference"]["post"]
    assert inference["requestBody"]["content"]["application/json"]["schema"]["oneOf"][0][
        "required"
    ] == [
        "data",
        "inference_type",
    ]
    assert {"200", "422", "429", "500", "503", "504"} <= set(inference["responses"])
    assert doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"].keys() == {"text/plain"}


GOOD = [
    {"data": {"B64Image": {"image": B64}}, "inference_type": {"ImageClassification": {"top_n": 3}}},
    {
        "data": {"B64Image": {"image": B64, "height": None, "width": None}},
        "inference_type": "ImageClassification",
    },
    {
        "data": {"B64Image": {"image": B64, "height": 3, "width": 4}},
        "inference_type": {"ImageClassification": None},
    },
    {
        "data": {"B64Image": {"image": B64}},
        "inference_type": {"ImageClassification": {}},
        "model": "m",
    },
    {"data": {"B64Image": {"image": B64}}, "inference_type": "ImageToImage"},
    {"data": {"Text": "hi"}, "inference_type": "TextToText"},
    {"data": {"text": "hi"}, "inference_type": "TextToText", "model": "m"},
]
BAD = [
    [],
    {"data": {"Text": "hi"}, "inference_type": "TextToText", "extra": 1},
    {"inference_type": "TextToText"},
    {"data": {"Text": "hi"}},
    {"data": {"Text": "hi"}, "inference_type": "TextToText", "model": "other"},
    {"data": {"Text": "hi"}, "inference_type": "TextToText", "model": 3},
    {"data": {"Text": "hi"}, "inference_type": "Translate"},
    {"data": {"B64Image": {"image": B64}}, "inference_type": {"ImageClassification": {"top_n": 0}}},
    {
        "data": {"B64Image": {"image": B64}},
        "inference_type": {"ImageClassification": {"top_n": "3"}},
    },
    {
        "data": {"B64Image": {"image": B64}},
        "inference_type": {"ImageClassification": {"top_n": True}},
    },
    {"data": {"B64Image": {"image": B64}}, "inference_type": {"ImageClassification": {"k": 1}}},
    {"data": {"B64Image": {"image": B64}}, "inference_type": {"ImageClassification": 5}},
    {"data": {"Text": "hi", "text": "hi"}, "inference_type": "TextToText"},
    {"data": {"Audio": "..."}, "inference_type": "TextToText"},
    {"data": {"Text": 5}, "inference_type": "TextToText"},
    {"data": {"B64Image": {"height": 3}}, "inference_type": "ImageToImage"},
    {"data": {"B64Image": {"image": B64, "depth": 3}}, "inference_type": "ImageToImage"},
    {"data": {"B64Image": {"image": B64, "height": 0}}, "inference_type": "ImageToImage"},
    {"data": {"B64Image": {"image": B64, "width": "4"}}, "inference_type": "ImageToImage"},
    {"data": {"B64Image": "abc"}, "inference_type": "ImageToImage"},
    # data of one kind with a task type that takes another (data_type_mismatch)
    {"data": {"Text": "hi"}, "inference_type": "ImageToImage"},
    {"data": {"B64Image": {"image": B64}}, "inference_type": "TextToText"},
    {"data": {"Text": "hi"}, "inference_type": {"ImageClassification": {"top_n": 1}}},
    {"data": {"Tensor": [{"type": "string", "value": "x"}]}, "inference_type": "TextToText"},
]


def _schema_accepts(doc, body) -> bool:
    schema = copy.deepcopy(
        doc["paths"]["/inference"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    )
    schema["components"] = doc["components"]
    return OAS30Validator(schema).is_valid(body)


def _validation_accepts(body) -> bool:
    try:
        parse_inference(body, SETTINGS, deadline=1e12)
    except errors.AutodepError:
        return False
    return True


@pytest.mark.parametrize("body", GOOD, ids=range(len(GOOD)))
def test_schema_and_validation_both_accept(doc, body):
    # semantic pairings (Text with TextToText) are validation's alone; these bodies are sound
    assert _validation_accepts(body) and _schema_accepts(doc, body)


@pytest.mark.parametrize("body", BAD, ids=range(len(BAD)))
def test_schema_and_validation_both_refuse(doc, body):
    assert not _validation_accepts(body)
    assert not _schema_accepts(doc, body)


def test_docs_page_loads_swagger_ui_from_this_server(app):
    client = app.test_client()
    page = client.get("/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.text
    assert "http://" not in html and "https://" not in html  # no CDN
    links = re.findall(r'(?:href|src)="([^"]+)"', html)
    assert sorted(links) == [
        "/docs/favicon-32x32.png",
        "/docs/swagger-ui-bundle.js",
        "/docs/swagger-ui-standalone-preset.js",
        "/docs/swagger-ui.css",
    ]
    for link in links:  # each is Swagger UI's own file, byte for byte
        r = client.get(link)
        assert r.status_code == 200, link
        assert r.data == (Path(swagger_ui_path) / link.rsplit("/", 1)[1]).read_bytes(), link
    assert '"/openapi.json"' in html
    assert client.get("/docs/index.j2").status_code == 404
    assert client.get("/docs/../setup.py").status_code == 404


def test_request_id_is_echoed_generated_and_put_on_the_item():
    client, fake = client_for()
    body = {"data": {"Text": "hi"}, "inference_type": "TextToText"}
    r = client.post("/inference", json=body, headers={"X-Request-ID": "client-id-1"})
    assert r.headers["X-Request-ID"] == "client-id-1"
    assert fake.submitted[-1][1]["request_id"] == "client-id-1"
    for given in (None, "", "has space", "x" * 129, "ünïcode"):
        headers = {} if given is None else {"X-Request-ID": given}
        r = client.post("/inference", json=body, headers=headers)
        made = r.headers["X-Request-ID"]
        assert re.fullmatch(r"[0-9a-f]{32}", made) and fake.submitted[-1][1]["request_id"] == made
    # errors carry it too
    r = client.get("/nowhere", headers={"X-Request-ID": "e-1"})
    assert r.status_code == 404 and r.headers["X-Request-ID"] == "e-1"


# ---- what fuzzing the document against a real server found (tests/integration/test_fuzz_openapi)
def _accepts(doc, schema, value) -> bool:
    schema = copy.deepcopy(schema)
    schema["components"] = doc["components"]
    return OAS30Validator(schema).is_valid(value)


def test_every_status_is_listed_and_none_is_left_to_default(doc):
    # a "default" response made every status code conform: 404 of DELETE /jobs/{id} went unseen
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert "default" not in op["responses"] and "500" in op["responses"], (path, method)
    assert "404" in doc["paths"]["/jobs/{job_id}"]["delete"]["responses"]


def test_request_id_takes_any_value_as_the_server_does(doc):
    # an invalid X-Request-ID is replaced, not refused (test above): no maxLength to promise
    assert doc["components"]["parameters"]["RequestId"]["schema"] == {"type": "string"}


def test_required_query_parameters_and_non_empty_files(doc):
    def query(path, method):
        ops = doc["paths"][path][method]["parameters"]
        return {p["name"]: p for p in ops if p.get("in") == "query"}

    assert query("/serve", "post")["servable_identifier"]["required"] is True
    register = query("/management/models", "post")
    assert register["url"]["required"] is True and register["url"]["schema"]["minLength"] == 1
    assert register["batch_size"]["schema"]["pattern"] and not register["task"]["required"]
    scale = query("/management/models/{model_name}", "put")
    assert re.fullmatch(scale["min_worker"]["schema"]["pattern"], "2")
    assert not re.fullmatch(scale["min_worker"]["schema"]["pattern"], "two")
    content = doc["paths"]["/classify"]["post"]["requestBody"]["content"]
    assert content["image/*"]["schema"]["minLength"] == 1  # an empty body is refused
    assert content["multipart/form-data"]["schema"]["required"] == ["data"]


def test_classify_errors_are_documented_in_drogons_shape(doc, app):
    r = app.test_client().post("/classify?model=nope", data=b"x")
    assert r.status_code == 404
    schema = doc["paths"]["/classify"]["post"]["responses"]["404"]["content"]
    assert _accepts(doc, schema["application/json"]["schema"], r.json)
    assert r.json["status"] == "failed" and r.json["error"]["code"] == "unknown_model"


def test_a_null_tensor_argument_is_documented(doc):
    # torch-serving's typed JSON: null is None (web.torchserving_json.parse_value)
    body = doc["paths"]["/serve"]["post"]["requestBody"]["content"]["application/json"]
    assert _accepts(doc, body["schema"], [None, {"type": "string", "value": "x"}])


def test_with_keys_every_protected_operation_documents_its_401_in_its_own_shape(monkeypatch):
    from autodep_celery.web import auth

    monkeypatch.setenv(auth.API_KEYS_ENV, "k" * 32)
    monkeypatch.setenv(auth.ADMIN_KEYS_ENV, "a" * 32)
    client = create_app(SETTINGS, FakeDispatcher([proc("m")])).test_client()
    doc = client.get("/openapi.json").json
    validate(doc)
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert "401" not in doc["paths"]["/health"]["get"]["responses"]
    assert "401" not in doc["paths"]["/v2/health/live"]["get"]["responses"]
    assert "403" in doc["paths"]["/management/models"]["get"]["responses"]
    for method, path, url in [
        ("post", "/inference", "/inference"),
        ("post", "/v2/models/{model}/infer", "/v2/models/m/infer"),
        ("post", "/serve", "/serve?servable_identifier=m"),
        ("post", "/classify", "/classify"),
        ("get", "/v2", "/v2"),
        ("get", "/management/models", "/management/models"),
    ]:
        op = doc["paths"][path][method]
        assert op["security"] == [{"bearer": []}], path
        r = client.open(url, method=method.upper())
        assert r.status_code == 401, (path, r.json)
        schema = op["responses"]["401"]["content"]["application/json"]["schema"]
        assert _accepts(doc, schema, r.json), (path, r.json)
