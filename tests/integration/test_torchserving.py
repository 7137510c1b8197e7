"""torch-serving's API on the real stack (gunicorn, Redis, a Celery worker): POST /serve on the
`multi` model (torch-serving's example signature) answers exactly what the model gives in
process, every mistake is a 4xx in torch-serving's envelope, GET /healthcheck answers, and
/serve and /inference requests of one model share batches."""

from __future__ import annotations

import dataclasses
import re
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import torch

from autodep_celery import processes
from tests.integration.conftest import Stack, Web, start_web
from tests.integration.support import wait_s

pytestmark = pytest.mark.integration

INT64_MAX = 2**63 - 1


def tensor(shape: list[int], values: list[Any], dtype: str = "float32") -> dict[str, Any]:
    return {"type": "tensor", "shape": shape, "value": values, "data_type": dtype}


def multi_body(seed: int = 0, n: int = 30) -> list[dict[str, Any]]:
    g = torch.Generator().manual_seed(seed)
    x, y, single, dx, dy = (torch.randn(k, generator=g).tolist() for k in (4, 6, 6, 4, 6))
    return [
        {"type": "tensor_list", "value": [tensor([2, 2], x), tensor([2, 3], y)]},
        tensor([2, 3], single),
        {"type": "tensor_dict", "value": {"x": tensor([2, 2], dx), "y": tensor([2, 3], dy)}},
        {"type": "scalar", "data_type": "int64", "value": n},
        {"type": "string", "value": f"Hello {seed}!"},
    ]


def in_process(model_path: Path, body: list[dict[str, Any]]) -> Any:
    """The same call made in this process: torch.jit.load, then forward(*args)."""

    def arg(v: dict[str, Any]) -> Any:
        if v["type"] == "tensor":
            dtype = getattr(torch, v.get("data_type", "float32"))
            return torch.tensor(v["value"], dtype=dtype).reshape(v["shape"])
        if v["type"] == "tensor_list":
            return [arg({"type": "tensor", **t}) for t in v["value"]]
        if v["type"] == "tensor_dict":
            return {k: arg({"type": "tensor", **t}) for k, t in v["value"].items()}
        return v["value"]

    model = torch.jit.load(str(model_path)).eval()
    with torch.inference_mode():
        return model(*[arg(v) for v in body])


def as_typed_json(value: Any) -> Any:
    """What /serve must answer for `value`: every float32 as the double it is exactly."""
    if isinstance(value, torch.Tensor):
        return {
            "type": "tensor",
            "data_type": str(value.dtype).removeprefix("torch."),
            "shape": list(value.shape),
            "value": value.flatten().tolist(),
        }
    if isinstance(value, dict):
        return {"type": "generic_dict", "value": {k: as_typed_json(v) for k, v in value.items()}}
    if isinstance(value, list | tuple):
        return [as_typed_json(v) for v in value]
    if isinstance(value, bool):
        return {"type": "scalar", "data_type": "bool", "value": value}
    if isinstance(value, int):
        return {"type": "scalar", "data_type": "int64", "value": value}
    if isinstance(value, float):
        return {"type": "scalar", "data_type": "float64", "value": value}
    return {"type": "string", "value": value}


def serve(web: Web, body: Any, model: str | None = "multi", **kw: Any) -> requests.Response:
    query = "" if model is None else f"?servable_identifier={model}"
    return web.post(f"/serve{query}", body, **kw)


def test_serve_answers_exactly_what_the_model_gives_in_process(web: Web, stack: Stack) -> None:
    for seed in range(3):
        body = multi_body(seed, n=INT64_MAX if seed == 2 else 30 + seed)
        r = serve(web, body)
        assert r.status_code == 200, r.text
        got = r.json()
        assert {k: got[k] for k in ("code", "message", "description")} == {
            "code": 200,
            "message": "OK",
            "description": "Success",
        }
        expected = in_process(stack.model_dir / "multi.pt", body)
        assert got["result"] == as_typed_json(expected)  # every value, exactly
        [first, _second], text, n = got["result"]["value"]["out"]
        assert first["data_type"] == "float32" and first["shape"] == [2, 3]
        packed = struct.pack("<6f", *first["value"])  # each value is a float32, exactly
        assert struct.unpack("<6f", packed) == tuple(first["value"])
        assert text == {"type": "string", "value": f"Hello {seed}!"}
        assert n["value"] == body[3]["value"]  # int64's largest survives the round trip
    assert str(INT64_MAX) in r.text


def test_a_single_typed_value_serves_any_model(web: Web, stack: Stack) -> None:
    x = tensor([1, 3, 4, 4], [float(i) / 48 for i in range(48)])
    r = serve(web, x, "tiny")  # configured for ImageClassification: Tensor is the raw type
    assert r.status_code == 200, r.text
    expected = in_process(stack.model_dir / "tiny.pt", [x])
    assert r.json()["result"] == as_typed_json(expected)
    r = serve(web, {"type": "string", "value": "hi"}, "echo")
    assert r.json()["result"] == {"type": "string", "value": "echo: hi"}


def test_healthcheck(web: Web) -> None:
    r = web.get("/healthcheck")
    assert r.status_code == 200
    assert r.json() == {"code": 200, "message": "OK", "description": "OK"}


