"""web.uploads: an image or text sent as the raw body or as one multipart file, and every way
such a request can be wrong (each a 4xx with its own code)."""

from __future__ import annotations

import io
from typing import Any

import pytest
from flask import Flask
from PIL import Image

from autodep_celery import errors
from autodep_celery.web import uploads
from autodep_celery.web.app import create_app
from autodep_celery.web.testing import FakeDispatcher, png_bytes
from tests.unit.conftest import make_settings

pytestmark = pytest.mark.unit

PNG = png_bytes(8, 6)


def jpeg_bytes(width: int = 8, height: int = 6) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (1, 2, 3)).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def app() -> Flask:
    return create_app(make_settings(["m"], max_body_bytes=100_000), FakeDispatcher([]))


def read(app: Flask, **request: Any) -> uploads.Upload:
    with app.test_request_context("/", method="POST", **request):
        from flask import request as req

        return uploads.read(req)


def image(app: Flask, max_pixels: int = 10**6, **request: Any) -> bytes:
    return uploads.check_image(read(app, **request), max_pixels)


def refused(call: Any, *args: Any, **kw: Any) -> errors.AutodepError:
    with pytest.raises(errors.AutodepError) as info:
        call(*args, **kw)
    return info.value


# ---- accepted forms ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "image/png",
        "image/jpeg",
        "application/octet-stream",
        "application/x-www-form-urlencoded",
    ],
)
def test_raw_body_with_any_image_or_binary_type(app, content_type):
    assert image(app, data=PNG, content_type=content_type) == PNG


def test_urlencoded_body_is_the_file_not_a_form(app):
    # curl --data-binary @cat.jpg sends this type; the body must reach us byte for byte
    data = jpeg_bytes()
    upload = read(app, data=data, content_type="application/x-www-form-urlencoded")
    assert upload.data == data and upload.where == "the body"


@pytest.mark.parametrize("field", ["data", "body", "image", "file"])
def test_multipart_single_file_in_any_field(app, field):
    upload = read(app, data={field: (io.BytesIO(PNG), "cat.png", "image/png")})
    assert upload.data == PNG and upload.where == f'form field "{field}"'
    assert upload.media_type == "image/png"


def test_multipart_file_beside_plain_values(app):
    data = {"data": (io.BytesIO(PNG), "cat.png"), "note": "hello"}
    assert image(app, data=data, content_type="multipart/form-data") == PNG


def test_multipart_text_value_for_text_models(app):
    upload = read(app, data={"body": "héllo", "other": "x"}, content_type="multipart/form-data")
    assert upload.is_text and uploads.check_text(upload) == "héllo"


def test_multipart_data_value_wins_over_body(app):
    upload = read(app, data={"body": "b", "data": "d"}, content_type="multipart/form-data")
    assert uploads.check_text(upload) == "d"


@pytest.mark.parametrize("content_type", ["text/plain", "text/plain; charset=utf-8", None])
def test_text_body(app, content_type):
    upload = read(app, data="hé".encode(), content_type=content_type)
    assert uploads.check_text(upload) == "hé"


# ---- errors --------------------------------------------------------------------------------
def test_empty_body_is_400(app):
    exc = refused(read, app, data=b"", content_type="image/png")
    assert (exc.http_status, exc.code) == (400, "empty_body")
    assert "--data-binary" in exc.message and "-F data=@" in exc.message


def test_multipart_without_a_file_is_400_naming_the_field(app):
    exc = refused(read, app, data={"note": "x"}, content_type="multipart/form-data")
    assert (exc.http_status, exc.code) == (400, "missing_file")
    assert "field named data" in exc.message and "note" in exc.message


def test_malformed_multipart_is_400(app):
    exc = refused(read, app, data=b"garbage", content_type="multipart/form-data; boundary=xyz")
    assert (exc.http_status, exc.code) == (400, "missing_file")


def test_two_files_are_400(app):
    data = {"data": (io.BytesIO(PNG), "a.png"), "extra": (io.BytesIO(PNG), "b.png")}
    exc = refused(read, app, data=data)
    assert (exc.http_status, exc.code) == (400, "too_many_files")
    assert "data, extra" in exc.message


