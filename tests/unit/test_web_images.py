"""web.images: the header reader must give Pillow's size wherever both answer, and hand formats
and headers it does not follow to Pillow. Like Pillow's lazy open it checks headers, not pixel
data: a file damaged past what it reads is refused by the worker's decode (400 invalid_image)."""

from __future__ import annotations

import io
import random
import struct
import zlib

import pytest
from PIL import Image

from autodep_celery import errors
from autodep_celery.web import images


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


def _pillow_size(raw: bytes) -> tuple[int, int] | None:
    try:
        with Image.open(io.BytesIO(raw)) as img:
            return img.size
    except Exception:
        return None


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_damaged_files_get_pillows_answer_or_none(fmt):
    # Truncated and mutated files: whenever the reader and Pillow both answer, the sizes agree.
    rng = random.Random(7)
    exif = Image.Exif()
    exif[0x010F] = "camera"
    options = {"exif": exif.tobytes()} if fmt == "JPEG" else {}
    good = encode("RGB", (9, 7), fmt, **options)
    answered = 0
    for _ in range(3000):
        cut = rng.randrange(2, len(good)) if rng.random() < 0.5 else len(good)
        raw = bytearray(good[:cut])
        for _ in range(rng.randrange(3)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        size = images.header_size(bytes(raw))
        pillow = _pillow_size(bytes(raw))
        if size is not None and pillow is not None:
            answered += 1
            assert size == pillow, bytes(raw[:64])
    assert answered > 100  # the comparison really ran


def _png(ihdr: bytes, then: bytes = b"") -> bytes:
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", zlib.crc32(chunk[4:])) + then


IDAT = b"\0\0\0\0IDAT" + struct.pack(">I", zlib.crc32(b"IDAT"))


def _sof(precision: int, components: int, height: int = 30, width: int = 40) -> bytes:
    body = struct.pack(">BHHB", precision, height, width, components) + b"\x01\x11\x00" * components
    return b"\xff\xc0" + struct.pack(">H", 2 + len(body)) + body


SOS = b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (_png(struct.pack(">IIBBBBB", 40, 30, 8, 2, 0, 0, 0), IDAT), (40, 30)),
        (_png(struct.pack(">IIBBBBB", 40, 30, 8, 2, 0, 0, 0)), None),  # cut after IHDR
        (_png(struct.pack(">IIBBBBB", 40, 30, 3, 2, 0, 0, 0), IDAT), None),  # bad depth
        (_png(struct.pack(">IIBBBBB", 40, 30, 8, 2, 0, 0, 0), IDAT)[:29] + b"crc!" + IDAT, None),
        (b"\xff\xd8" + _sof(8, 3) + SOS, (40, 30)),
        (b"\xff\xd8" + _sof(12, 3) + SOS, None),  # 12-bit
        (b"\xff\xd8" + _sof(8, 2) + SOS, None),  # two components
        (b"\xff\xd8" + _sof(8, 3), None),  # no scan: truncated
        (b"\xff\xd8\xff\x02\x00\x02" + _sof(8, 3) + SOS, None),  # unknown marker
        (b"\xff\xd8" + _sof(8, 3, 1, 1) + _sof(8, 3) + SOS, (40, 30)),  # the last frame counts
    ],
)
def test_handmade_headers(raw, expected):
    assert images.header_size(raw) == expected


def test_pixel_limit_uses_the_header_size():
    raw = encode("L", (3000, 2), "PNG")
    with pytest.raises(errors.ImageTooLarge):
        images.image_size(raw, 5999)
    assert images.image_size(raw, 6000) == (3000, 2)


@pytest.mark.parametrize("fmt", ["PPM", "ICO", "TGA", "PCX"])
def test_formats_outside_the_allowed_list_are_refused_in_web_and_worker(fmt: str) -> None:
    """Only the formats the messages name are opened (input_limits.IMAGE_FORMATS): Pillow
    would try every plugin it has, EPS with Ghostscript among them."""
    import io

    from PIL import Image

    from autodep_celery import errors as core_errors
    from autodep_celery.web import images as web_images
    from autodep_celery.worker import processing

    buf = io.BytesIO()
    Image.new("RGB", (4, 3)).save(buf, format=fmt)
    with pytest.raises(core_errors.InvalidImage):
        web_images.check_image_bytes(buf.getvalue(), 10_000)
    with pytest.raises(core_errors.InvalidImage):
        processing.decode_image(buf.getvalue(), 10_000)
