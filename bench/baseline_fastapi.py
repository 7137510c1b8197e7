"""The baseline: the FastAPI server a user would write instead of deploying autodep-celery.

Same model, same Autodep /inference JSON, same decode → normalise → forward → classify
(worker.processing), one request at a time per call: no batching, no queue. bench.systems starts
it as `uvicorn bench.baseline_fastapi:app --workers 2`; each worker process loads its own copy
of the model from $BENCH_MODEL with $BENCH_TORCH_THREADS torch threads, then touches a file in
$BENCH_READY_DIR so the benchmark knows every worker is ready. A plain `def` endpoint: FastAPI
runs it in its thread pool, which is what most such servers do.

One deliberate difference from a naive server: TCP_NODELAY is restored on accepted connections
(see _nodelay_for_prebound_sockets); without it, uvicorn --workers N on Linux adds ~40 ms to
every keep-alive request, and the baseline would lose for a reason that has nothing to do
with serving models.
"""

from __future__ import annotations

import asyncio.base_events
import base64
import binascii
import os
import socket
import time
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI, HTTPException

from autodep_celery import errors
from autodep_celery.config import IMAGENET_MEAN, IMAGENET_STD, WebSettings
from autodep_celery.worker import processing


def _nodelay_for_prebound_sockets() -> None:
    """uvicorn --workers N binds its listener with proto 0; asyncio then skips TCP_NODELAY on
    accepted sockets (it checks proto == IPPROTO_TCP), so Nagle + delayed ACK cost ~40 ms per
    keep-alive request (Kludex/uvicorn#3149, open for uvicorn 0.54). Set it for any TCP socket."""

    def set_nodelay(sock: socket.socket) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    asyncio.base_events._set_nodelay = set_nodelay  # type: ignore[attr-defined]


_nodelay_for_prebound_sockets()
MODEL_PATH = os.environ.get("BENCH_MODEL", "")
MAX_PIXELS = WebSettings().max_image_pixels

torch.set_num_threads(int(os.environ.get("BENCH_TORCH_THREADS", "1")))
model = torch.jit.load(MODEL_PATH, map_location="cpu").eval() if MODEL_PATH else None
app = FastAPI(title="baseline")


def _predict(image: bytes, top_n: int) -> dict[str, Any]:
    tensor = processing.decode_image(image, MAX_PIXELS, None)
    batch = processing.normalise(tensor.unsqueeze(0), IMAGENET_MEAN, IMAGENET_STD)
    with torch.inference_mode():
        logits = processing.main_output(model(batch))
    result = processing.classify(logits, [top_n], None)[0]
    if isinstance(result, errors.AutodepError):
        raise HTTPException(422, result.message)
    return result


if model is not None:  # warm up before saying ready: the first forward is slow
    _predict(processing.encode_png(torch.zeros(224, 224, 3, dtype=torch.uint8)), 1)
    if os.environ.get("BENCH_READY_DIR"):
        Path(os.environ["BENCH_READY_DIR"], f"ready-{os.getpid()}").touch()


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/inference")
def inference(body: dict[str, Any]) -> list[dict[str, Any]]:
    try:
        b64 = body["data"]["B64Image"]["image"]
        top_n = int(body["inference_type"]["ImageClassification"]["top_n"])
        image = base64.b64decode(b64, validate=True)
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise HTTPException(422, f"not an image classification request: {exc}") from None
    started = time.perf_counter_ns()
    try:
        result = _predict(image, top_n)
    except errors.AutodepError as exc:
        raise HTTPException(exc.http_status, exc.message) from None
    took = time.perf_counter_ns() - started
    return [result, {"secs": took // 1_000_000_000, "nanos": took % 1_000_000_000}]