BODY = multi_body()
ERRORS = [
    # (query model or None, body, status, error code)
    (None, BODY, 400, "missing_servable_identifier"),
    ("multi&servable_identifier=multi", BODY, 400, "duplicate_servable_identifier"),
    ("nope", BODY, 404, "unknown_model"),
    ("..", BODY, 404, "unknown_model"),
    ("../models/multi.pt", BODY, 404, "unknown_model"),
    ("%2Ftmp%2Fmulti.pt", BODY, 404, "unknown_model"),
    ("multi", b"", 400, "empty_body"),
    ("multi", b"[{]", 400, "invalid_json"),
    ("multi", [{"type": "tensr", "value": []}], 400, "invalid_typed_value"),
    ("multi", [{"type": "tensor", "shape": [2], "value": [1]}], 400, "shape_mismatch"),
    ("multi", [tensor([1], [1], "float8")], 400, "unknown_dtype"),
    ("multi", [tensor([1], [1.5], "int64")], 400, "invalid_tensor_value"),
    ("multi", [{"type": "scalar", "value": 3}], 400, "unknown_dtype"),
    ("multi", BODY[:3], 422, "invalid_arguments"),
    ("multi", [BODY[1], *BODY[1:]], 422, "invalid_arguments"),
    ("multi", [*BODY[:3], {"type": "string", "value": "3"}, BODY[4]], 422, "invalid_arguments"),
    (
        "multi",
        [*BODY[:2], {"type": "tensor_dict", "value": {}}, *BODY[3:]],
        422,
        "model_rejected_input",
    ),
]


@pytest.mark.parametrize(("model", "body", "status", "code"), ERRORS, ids=range(len(ERRORS)))
def test_every_mistake_is_a_4xx_in_the_envelope(
    web: Web, model: str | None, body: Any, status: int, code: str
) -> None:
    data = body if isinstance(body, bytes) else None
    r = serve(web, None if data is not None else body, model, data=data)
    assert r.status_code == status, r.text
    got = r.json()
    assert got["code"] == status and got["message"] == "Client Error" and got["description"]
    assert got["error"]["code"] == code and got["detail"] == got["error"]["message"]
    assert "result" not in got


def test_arity_and_type_errors_name_the_argument(web: Web) -> None:
    r = serve(web, [BODY[1], *BODY[1:]])
    assert r.json()["error"]["message"].startswith(
        "argument 1 (tensor_list) of model multi must be List[Tensor], but a Tensor (float32, "
        "shape [2, 3]) was sent; its signature is forward(tensor_list: List[Tensor], "
        "single_tensor: Tensor, tensor_dict: Dict[str, Tensor], an_integer: int, a_string: str)"
    )
    r = serve(web, BODY[:3])
    assert "model multi takes 5 arguments but 3 were sent" in r.json()["detail"]


def test_inference_with_tensor_data_answers_as_serve(web: Web) -> None:
    body = multi_body(7)
    served = serve(web, body).json()["result"]
    r = web.post(
        "/inference", {"data": {"Tensor": body}, "inference_type": "Tensor", "model": "multi"}
    )
    assert r.status_code == 200, r.text
    inference, compute = r.json()
    assert inference == {"Tensor": served} and set(compute) == {"secs", "nanos"}


# ---- shared batches -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def one_process_web(stack: Stack) -> Iterator[Web]:
    """Batches form inside one web process: a single one receives every request."""
    settings = dataclasses.replace(
        stack.settings,
        web=dataclasses.replace(stack.settings.web, port=processes.free_port(), processes=1),
    )
    w = start_web(stack, settings, "torchserving-web")
    yield w
    w.child.stop()


def _batches(log: Path, model: str) -> list[list[str]]:
    """The request ids of each batch of `model` in a worker's access log."""
    out = []
    for line in log.read_text(errors="replace").splitlines():
        if f"batch of {model}:" in line:
            found = re.search(r"request_id=(\S+)", line)
            if found:
                out.append(found.group(1).split(","))
    return out


def test_serve_and_inference_requests_share_batches(one_process_web: Web, stack: Stack) -> None:
    web = one_process_web
    body = multi_body(3)
    log = stack.workdir / "worker-small.log"
    statuses: list[int] = []

    def send(kind: str, rid: str) -> None:
        headers = {"X-Request-ID": rid}
        if kind == "serve":
            r = serve(web, body, headers=headers)
        else:
            payload = {"data": {"Tensor": body}, "inference_type": "Tensor", "model": "multi"}
            r = web.post("/inference", payload, headers=headers)
        statuses.append(r.status_code)

    nonce = time.time_ns()
    for attempt in range(10):
        ids = [f"ts{nonce}-{attempt}-{kind}-{i}" for i in range(12) for kind in ("serve", "inf")]
        threads = [threading.Thread(target=send, args=(rid.split("-")[2], rid)) for rid in ids]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert statuses and set(statuses) == {200}, statuses
        deadline = wait_s(10)
        while time.monotonic() < deadline:
            mine = [b for b in _batches(log, "multi") if any(i in ids for i in b)]
            if sum(len(b) for b in mine) >= len(ids):
                break
            time.sleep(0.1)
        mixed = [b for b in mine if {i.split("-")[2] for i in b if i in ids} == {"serve", "inf"}]
        if mixed:
            assert max(len(b) for b in mixed) >= 2
            return
    pytest.fail(f"no batch held both a /serve and an /inference request: {mine}")
