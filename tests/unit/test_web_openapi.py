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
    assert inference["requestBody"]["content"]["application/json"]["schema"]["required"] == [
        "data",
        "inference_type",
    ]
    assert {"200", "422", "429", "503", "504", "default"} <= set(inference["responses"])
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
