"""worker.processing: decoding, classification, image outputs, labels and the palette."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from autodep_celery import errors
from autodep_celery.worker import processing

pytestmark = pytest.mark.unit

LIMIT = 40_000_000


def encode(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def gradient(width: int = 6, height: int = 4) -> Image.Image:
    img = Image.new("RGB", (width, height))
    img.putdata([(x * 40, y * 60, (x + y) * 10) for y in range(height) for x in range(width)])
    return img


def test_decode_png_exact_pixels() -> None:
    t = processing.decode_image(encode(gradient()), LIMIT)
    assert t.shape == (3, 4, 6) and t.dtype == torch.float32
    assert t[0, 2, 3].item() == pytest.approx(120 / 255)
    assert t[1, 2, 3].item() == pytest.approx(120 / 255)
    assert t[2, 3, 5].item() == pytest.approx(80 / 255)


def test_decode_jpeg_close_to_source() -> None:
    img = Image.new("RGB", (32, 16), (200, 100, 50))
    t = processing.decode_image(encode(img, "JPEG"), LIMIT)
    assert t.shape == (3, 16, 32)
    assert torch.allclose(t.mean(dim=(1, 2)), torch.tensor([200, 100, 50]) / 255, atol=0.02)


def test_grayscale_is_expanded_and_alpha_dropped() -> None:
    gray = processing.decode_image(encode(Image.new("L", (5, 3), 77)), LIMIT)
    assert gray.shape == (3, 3, 5) and torch.all(gray == 77 / 255)
    rgba = processing.decode_image(encode(Image.new("RGBA", (5, 3), (10, 20, 30, 0))), LIMIT)
    assert rgba.shape == (3, 3, 5)
    assert rgba[:, 0, 0].tolist() == pytest.approx([10 / 255, 20 / 255, 30 / 255])


def test_resize_to_configured_height_and_width() -> None:
    t = processing.decode_image(encode(gradient(60, 40)), LIMIT, resize=(8, 12))
    assert t.shape == (3, 8, 12)


@pytest.mark.parametrize("data", [b"", b"definitely not an image" * 20, b"\x89PNG\r\n\x1a\n"])
def test_garbage_is_invalid_image(data: bytes) -> None:
    with pytest.raises(errors.InvalidImage) as info:
        processing.decode_image(data, LIMIT)
    assert info.value.http_status == 422


def test_truncated_image_is_invalid_image() -> None:
    noise = Image.frombytes("RGB", (64, 64), bytes(range(256)) * 48)
    data = encode(noise)
    with pytest.raises(errors.InvalidImage):
        processing.decode_image(data[: len(data) // 2], LIMIT)


def test_pixel_limit_is_checked_from_the_header() -> None:
    data = encode(gradient(100, 50))
    with pytest.raises(errors.ImageTooLarge) as info:
        processing.decode_image(data, max_pixels=4999)
    assert info.value.http_status == 413 and "5000" in info.value.message
    # truncated pixel data: still refused as too large, so no pixel was decoded
    with pytest.raises(errors.ImageTooLarge):
        processing.decode_image(data[:100], max_pixels=4999)
    assert processing.decode_image(data, max_pixels=5000).shape == (3, 50, 100)


def test_normalise() -> None:
    x = torch.full((1, 3, 2, 2), 0.5)
    y = processing.normalise(x, (0.5, 0.25, 0.0), (1.0, 0.5, 0.25))
    assert y[0, :, 0, 0].tolist() == pytest.approx([0.0, 0.5, 2.0])


def test_classify_matches_hand_computation() -> None:
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 5.0]])
    out = processing.classify(logits, [2, 1], ["a", "b", "c"])
    total = math.exp(1) + math.exp(2) + math.exp(3)
    first = out[0]["Classification"]  # type: ignore[index]
    assert [e["label"] for e in first] == ["c", "b"]
    assert first[0]["probability"] == pytest.approx(math.exp(3) / total, rel=1e-6)
    assert first[1]["probability"] == pytest.approx(math.exp(2) / total, rel=1e-6)
    second = out[1]["Classification"]  # type: ignore[index]
    assert second == [{"probability": pytest.approx(math.exp(5) / (2 + math.exp(5))), "label": "c"}]


@pytest.mark.parametrize("top_n", [0, -1, 4])
def test_top_n_out_of_range_is_a_per_item_error(top_n: int) -> None:
    out = processing.classify(torch.zeros(2, 3), [top_n, 3], None)
    assert isinstance(out[0], errors.InvalidInput) and out[0].http_status == 422
    assert str(top_n) in out[0].message and "3 classes" in out[0].message
    assert len(out[1]["Classification"]) == 3  # type: ignore[index]


def test_labels_default_imagenet_for_1000_else_class_i() -> None:
    names = processing.labels_for(1000, None)
    assert len(names) == 1000 and names[0] == "tench" and names[999] == "toilet_tissue"
    assert processing.labels_for(3, None) == ["class_0", "class_1", "class_2"]
    assert processing.labels_for(3, ["x", "y", "z"]) == ["x", "y", "z"]
    logits = torch.zeros(1, 1000)
    logits[0, 1] = 10
    out = processing.classify(logits, [1], None)
    assert out[0]["Classification"][0]["label"] == "goldfish"  # type: ignore[index]


def test_labels_file_and_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_text("cat\n dog \n\n")
    assert processing.read_labels(str(path)) == ["cat", "dog"]
    with pytest.raises(errors.ModelError, match="2 labels but the model outputs 3"):
        processing.classify(torch.zeros(1, 3), [1], ["cat", "dog"])


def test_classify_rejects_dense_outputs() -> None:
    with pytest.raises(errors.InvalidInput, match="ImageToImage"):
        processing.classify(torch.zeros(1, 21, 4, 4), [1], None)


def test_main_output_unwraps_tuple_and_dict() -> None:
    t = torch.zeros(1)
    assert processing.main_output((t, 1)) is t
    assert processing.main_output({"out": t, "aux": 2}) is t
    assert processing.main_output(t) is t


def test_palette_follows_the_voc_scheme() -> None:
    p = processing.palette()
    assert p.shape == (256, 3) and p.dtype == torch.uint8
    assert p[:5].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128]]
    assert p[255].tolist() == [224, 224, 192]
    assert len({tuple(c) for c in p.tolist()}) == 256


def png_pixels(png: bytes) -> tuple[str, torch.Tensor]:
    img = Image.open(io.BytesIO(png))
    img.load()
    raw = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    return img.mode, raw.view(img.height, img.width, -1)


def test_three_channel_output_round_trips_as_png() -> None:
    x = torch.rand(2, 3, 5, 7)
    out = processing.image_outputs(x)
    assert len(out) == 2
    result = out[1]["B64Image"]
    assert (result["height"], result["width"]) == (5, 7)
    mode, pixels = png_pixels(result["image"])
    assert mode == "RGB"
    expected = (x[1].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0)
    assert torch.equal(pixels, expected)


def test_one_channel_output_is_grayscale() -> None:
    out = processing.image_outputs(torch.full((1, 1, 3, 4), 2.0))  # clamped to white
    mode, pixels = png_pixels(out[0]["B64Image"]["image"])
    assert mode == "L" and torch.all(pixels == 255)


@pytest.mark.parametrize("wrap", [lambda t: {"out": t}, lambda t: t])
def test_segmentation_output_is_coloured_argmax(wrap) -> None:  # type: ignore[no-untyped-def]
    scores = torch.zeros(1, 21, 2, 3)
    scores[0, 1, 0, 0] = 1  # class 1 top-left
    scores[0, 20, 1, 2] = 1  # class 20 bottom-right; elsewhere class 0
    out = processing.image_outputs(wrap(scores))
    mode, pixels = png_pixels(out[0]["B64Image"]["image"])
    p = processing.palette()
    assert mode == "RGB"
    assert pixels[0, 0].tolist() == p[1].tolist()
    assert pixels[1, 2].tolist() == p[20].tolist()
    assert pixels[0, 1].tolist() == [0, 0, 0]


def test_two_channel_output_is_segmentation_too() -> None:
    scores = torch.tensor([[[[0.0, 1.0]], [[1.0, 0.0]]]])  # [1, 2, 1, 2]
    _, pixels = png_pixels(processing.image_outputs(scores)[0]["B64Image"]["image"])
    assert pixels[0, 0].tolist() == [128, 0, 0] and pixels[0, 1].tolist() == [0, 0, 0]


def test_non_image_output_is_refused() -> None:
    with pytest.raises(errors.InvalidInput):
        processing.image_outputs(torch.zeros(2, 10))


def test_torch_error_line_finds_the_real_error() -> None:
    script_error = RuntimeError(
        "The following operation failed in the TorchScript interpreter.\n"
        "Traceback of TorchScript (most recent call last):\n  File x\n\n"
        "RuntimeError: shapes cannot be multiplied\n"
    )
    assert processing.torch_error_line(script_error) == "RuntimeError: shapes cannot be multiplied"
    assert processing.torch_error_line(ValueError("first\nsecond")) == "first"
