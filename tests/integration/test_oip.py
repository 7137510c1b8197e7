"""The Open Inference Protocol (/v2) end to end, from the real ``tritonclient.http`` client with
its defaults against gunicorn, Redis and Celery workers: health and metadata, inference in JSON
and binary (and compressed) equal to the models run in process, several inputs, errors as
InferenceServerException with our message, the README examples, and /v2 items sharing batches
with /inference items of the same model."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.integration.conftest import Stack, Web
from tests.integration.support import tiny_body, wait_s

CLIENT_EXAMPLE = """
import numpy as np
import tritonclient.http as httpclient

client = httpclient.InferenceServerClient("localhost:8000")
print(client.get_model_metadata("tiny")["inputs"])
x = httpclient.InferInput("x", [1, 3, 16, 16], "FP32")
x.set_data_from_numpy(np.random.rand(1, 3, 16, 16).astype(np.float32))
result = client.infer("tiny", [x])  # binary tensors both ways: the client's default
print(result.as_numpy("OUTPUT__0").shape)  # (1, 10)
"""
CURL_EXAMPLE = """
curl -s localhost:8000/v2/models/tiny/infer -d '{"inputs": [{"name": "x", "shape": [1, 3, 2, 2],
  "datatype": "FP32", "data": [[[[0.1, 0.2], [0.3, 0.4]], [[0.5, 0.6], [0.7, 0.8]],
                                [[0.9, 1.0], [0.0, 0.1]]]]}]}'
