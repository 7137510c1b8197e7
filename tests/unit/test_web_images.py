"""web.images: the header reader must agree with Pillow wherever it answers, and hand everything
else (other formats, damaged headers) to Pillow so errors stay Pillow's."""

from __future__ import annotations

import io
import random

import pytest
from PIL import Image

from autodep_celery import errors
from web import images


def encode(mode: str, size: tuple[int, int], fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format=fmt, **options)
    return buf.getvalue()


CASES = [
    ("JPEG", mode, size, options)
    for mode in ("RGB", "L", "CMYK")
    for size in ((1, 1), (32, 17), (17, 640))
    for options in ({}, {"progressive": True}, {"quality": 30, "optimize": True})
] + [
    ("PNG", mode, size, {})
    for mode in ("RGB", "RGBA", "L", "P", "1", "I;16")
    for size in ((1, 1), (32, 17), (3000, 2))
]


@pytest.mark.parametrize(("fmt", "mode", "size", "options"), CASES)
def test_header_size_agrees_with_pillow(fmt, mode, size, options):
    raw = encode(mode, size, fmt, **options)
    assert images.header_size(raw) == Image.open(io.BytesIO(raw)).size == size


def test_jpeg_with_exif_before_the_frame():
    exif = Image.Exif()
    exif[0x010F] = "camera" * 50
    raw = encode("RGB", (50, 40), "JPEG", exif=exif.tobytes())
    assert images.header_size(raw) == (50, 40)


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "WEBP", "TIFF"])
def test_other_formats_go_to_pillow(fmt):
    raw = encode("RGB", (7, 5), fmt)
    assert images.header_size(raw) is None
    assert images.image_size(raw, 100) == (7, 5)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xff\xd8",
        b"\xff\xd8\xff",
        b"\xff\xd8\xff\xe0\xff\xff" + b"\0" * 8,  # a segment longer than the file
        b"\xff\xd8\xff\xda\0\x02",  # scan data before any frame header
        b"\xff\xd8\xff\xc0\0\x11\x08\0",  # frame header cut short
        b"\x89PNG\r\n\x1a\n",
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0",
    ],
)
def test_damaged_headers_are_left_to_pillow_and_refused(raw):
    assert images.header_size(raw) is None
    with pytest.raises(errors.InvalidImage):
        images.image_size(raw, 10**6)


def test_random_bytes_never_crash_the_reader():
    rng = random.Random(7)
    jpeg = encode("RGB", (9, 9), "JPEG")
    for _ in range(2000):
        raw = bytearray(jpeg[: rng.randrange(2, len(jpeg))])
        for _ in range(rng.randrange(4)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        size = images.header_size(bytes(raw))
        assert size is None or all(isinstance(v, int) and v >= 0 for v in size)


def test_pixel_limit_uses_the_header_size():
    raw = encode("L", (3000, 2), "PNG")
    with pytest.raises(errors.ImageTooLarge):
        images.image_size(raw, 5999)
    assert images.image_size(raw, 6000) == (3000, 2)