def test_two_files_in_one_field_are_400(app):
    data = {"data": [(io.BytesIO(PNG), "a.png"), (io.BytesIO(PNG), "b.png")]}
    assert refused(read, app, data=data).code == "too_many_files"


def test_empty_file_is_400(app):
    exc = refused(read, app, data={"data": (io.BytesIO(b""), "cat.png")})
    assert (exc.http_status, exc.code) == (400, "empty_file")


def test_form_value_is_not_an_image(app):
    # curl -F "data=<cat.jpg" sends the bytes as a value, which the parser decodes as text
    exc = refused(image, app, data={"data": "abc"}, content_type="multipart/form-data")
    assert (exc.http_status, exc.code) == (400, "not_a_file")
    assert "-F data=@" in exc.message


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", "video/mp4"])
def test_wrong_media_type_is_415(app, content_type):
    exc = refused(image, app, data=PNG, content_type=content_type)
    assert (exc.http_status, exc.code) == (415, "unsupported_media_type")
    assert content_type in exc.message and "image/*" in exc.message


def test_wrong_part_media_type_is_415(app):
    exc = refused(image, app, data={"data": (io.BytesIO(PNG), "x.json", "application/json")})
    assert exc.http_status == 415 and 'form field "data"' in exc.message


def test_text_refuses_an_image_type(app):
    upload = read(app, data=PNG, content_type="image/png")
    exc = refused(uploads.check_text, upload)
    assert (exc.http_status, exc.code) == (415, "unsupported_media_type")


def test_text_refuses_bad_utf8(app):
    upload = read(app, data=b"\xff\xfe", content_type="text/plain")
    exc = refused(uploads.check_text, upload)
    assert (exc.http_status, exc.code) == (422, "invalid_text")


@pytest.mark.parametrize(
    "data",
    [b"not an image at all", PNG[:20], PNG[:40], b"\xff\xd8\xff\xe0\x00"],
    ids=["garbage", "png-cut-in-header", "png-cut-before-data", "jpeg-cut"],
)
def test_not_an_image_or_truncated_is_422(app, data):
    exc = refused(image, app, data=data)
    assert (exc.http_status, exc.code) == (422, "invalid_image")
    assert exc.message.startswith("the body is not an image")
    assert "base64" not in exc.message


def test_too_many_pixels(app):
    exc = refused(image, app, max_pixels=47, data=PNG)  # 8 x 6 = 48
    assert (exc.http_status, exc.code) == (413, "image_too_large")
    assert image(app, max_pixels=48, data=PNG) == PNG


def test_jpeg_header_checked(app):
    data = jpeg_bytes(10, 10)
    assert refused(image, app, max_pixels=99, data=data).code == "image_too_large"


# ---- bounds: through the app, whose error handlers render werkzeug's 413 ---------------------
def client(**web: Any) -> Any:
    return create_app(make_settings(["m"], {"m": "ImageClassification"}, **web), FakeDispatcher([]))


def test_body_over_max_body_bytes_is_413():
    c = client(max_body_bytes=1000).test_client()
    for kw in ({"data": b"x" * 2000}, {"data": {"data": (io.BytesIO(b"x" * 2000), "a.png")}}):
        r = c.post("/predictions/m", **kw)
        assert r.status_code == 413 and r.json["error"]["code"] == "body_too_large", r.json


def test_many_parts_are_413_not_parsed():
    c = client().test_client()
    form = {f"f{i}": "v" for i in range(uploads.MAX_FORM_PARTS + 1)}
    r = c.post("/predictions/m", data=form, content_type="multipart/form-data")
    assert r.status_code == 413 and r.json["error"]["code"] == "form_too_large"
    assert "field named data" in r.json["error"]["message"]


def test_big_form_value_is_413():
    c = client().test_client()
    form = {"note": "v" * (uploads.MAX_FORM_FIELD_BYTES + 1)}
    r = c.post("/predictions/m", data=form, content_type="multipart/form-data")
    assert r.status_code == 413 and r.json["error"]["code"] == "form_too_large"