# {"model_name": "tiny", "model_version": "1", "outputs": [{"name": "OUTPUT__0", ...}]}
"""


def triton(url: str) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(url.removeprefix("http://"), network_timeout=120)


@pytest.fixture(scope="module")
def client(web: Web) -> Iterator[httpclient.InferenceServerClient]:
    c = triton(web.url)
    yield c
    c.close()


def in_process(stack: Stack, name: str, *args: object) -> object:
    module = torch.jit.load(str(stack.model_dir / f"{name}.pt")).eval()
    with torch.inference_mode():
        return module(*args)


def image_batch(seed: int = 0, n: int = 2, size: int = 16) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g).numpy()


def test_health_and_server_metadata(client: httpclient.InferenceServerClient, web: Web) -> None:
    assert client.is_server_live()
    # ready is what GET /ready says: the stack configures "ghost", which no worker serves
    assert client.is_server_ready() == (web.get("/ready").status_code == 200)
    meta = client.get_server_metadata()
    assert meta["name"] == "autodep-celery" and "binary_tensor_data" in meta["extensions"]
    assert client.is_model_ready("tiny") and client.is_model_ready("tiny", "1")
    assert not client.is_model_ready("ghost")
    assert not client.is_model_ready("nope") and not client.is_model_ready("tiny", "2")


def test_model_metadata_from_the_worker(client: httpclient.InferenceServerClient) -> None:
    for meta in (client.get_model_metadata("tiny"), client.get_model_metadata("tiny", "1")):
        assert meta["name"] == "tiny" and meta["versions"] == ["1"]
        assert meta["platform"] == "pytorch_torchscript"
        assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1]}]
        assert meta["outputs"] == [{"name": "OUTPUT__0", "datatype": "FP32", "shape": [-1]}]
        assert meta["parameters"]["signature"] == "forward(x: Tensor) -> Tensor"
    with pytest.raises(InferenceServerException) as info:
        client.get_model_metadata("nope")
    assert info.value.status() == "404" and "unknown model 'nope'" in info.value.message()


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tiny_matches_in_process(
    client: httpclient.InferenceServerClient, stack: Stack, binary: bool
) -> None:
    x = image_batch(seed=1)
    inp = httpclient.InferInput("x", list(x.shape), "FP32").set_data_from_numpy(x, binary)
    out = httpclient.InferRequestedOutput("OUTPUT__0", binary_data=binary)
    result = client.infer("tiny", [inp], outputs=[out], request_id="r-1")
    expected = in_process(stack, "tiny", torch.from_numpy(x))
    got = result.as_numpy("OUTPUT__0")
    assert got.shape == (2, 10) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-6)  # type: ignore[union-attr]
    response = result.get_response()
    assert response["id"] == "r-1" and response["model_version"] == "1"
    has_binary = "binary_data_size" in (response["outputs"][0].get("parameters") or {})
    assert has_binary == binary


def test_client_defaults_compression_and_positional_names(
    client: httpclient.InferenceServerClient, stack: Stack
) -> None:
    x = image_batch(seed=2, n=1, size=8)
    inp = httpclient.InferInput("INPUT__0", list(x.shape), "FP32").set_data_from_numpy(x)
    expected = in_process(stack, "tiny", torch.from_numpy(x)).numpy()  # type: ignore[union-attr]
    for kw in (
        {},
        {"model_version": "1"},
        {"request_compression_algorithm": "gzip", "response_compression_algorithm": "gzip"},
        {"request_compression_algorithm": "deflate", "response_compression_algorithm": "deflate"},
    ):
        result = client.infer("tiny", [inp], **kw)
        np.testing.assert_allclose(result.as_numpy("OUTPUT__0"), expected, rtol=1e-5, atol=1e-6)


def test_strings_in_and_out(client: httpclient.InferenceServerClient) -> None:
    texts = np.array(["hello big world", "a b"], dtype=object)
    inp = httpclient.InferInput("texts", [2], "BYTES").set_data_from_numpy(texts)
    result = client.infer("textgen", [inp])
    assert result.as_numpy("OUTPUT__0").tolist() == [b"WORLD BIG HELLO", b"B A"]
    one = httpclient.InferInput("text", [1], "BYTES")
    one.set_data_from_numpy(np.array(["hi"], dtype=object), binary_data=False)
    out = httpclient.InferRequestedOutput("OUTPUT__0", binary_data=False)
    # JSON BYTES come back as str: tritonclient keeps what the JSON held
    assert client.infer("echo", [one], outputs=[out]).as_numpy("OUTPUT__0").tolist() == ["echo: hi"]


def test_several_inputs_by_argument_name(
    client: httpclient.InferenceServerClient, stack: Stack
) -> None:
    g = torch.Generator().manual_seed(3)
    x, dx = torch.rand(1, 2, generator=g), torch.rand(1, 2, generator=g)
    y, single, dy = (torch.rand(1, 3, generator=g) for _ in range(3))
    inputs = []
    for name, t in (
        ("tensor_list.0", x),
        ("tensor_list.1", y),
        ("single_tensor", single),
        ("tensor_dict.x", dx),
        ("tensor_dict.y", dy),
    ):
        inputs.append(httpclient.InferInput(name, list(t.shape), "FP32"))
        inputs[-1].set_data_from_numpy(t.numpy())
    inputs.append(httpclient.InferInput("an_integer", [1], "INT64"))
    inputs[-1].set_data_from_numpy(np.array([4], dtype=np.int64), binary_data=False)
    inputs.append(httpclient.InferInput("a_string", [1], "BYTES"))
    inputs[-1].set_data_from_numpy(np.array(["tag"], dtype=object))
    meta = client.get_model_metadata("multi")  # known before multi's first request
    assert [i["name"] for i in meta["inputs"]][:2] == ["tensor_list.<i>", "single_tensor"]
    result = client.infer("multi", inputs)
    expected = in_process(stack, "multi", [x, y], single, {"x": dx, "y": dy}, 4, "tag")
    (first, second), text, number = expected["out"]  # type: ignore[index]
    np.testing.assert_allclose(result.as_numpy("out.0.0"), first.numpy(), rtol=1e-5)
    np.testing.assert_allclose(result.as_numpy("out.0.1"), second.numpy(), rtol=1e-5)
    assert result.as_numpy("out.1").tolist() == [text.encode()]
    assert result.as_numpy("out.2").tolist() == [number]


def raises(call: object, *args: object, **kw: object) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as info:
        call(*args, **kw)  # type: ignore[operator]
    return info.value


def test_errors_reach_the_client_with_our_message(client: httpclient.InferenceServerClient) -> None:
    x = httpclient.InferInput("x", [1, 3, 4, 4], "FP32")
    x.set_data_from_numpy(np.zeros((1, 3, 4, 4), np.float32))
    err = raises(client.infer, "nope", [x])
    assert err.status() == "404" and err.message().startswith("unknown model 'nope'")
    assert raises(client.infer, "tiny", [x], model_version="2").status() == "404"
    bad = httpclient.InferInput("x", [2], "UINT32").set_data_from_numpy(np.ones(2, np.uint32))
    err = raises(client.infer, "tiny", [bad])
    assert err.status() == "400" and "datatype 'UINT32'" in err.message()
    err = raises(client.infer, "tiny", [x, x])
    assert err.status() == "400" and "distinct" in err.message()
    wrong = httpclient.InferInput("x", [2], "INT64").set_data_from_numpy(np.ones(2, np.int64))
    err = raises(client.infer, "tiny", [wrong])  # the model itself rejects a 1-D int tensor
    assert err.status() == "422" and "model tiny rejected" in err.message()
    out = httpclient.InferRequestedOutput("logits")
    err = raises(client.infer, "tiny", [x], outputs=[out])
    assert err.status() == "400" and "unknown output 'logits'" in err.message()


def test_readme_examples_run(web: Web, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(CLIENT_EXAMPLE.replace("localhost:8000", web.url.removeprefix("http://")))
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "(1, 10)" in done.stdout and "'FP32'" in done.stdout
    curl = 'curl() { command curl --fail-with-body -sS "$@"; }\n' + CURL_EXAMPLE.replace(
        "localhost:8000", web.url.removeprefix("http://")
    )
    done = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert '"name":"OUTPUT__0","datatype":"FP32","shape":[1,10]' in done.stdout


def v2_body() -> dict[str, object]:
    x = image_batch(seed=4, n=1, size=16)
    return {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                        "data": x.flatten().tolist()}]}  # fmt: skip


def test_v2_and_inference_requests_share_batches(web: Web, stack: Stack) -> None:
    """Requests of both protocols for one model, sent together, land in one batch: the worker
    logs each batch with the ids of its requests."""
    worker_log = stack.workdir / "worker-small.log"
    v2 = v2_body()

    def send(i: int, rid: str) -> int:
        if i % 2:
            return requests.post(
                f"{web.url}/v2/models/tiny/infer",
                json=v2,
                headers={"X-Request-ID": rid},
                timeout=60,
            ).status_code
        return requests.post(
            f"{web.url}/inference", json=tiny_body(i), headers={"X-Request-ID": rid}, timeout=60
        ).status_code

    for _ in range(5):
        tag = f"mix{time.time_ns()}"
        ids = [f"{tag}-{'v2' if i % 2 else 'inf'}-{i}" for i in range(48)]
        with ThreadPoolExecutor(24) as pool:
            assert set(pool.map(send, range(len(ids)), ids)) == {200}
        deadline = wait_s(10)
        while time.monotonic() < deadline:
            lines = [ln for ln in worker_log.read_text(errors="replace").splitlines() if tag in ln]
            if sum(len(re.findall(tag, ln)) for ln in lines) >= len(ids):
                break
            time.sleep(0.1)
        mixed = [ln for ln in lines if f"{tag}-v2" in ln and f"{tag}-inf" in ln]
        if mixed:
            assert "batch of tiny" in mixed[0]
            return
    pytest.fail("no batch held both a /v2 and an /inference request in 5 rounds")
