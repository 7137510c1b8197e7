"""Inputs and in-process references for integration tests (no services here)."""

from __future__ import annotations

import base64
import io
import time

import torch
from PIL import Image


def image_bytes(
    width: int = 224, height: int = 224, fmt: str = "PNG", seed: int = 0, mode: str = "RGB"
) -> bytes:
    g = torch.Generator().manual_seed(seed)
    pixels = (torch.rand(height, width, 3, generator=g) * 255).to(torch.uint8)
    img = Image.frombytes("RGB", (width, height), bytes(pixels.flatten().tolist())).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def tiny_body(seed: int = 0) -> dict:
    """A small classification request for the `tiny` model."""
    return {
        "data": {"B64Image": {"image": b64(image_bytes(16, 16, seed=seed))}},
        "inference_type": {"ImageClassification": {"top_n": 1}},
        "model": "tiny",
    }


def wait_s(seconds: float) -> float:
    """A monotonic deadline for polling loops in tests."""
    return time.monotonic() + seconds


IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def to_tensor(data: bytes) -> torch.Tensor:
    """An independent decode: RGB, [3, H, W] float in 0..1."""
    img = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = img.size
    raw = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    return raw.view(h, w, 3).permute(2, 0, 1).float() / 255.0


def reference_probabilities(model_path: str, data: bytes) -> torch.Tensor:
    """What the model gives in process: ImageNet-normalised input, softmax output."""
    model = torch.jit.load(model_path).eval()
    x = ((to_tensor(data) - IMAGENET_MEAN) / IMAGENET_STD).unsqueeze(0)
    with torch.inference_mode():
        return torch.softmax(model(x), dim=1)[0]


def reference_output(model_path: str, data: bytes) -> torch.Tensor | dict[str, torch.Tensor]:
    model = torch.jit.load(model_path).eval()
    with torch.inference_mode():
        return model(to_tensor(data).unsqueeze(0))


def decode_png(b64_text: str) -> torch.Tensor:
    """[C, H, W] uint8 of a base64 PNG from a response."""
    img = Image.open(io.BytesIO(base64.b64decode(b64_text)))
    img.load()
    channels = len(img.getbands())
    w, h = img.size
    raw = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    return raw.view(h, w, channels).permute(2, 0, 1)
