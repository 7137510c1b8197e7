"""Check a B64Image payload cheaply in the web tier: strict base64, a real image header, the
pixel limits (web.max_image_pixels, and the model's own bound: autodep_celery.input_limits) and
the declared height/width; its spec (B64_IMAGE) is declared here too. The full decode happens in
the worker.

Called by :mod:`web.validation` through :mod:`web.task_types`, and by :mod:`web.uploads` for
images sent as raw bytes (:func:`check_image_bytes`). JPEG and PNG sizes are read from
their headers here, about 20 times cheaper than Pillow's lazy ``Image.open``
(docs/architecture.md §2.1); other formats, and any header this reader does not follow, go to
Pillow. Must not import torch or Flask.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import struct
import zlib
from typing import Any

from PIL import Image

from autodep_celery import errors, input_limits
from autodep_celery.config import ModelSettings
from autodep_celery.web.spec import Integer, Object, String

TAG = "B64Image"
"""The ``data`` tag of an image (web.task_types registers it as the image input)."""
IMAGE_SIDE = Integer(minimum=1, nullable=True, description="Checked against the image if given.")
B64_IMAGE = Object(
    {
        "image": String(
            format="byte",
            description="Base64 of a PNG, JPEG, ... file; a data: URL prefix and line breaks "
            "are accepted.",
        ),
        "height": IMAGE_SIDE,
        "width": IMAGE_SIDE,
    },
    required=("image",),
)
"""What ``{"B64Image": ...}`` holds; the checks below read their field names and bounds here."""

_FIELDS = B64_IMAGE.names
_FIELD_SET = frozenset(_FIELDS)
_SIDES = tuple(k for k in _FIELDS if k not in B64_IMAGE.required)
"""height and width: optional, checked against the image when given."""
_MIN_SIDE = IMAGE_SIDE.minimum or 1
_REQUIRED = B64_IMAGE.required
_DATA_URL = re.compile(r"^data:[\w/+.-]*(;[\w=.-]+)*;base64,", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")


def _invalid(code: str, message: str) -> errors.InvalidInput:
    return errors.InvalidInput(message, code=code)


def check_b64_image(value: Any, max_pixels: int, model: ModelSettings | None = None) -> bytes:
    """Return the image bytes of a ``{"image": b64, "height": h|null, "width": w|null}`` object,
    refused when larger than `max_pixels` or than `model` takes."""
    if not isinstance(value, dict):
        raise _invalid(
            "invalid_data",
            'B64Image must be an object: {"image": "<base64>", "height": h, "width": w}',
        )
    if not value.keys() <= _FIELD_SET:  # a set test; the list only on the error path
        extra = [k for k in value if k not in _FIELD_SET]
        raise _invalid(
            "unknown_field", f"unknown B64Image field {extra[0]!r}; use {', '.join(_FIELDS)}"
        )
    for key in _REQUIRED:
        if key not in value:
            raise _invalid(
                "missing_field", f'B64Image needs "{key}": the base64 of a PNG/JPEG/... file'
            )
    declared = {k: _dimension(value, k) for k in _SIDES}
    raw = decode_b64(value["image"])
    width, height = image_size(raw, max_pixels, model=model)
    for key, real in (("height", height), ("width", width)):
        if declared[key] is not None and declared[key] != real:
            raise _invalid(
                "image_size_mismatch",
                f"B64Image.{key} is {declared[key]} but the image is {width}x{height} (width x "
                f"height); send {key} {real} or null",
            )
    return raw


def _dimension(value: dict[str, Any], key: str) -> int | None:
    dim = value.get(key)
    if dim is None:
        return None
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < _MIN_SIDE:
        raise _invalid(
            "invalid_image_size",
            f"B64Image.{key} must be a positive whole number or null, not {dim!r}",
        )
    return dim


def decode_b64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise _invalid("invalid_base64", "B64Image.image must be a base64 string")
    try:  # the common case, in C: plain base64 without a data: prefix or line breaks
        if text:
            return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        pass
    text = _WHITESPACE.sub("", _DATA_URL.sub("", text.lstrip(), count=1))
    if not text:
        raise _invalid("invalid_image", "B64Image.image is empty; send the base64 of an image file")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _invalid(
            "invalid_base64",
            f"B64Image.image is not valid base64 ({exc}); encode the file with standard base64 "
            "(A-Z a-z 0-9 + /, padded with =)",
        ) from None


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
"""Valid bit depths per PNG colour type."""
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
"""Start-of-frame markers (baseline, progressive, ...): they carry the size."""
_JPEG_BEFORE_SCAN = frozenset(range(0xE0, 0xF0)) | {0xFE, 0xDB, 0xC4, 0xDD, 0xCC}
"""Segments that may precede the scan besides frames: APPn, COM, DQT, DHT, DRI, DAC."""


def header_size(raw: bytes) -> tuple[int, int] | None:
    """(width, height) of a PNG or JPEG whose header Pillow would accept, or None to let
    Pillow decide (other formats, and anything unusual, so its errors stay the reference)."""
    if raw.startswith(_PNG_SIGNATURE):
        return _png_size(raw)
    if raw.startswith(b"\xff\xd8"):
        return _jpeg_size(raw)
    return None


def _png_size(raw: bytes) -> tuple[int, int] | None:
    # Pillow's open reads chunks up to the first IDAT: require a sound IHDR and an IDAT header.
    if len(raw) < 33 or raw[8:16] != b"\0\0\0\rIHDR":
        return None
    width, height, depth, colour = struct.unpack_from(">IIBB", raw, 16)
    if depth not in _PNG_DEPTHS.get(colour, ()) or struct.unpack_from(">I", raw, 29)[0] != (
        zlib.crc32(raw[12:29])
    ):
        return None
    i = 33
    while i + 8 <= len(raw):
        length, kind = struct.unpack_from(">I4s", raw, i)
        if kind == b"IDAT":
            return width, height
        i += 12 + length
    return None


def _jpeg_size(raw: bytes) -> tuple[int, int] | None:
    # Pillow's open reads segments up to the scan and keeps the last frame header's size.
    size: tuple[int, int] | None = None
    i, end = 2, len(raw)
    while i + 4 <= end:
        if raw[i] != 0xFF:
            return None
        marker = raw[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
            continue
        length = struct.unpack_from(">H", raw, i + 2)[0]
        if length < 2 or i + 2 + length > end:
            return None
        if marker == 0xDA:  # start of scan: the header is complete
            return size
        if marker in _JPEG_SOF:
            precision, height, width, components = struct.unpack_from(">BHHB", raw, i + 4)
            if precision != 8 or components not in (1, 3, 4) or length != 8 + 3 * components:
                return None
            size = (width, height)
        elif marker not in _JPEG_BEFORE_SCAN:
            return None
        i += 2 + length
    return None


def check_image_bytes(
    raw: bytes,
    max_pixels: int,
    what: str = "the uploaded file",
    model: ModelSettings | None = None,
) -> None:
    """Check an image sent as raw bytes (an upload, not base64) as B64Image is checked: a real
    image header within `max_pixels` and `model`'s bound; `what` names it in the messages."""
    image_size(raw, max_pixels, model=model, what=what, encoding="")


def image_size(
    raw: bytes,
    max_pixels: int,
    *,
    model: ModelSettings | None = None,
    what: str = "B64Image.image",
    encoding: str = ", base64-encoded",
) -> tuple[int, int]:
    """(width, height) from the header; raises for non-images and images over `max_pixels` or
    over what `model` takes. `what` and `encoding` fit the messages to where the bytes came
    from."""
    try:
        size = header_size(raw)
        if size is None:
            with Image.open(io.BytesIO(raw), formats=input_limits.IMAGE_FORMATS) as img:
                size = img.size
        width, height = size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise errors.ImageTooLarge(
            f"the image has more pixels than Pillow allows; the limit is {max_pixels} pixels"
        ) from None
    except Exception:  # Pillow raises many types for garbage; all mean "not an image"
        raise errors.InvalidImage(
            f"{what} is not an image Pillow can read; send a PNG, JPEG, BMP, GIF, WebP or "
            f"TIFF file{encoding}"
        ) from None
    if width < 1 or height < 1:
        raise errors.InvalidImage(f"the image has no pixels ({width}x{height})")
    input_limits.check_image(width, height, max_pixels, model)
    return width, height
