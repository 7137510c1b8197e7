"""The worker enforces each model's input bounds too (items that did not come through the web's
check): from the image header before decoding, from tensor shapes before any tensor is built,
and an oversized item fails alone while the items batched with it are computed."""

from __future__ import annotations

import struct
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

from autodep_celery import contract, input_limits, typed
from autodep_celery.config import ModelSettings, Settings
from autodep_celery.web.testing import png_bytes
from autodep_celery.worker.batch import run_batch
from autodep_celery.worker.registry import Registry

pytestmark = pytest.mark.unit

FAR = time.time() + 3600


@pytest.fixture(scope="module")
def settings(model_dir: Path) -> Settings:
    tiny = str(model_dir / "tiny.pt")
    return Settings(
        models=(
            ModelSettings("plain", tiny, task="ImageClassification"),  # the default bound
            ModelSettings("small", tiny, task="ImageClassification", max_input_pixels=100),
            ModelSettings("resized", tiny, task="ImageClassification", resize=(8, 8)),
            ModelSettings("raw", tiny, max_input_elements=48),
        )
    )


@pytest.fixture(scope="module")
def registry(settings: Settings) -> Registry:
    return Registry(settings)


def header_only_png(width: int, height: int) -> bytes:
    """A PNG's signature, IHDR and the start of an IDAT, without pixel data: Pillow opens it
    (lazily) but cannot decode it, so a size error proves the size was checked first."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
        + struct.pack(">I", 10)
        + b"IDAT"
    )


def results(registry: Registry, settings: Settings, model: str, items: list[Any]) -> list[Any]:
    batch = dict(contract.make_batch(model, "b", "", items))
    return run_batch(registry, settings, batch)["results"]  # type: ignore[no-any-return]


def image(data: bytes) -> contract.Item:
    return contract.image_item("ImageClassification", data, FAR, 2)


def test_an_oversized_image_fails_alone_before_it_is_decoded(
    registry: Registry, settings: Settings
) -> None:
    side = 2049  # just over the default 2048 x 2048 of a model without resize
    first, big, last = results(
        registry,
        settings,
        "plain",
        [image(png_bytes(6, 6)), image(header_only_png(side, side)), image(png_bytes(6, 6))],
    )
    assert first["ok"] and last["ok"], (first, last)
    assert big["error"]["code"] == "input_too_large" and big["error"]["status"] == 413
    assert f"{input_limits.DEFAULT_MAX_INPUT_PIXELS} pixels" in big["error"]["message"]


def test_configured_bound_and_resize(registry: Registry, settings: Settings) -> None:
    fits, over = results(
        registry, settings, "small", [image(png_bytes(10, 10)), image(png_bytes(11, 10))]
    )
    assert fits["ok"] and over["error"]["code"] == "input_too_large"
    [resized] = results(registry, settings, "resized", [image(png_bytes(300, 300))])
    assert resized["ok"], resized  # resized before the forward pass: no bound of its own
    [bomb] = results(registry, settings, "resized", [image(header_only_png(7000, 7000))])
    assert bomb["error"]["code"] == "image_too_large"  # web.max_image_pixels still applies


def test_an_oversized_tensor_request_fails_alone(registry: Registry, settings: Settings) -> None:
    def item(width: int) -> contract.Item:
        n = 3 * 4 * width
        return contract.args_item(
            [typed.tensor_from_values("float32", [1, 3, 4, width], [0.5] * n)], FAR
        )

    over, fits = results(registry, settings, "raw", [item(5), item(4)])  # 60 and 48 elements
    assert fits["ok"] and fits["output"]["Tensor"]["shape"] == [1, 10]
    assert over["error"]["code"] == "input_too_large"
    assert "hold 60 elements; model raw takes at most 48" in over["error"]["message"]
