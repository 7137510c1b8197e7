"""TorchServe's inference API (/ping, /predictions) and the Drogon-style /classify on the real
stack: raw bodies, multipart forms (requests and curl), answers equal to /inference's for the
same image, and the 4xx errors."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from PIL import Image

from autodep_celery import processes
from tests.integration.conftest import WORKER_GROUPS, Stack, Web, start_web
from tests.integration.support import b64, image_bytes

CURL = shutil.which("curl")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed")


def inference_top(web: Web, model: str, data: bytes, top_n: int = 5) -> list[tuple[str, float]]:
    body = {
        "data": {"B64Image": {"image": b64(data)}},
        "inference_type": {"ImageClassification": {"top_n": top_n}},
        "model": model,
    }
    resp = web.post("/inference", json=body)
    assert resp.status_code == 200, resp.text
    return [(c["label"], c["probability"]) for c in resp.json()[0]["Classification"]]


def assert_same_top(got: dict[str, float], expected: list[tuple[str, float]]) -> None:
    """The same labels in the same order, probabilities equal up to batching's float noise."""
    assert list(got) == [label for label, _ in expected]
    assert list(got.values()) == pytest.approx([p for _, p in expected], rel=1e-4, abs=1e-6)


def curl(*args: str) -> tuple[int, str]:
    """curl's exit status and stdout, with the HTTP status appended on a last line."""
    assert CURL is not None
    done = subprocess.run(
        [CURL, "-sS", "-w", "\n%{http_code}", *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    body, _, status = done.stdout.rpartition("\n")
    return int(status), body


# ---- /ping ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served_only(stack: Stack) -> Iterator[Web]:
    """A web process configured with only the models that have workers."""
    served = {m for models, _ in WORKER_GROUPS.values() for m in models}
    settings = dataclasses.replace(
        stack.settings,
        models=tuple(m for m in stack.settings.models if m.name in served),
        web=dataclasses.replace(stack.settings.web, port=processes.free_port(), processes=1),
    )
    w = start_web(stack, settings, "web-served-only")
    yield w
    w.child.stop()


def test_ping_healthy_when_every_model_has_a_worker(served_only: Web) -> None:
    r = served_only.get("/ping")
    assert r.status_code == 200 and r.json() == {"status": "Healthy"}


def test_ping_unhealthy_while_a_model_has_no_worker(web: Web) -> None:
    # the shared stack configures "ghost", which no worker serves: TorchServe's 500 Unhealthy
    r = web.get("/ping")
    assert r.status_code == 500 and r.json() == {"status": "Unhealthy"}
    assert "ghost" in web.get("/ready").json()["error"]["message"]


# ---- /predictions --------------------------------------------------------------------------
def test_raw_body_top5_equals_inference(web: Web) -> None:
    data = image_bytes(224, 224, seed=21)
    r = web.post("/predictions/resnet18", data=data, headers={"Content-Type": "image/png"})
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "application/json"
    assert_same_top(r.json(), inference_top(web, "resnet18", data))


@pytest.mark.parametrize("field", ["data", "body", "image"])
def test_multipart_top5_equals_inference(web: Web, field: str) -> None:
    data = image_bytes(64, 48, fmt="JPEG", seed=22)
    files = {field: ("cat.jpg", data, "image/jpeg")}
    r = web.post("/predictions/labelled/1.0", files=files)
    assert r.status_code == 200, r.text
    got = r.json()
    assert all(label.startswith("thing-") for label in got)
    assert_same_top(got, inference_top(web, "labelled", data))


@needs_curl
def test_curl_data_binary_put_and_form(web: Web, tmp_path: Path) -> None:
    # > 1 MB, so curl sends "Expect: 100-continue" before the body, as it does for photos
    data = image_bytes(640, 640, seed=23)
    assert len(data) > 1024 * 1024
    path = tmp_path / "cat.png"
    path.write_bytes(data)
    expected = inference_top(web, "resnet18", data)
    url = f"{web.url}/predictions/resnet18"
    for args in (
        ["--data-binary", f"@{path}", url],  # POST, Content-Type x-www-form-urlencoded
        ["-T", str(path), url],  # TorchServe's documented form: PUT
        ["-F", f"data=@{path}", url],
        ["-H", "Content-Type: application/octet-stream", "--data-binary", f"@{path}", url + "/1.0"],
    ):
        status, body = curl(*args)
        assert status == 200, (args, body)
        assert_same_top(json.loads(body), expected)


def test_image_to_image_answers_the_png_of_inference(web: Web) -> None:
    data = image_bytes(64, 48, seed=24)
    r = web.post("/predictions/segmenter", data=data)
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/png"
    body = {
        "data": {"B64Image": {"image": b64(data)}},
        "inference_type": "ImageToImage",
        "model": "segmenter",
    }
    ref = web.post("/inference", json=body).json()[0]["B64Image"]
    assert r.content == base64.b64decode(ref["image"])
    with Image.open(io.BytesIO(r.content)) as img:
        assert img.size == (64, 48)


def test_text_to_text_answers_text(stack: Stack, web: Web) -> None:
    text = "Hello, TorchServe! ünïcode"
    r = web.post(
        "/predictions/textgen",
        data=text.encode(),
        headers={"Content-Type": "text/plain; charset=utf-8"},
    )
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    textgen = torch.jit.load(str(stack.model_dir / "textgen.pt"))
    assert r.content.decode() == textgen([text])[0]


# ---- /classify -----------------------------------------------------------------------------
def test_classify_raw_and_multipart_equal_inference_top1(web: Web) -> None:
    data = image_bytes(96, 96, fmt="JPEG", seed=25)
    [(label, probability)] = inference_top(web, "resnet18", data, top_n=1)
    for kw in (
        {"data": data, "headers": {"Content-Type": "image/jpeg"}},
        {"files": {"image": ("cat.jpg", data, "image/jpeg")}},
    ):
        r = web.post("/classify?model=resnet18", **kw)  # type: ignore[arg-type]
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "success" and body["prediction"]["label"] == label
        assert body["prediction"]["confidence"] == pytest.approx(probability, rel=1e-4)


@needs_curl
def test_classify_with_curl_form(web: Web, tmp_path: Path) -> None:
    (tmp_path / "cat.jpg").write_bytes(image_bytes(64, 64, fmt="JPEG", seed=26))
    status, body = curl(f"{web.url}/classify?model=tiny", "-F", f"image=@{tmp_path / 'cat.jpg'}")
    assert status == 200 and '"status":"success"' in body


def test_classify_needs_a_model_when_several_classify(web: Web) -> None:
    r = web.post("/classify", data=image_bytes(16, 16))
    assert r.status_code == 400
    body = r.json()
    assert body["status"] == "failed" and body["error"]["code"] == "model_required"
    assert "resnet18" in body["message"] and "segmenter" not in body["message"]


# ---- errors --------------------------------------------------------------------------------
def truncated_jpeg() -> bytes:
    """A JPEG whose header is whole but whose scan data is cut: only the worker's decode sees
    it."""
    data = image_bytes(64, 64, fmt="JPEG", seed=27)
    return data[: len(data) // 2]


ERRORS = [
    ("empty", "/predictions/resnet18", {"data": b""}, 400, "empty_body"),
    (
        "json",
        "/predictions/resnet18",
        {"data": b"{}", "headers": {"Content-Type": "application/json"}},
        415,
        "unsupported_media_type",
    ),
    ("garbage", "/predictions/resnet18", {"data": b"not an image"}, 422, "invalid_image"),
    ("truncated", "/predictions/tiny", {"data": truncated_jpeg()}, 422, "invalid_image"),
    (
        "no file",
        "/predictions/tiny",
        {"files": {"note": (None, "hello")}},
        400,
        "missing_file",
    ),
    (
        "two files",
        "/classify?model=tiny",
        {"files": [("data", ("a.png", image_bytes(8, 8))), ("x", ("b.png", image_bytes(8, 8)))]},
        400,
        "too_many_files",
    ),
    (
        "many parts",
        "/predictions/tiny",
        {"files": [(f"f{i}", (None, "v")) for i in range(2000)]},
        413,
        "form_too_large",
    ),
    ("unknown model", "/predictions/nope", {"data": image_bytes(8, 8)}, 404, "unknown_model"),
    (
        "unknown version",
        "/predictions/tiny/2.0",
        {"data": image_bytes(8, 8)},
        404,
        "unknown_model_version",
    ),
    ("no worker", "/predictions/ghost", {"data": image_bytes(8, 8)}, 503, "no_worker"),
    ("wrong task", "/classify?model=segmenter", {"data": image_bytes(8, 8)}, 422, "task_mismatch"),
]


@pytest.mark.parametrize(
    ("path", "kw", "status", "code"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS]
)
def test_errors(web: Web, path: str, kw: dict, status: int, code: str) -> None:
    r = web.post(path, **kw)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"]["code"] == code and body["error"]["message"]
    # the process serves the next request as usual
    assert web.post("/predictions/tiny", data=image_bytes(8, 8, seed=28)).status_code == 200
