"""Pure pre- and post-processing for the worker: image bytes in, Autodep outputs out.

Called by worker.batch (and the registry's warm-up). No Redis, no Celery, no model loading:
functions of tensors and bytes only, so they are tested without a worker. Imports torch and PIL.
Output shapes follow README, HTTP API and autodep_celery.contract (images as raw PNG bytes).
"""

from __future__ import annotations

import ctypes
import io
import warnings
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError

from autodep_celery import errors, input_limits
from autodep_celery.config import ModelSettings

PNG_COMPRESS_LEVEL = 1
"""zlib level for output PNGs: level 1 is several times faster than 6 for ~10% more bytes."""


def decode_image(
    data: bytes,
    max_pixels: int,
    resize: Sequence[int] | None = None,
    model: ModelSettings | None = None,
) -> torch.Tensor:
    """Decode PNG/JPEG/... bytes to a float tensor [3, H, W] in 0..1 (RGB, alpha dropped).

    `resize` is ``[height, width]`` (PIL bilinear), or None to keep the native size. The size
    is checked from the header, before decoding, against `max_pixels` and what `model` takes
    (autodep_celery.input_limits), for items that did not come through the web's check.
    """
    try:
        with warnings.catch_warnings():
            # We enforce our own, lower pixel limit below; PIL's warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img: Image.Image = Image.open(io.BytesIO(data), formats=input_limits.IMAGE_FORMATS)
        width, height = img.size
        input_limits.check_image(width, height, max_pixels, model)
        if img.mode != "RGB":
            img = img.convert("RGB")  # drops alpha, expands grayscale and palettes
        else:
            img.load()
        if resize is not None and (img.height, img.width) != (resize[0], resize[1]):
            img = img.resize((int(resize[1]), int(resize[0])), Image.Resampling.BILINEAR)
    except errors.AutodepError:
        raise
    except Image.DecompressionBombError as exc:
        raise errors.ImageTooLarge(f"image is too large to decode: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError, UnidentifiedImageError) as exc:
        raise errors.InvalidImage(
            f"the image bytes could not be decoded ({_first_line(exc)}); send PNG or JPEG"
        ) from None
    # bytearray: torch.frombuffer warns on read-only buffers, and the tensor must own its data.
    pixels = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    return pixels.view(img.height, img.width, 3).permute(2, 0, 1).float().div_(255.0)


def normalise(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(x - mean) / std per channel of a [B, C, H, W] batch (ImageClassification only)."""
    m = torch.tensor(mean, dtype=batch.dtype, device=batch.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=batch.dtype, device=batch.device).view(1, -1, 1, 1)
    return (batch - m) / s


def main_output(output: Any) -> Any:
    """The tensor a caller means: first element of a tuple/list, the "out" entry of a dict."""
    if isinstance(output, tuple | list) and output:
        return output[0]
    if isinstance(output, dict) and "out" in output:
        return output["out"]
    return output


@lru_cache(maxsize=1)
def imagenet_labels() -> tuple[str, ...]:
    text = resources.files("autodep_celery").joinpath("data/imagenet_classes.txt").read_text()
    return tuple(line for line in text.splitlines() if line)


def read_labels(path: str) -> list[str]:
    """One label per line; trailing blank lines are ignored, blank lines inside are kept."""
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return [line.strip() for line in lines]


def labels_for(num_classes: int, configured: Sequence[str] | None) -> Sequence[str]:
    """Configured labels, else ImageNet names for 1000-way outputs, else ``class_<i>``."""
    if configured is not None:
        return configured
    if num_classes == 1000:
        return imagenet_labels()
    return [f"class_{i}" for i in range(num_classes)]


def classify(
    logits: torch.Tensor, top_ns: Sequence[int], labels: Sequence[str] | None
) -> list[dict[str, Any] | errors.AutodepError]:
    """Softmax over dim 1 and the top_n labels per row; an error object for a bad top_n."""
    if logits.dim() == 4 and logits.shape[2:] == (1, 1):
        logits = logits.flatten(1)
    if logits.dim() != 2:
        raise errors.InvalidInput(
            f"the model's output has shape {list(logits.shape)}, not [batch, classes]; "
            "use inference_type ImageToImage for dense outputs"
        )
    num_classes = int(logits.shape[1])
    names = labels_for(num_classes, labels)
    if len(names) != num_classes:
        raise errors.ModelError(
            f"the labels file has {len(names)} labels but the model outputs {num_classes} classes"
        )
    probs = torch.softmax(logits.float(), dim=1).cpu()
    results: list[dict[str, Any] | errors.AutodepError] = []
    for row, top_n in zip(probs, top_ns, strict=True):
        if not 1 <= top_n <= num_classes:
            results.append(
                errors.InvalidInput(
                    f"top_n is {top_n} but the model has {num_classes} classes; "
                    f"use 1 <= top_n <= {num_classes}"
                )
            )
            continue
        values, indices = torch.topk(row, top_n)
        results.append(
            {
                "Classification": [
                    {"probability": float(p), "label": names[int(i)]}
                    for p, i in zip(values.tolist(), indices.tolist(), strict=True)
                ]
            }
        )
    return results


@lru_cache(maxsize=4)
def palette(n: int = 256) -> torch.Tensor:
    """A fixed colour per class, [n, 3] uint8: the class index's bits spread over R, G and B.

    Bit 3k of the index lands in red, 3k+1 in green, 3k+2 in blue, filling each colour byte from
    its top bit down (the PASCAL VOC colour scheme): neighbouring classes get distinct colours.
    """
    colours = torch.zeros(n, 3, dtype=torch.uint8)
    for index in range(n):
        rgb = [0, 0, 0]
        value, shift = index, 7
        while value and shift >= 0:
            for channel in range(3):
                rgb[channel] |= ((value >> channel) & 1) << shift
            value >>= 3
            shift -= 1
        colours[index] = torch.tensor(rgb, dtype=torch.uint8)
    return colours


def encode_png(pixels: torch.Tensor) -> bytes:
    """PNG bytes of a uint8 [H, W, 3] (RGB) or [H, W] (grayscale) tensor."""
    pixels = pixels.to(torch.uint8).cpu().contiguous()
    mode = "RGB" if pixels.dim() == 3 else "L"
    height, width = int(pixels.shape[0]), int(pixels.shape[1])
    # Copy the tensor's memory straight into bytes: numpy is not a dependency, and
    # bytes(storage) iterates element by element (seconds for a large image).
    raw = ctypes.string_at(pixels.data_ptr(), pixels.numel())
    img = Image.frombytes(mode, (width, height), raw)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


def _image_result(png: bytes, height: int, width: int) -> dict[str, Any]:
    return {"B64Image": {"image": png, "height": height, "width": width}}


def image_outputs(output: Any) -> list[dict[str, Any]]:
    """ImageToImage outputs, one per batch row: an image, a grayscale or a segmentation PNG."""
    segmentation = isinstance(output, dict) and "out" in output
    tensor = main_output(output)
    if not isinstance(tensor, torch.Tensor) or tensor.dim() not in (3, 4):
        shape = list(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise errors.InvalidInput(
            f"the model's output ({shape}) is not an image batch [batch, channels, height, width]"
        )
    if tensor.dim() == 3:  # [B, H, W]: one channel
        tensor = tensor.unsqueeze(1)
    tensor = tensor.detach().float().cpu()
    channels = int(tensor.shape[1])
    height, width = int(tensor.shape[2]), int(tensor.shape[3])
    results = []
    if segmentation or channels == 2 or channels > 3:
        classes = tensor.argmax(dim=1)  # [B, H, W]
        colours = palette(max(256, channels))
        for row in classes:
            results.append(_image_result(encode_png(colours[row]), height, width))
        return results
    pixels = tensor.clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
    for row in pixels:
        img = row.permute(1, 2, 0) if channels == 3 else row[0]
        results.append(_image_result(encode_png(img), height, width))
    return results


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def torch_error_line(exc: BaseException, limit: int = 300) -> str:
    """The informative line of a (TorchScript) error: its first line, or for TorchScript's
    "The following operation failed..." preamble, the last line, which names the real error."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    line = lines[0]
    if line.startswith("The following operation failed") and len(lines) > 1:
        line = lines[-1]
    return line.strip()[:limit]
