"""Property tests of web.images, the image header reader that guards the web tier: random bytes,
real PNG/JPEG/GIF/WebP/BMP/TIFF files, and those files truncated, with bytes overwritten, with
headers that lie about their size (decompression bombs) and base64 wrappers around them.

Only AutodepError subclasses may come out, an answered size is the one Pillow reads, and no
pixel data is ever decoded: the ``load`` of Pillow's image files (and of every format plugin
that has its own) is replaced by a tripwire that the code under test cannot catch (it is not an
Exception).
"""

from __future__ import annotations

import base64
import io
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from autodep_celery import errors
from autodep_celery.web import images

FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
MAX_PIXELS = 40_000_000
FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")


class Decoded(BaseException):
    """Raised by the tripwire: pixel data was about to be decoded."""


@pytest.fixture(autouse=True)
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def tripwire(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise Decoded(f"{type(self).__name__}.load() called")

    Image.init()  # every plugin imported first: some decode a prototype image as they load
    monkeypatch.setattr(ImageFile.ImageFile, "load", tripwire)
    for factory, _ in Image.OPEN.values():  # plugins with a load() of their own (ICO, EPS...)
        for cls in getattr(factory, "__mro__", ()):
            if "load" in vars(cls) and issubclass(cls, ImageFile.ImageFile):
                monkeypatch.setattr(cls, "load", tripwire)
    yield


@st.composite
def image_files(draw: st.DrawFn) -> bytes:
    fmt = draw(st.sampled_from(FORMATS))
    mode = draw(st.sampled_from(("RGB", "L", "P", "RGBA") if fmt != "JPEG" else ("RGB", "L")))
    if fmt in ("BMP", "JPEG") and mode == "RGBA":
        mode = "RGB"
    size = (draw(st.integers(1, 64)), draw(st.integers(1, 64)))
    buf = io.BytesIO()
    Image.new(mode, size, draw(st.integers(0, 255))).save(buf, format=fmt)
    return buf.getvalue()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A real image file damaged: cut short, bytes overwritten, bytes inserted, or spliced."""
    raw = bytearray(draw(image_files()))
    for _ in range(draw(st.integers(1, 4))):
        how = draw(st.sampled_from(("truncate", "overwrite", "insert", "splice")))
        at = draw(st.integers(0, max(0, len(raw) - 1)))
        if how == "truncate":
            del raw[at:]
        elif how == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=8))
            raw[at : at + len(chunk)] = chunk
        elif how == "insert":
            raw[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:
            other = draw(image_files())
            raw[at:] = other[draw(st.integers(0, len(other))) :]
    return bytes(raw)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@st.composite
def lying_headers(draw: st.DrawFn) -> tuple[bytes, tuple[int, int]]:
    """A PNG, JPEG, GIF, BMP or WebP header that claims (width, height), with little or no
    pixel data behind it: a decompression bomb, or a file that lies about its size."""
    width, height = draw(st.integers(1, 65535)), draw(st.integers(1, 65535))
    fmt = draw(st.sampled_from(("PNG", "JPEG", "GIF", "BMP", "WEBP")))
    tail = draw(st.binary(max_size=32))
    if fmt == "PNG":
        ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
        body = zlib.compress(b"\0" * 64)
        raw = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", body)
    elif fmt == "JPEG":
        sof = (
            struct.pack(">HBHHB", 17, 8, height, width, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
        )
        raw = b"\xff\xd8\xff\xc0" + sof + b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00"
    elif fmt == "GIF":
        raw = b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00" + b"\x2c"
        raw += struct.pack("<HHHH", 0, 0, width, height) + b"\x00\x02\x02\x44\x01\x00\x3b"
    elif fmt == "BMP":
        info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 0, 0, 0, 0)
        raw = b"BM" + struct.pack("<IHHI", 54 + len(tail), 0, 0, 54) + info
    else:
        vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00"
        vp8x += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
        raw = b"RIFF" + struct.pack("<I", 4 + len(vp8x)) + b"WEBP" + vp8x
    return raw + tail, (width, height)


def check(raw: bytes, max_pixels: int = MAX_PIXELS) -> tuple[int, int] | None:
    """image_size's answer, or None when it refused the bytes with an AutodepError (anything
    else, including the tripwire, fails the test)."""
    try:
        size = images.image_size(raw, max_pixels)
    except errors.AutodepError as exc:
        assert 400 <= exc.http_status < 500, exc
        return None
    width, height = size
    assert width >= 1 and height >= 1 and width * height <= max_pixels
    return size


def test_the_tripwire_trips() -> None:
    raw = io.BytesIO()
    Image.new("RGB", (2, 2)).save(raw, format="PNG")
    with pytest.raises(Decoded), Image.open(raw) as img:
        img.convert("L")  # a decode: what the worker does, never the web


@FUZZ
@given(st.binary(max_size=512))
def test_random_bytes_are_refused_or_sized(raw: bytes) -> None:
    check(raw)


@FUZZ
@given(image_files())
def test_real_images_get_pillows_size(raw: bytes) -> None:
    with Image.open(io.BytesIO(raw)) as img:
        expected = img.size
    assert check(raw) == expected


@FUZZ
@given(mutated())
def test_damaged_images_are_refused_or_sized(raw: bytes) -> None:
    size = check(raw)
    header = images.header_size(raw)
    if size is not None and header is not None:
        assert size == header  # the fast reader's answer is the one used


@FUZZ
@given(lying_headers(), st.integers(1, 10_000_000))
def test_lying_headers_are_judged_by_their_header_alone(
    case: tuple[bytes, tuple[int, int]], max_pixels: int
) -> None:
    raw, (width, height) = case
    size = check(raw, max_pixels)
    if width * height > max_pixels:
        assert size is None  # refused from the header: nothing was decoded (the tripwire)
    if size is not None:
        assert size == (width, height)


@FUZZ
@given(
    st.one_of(
        image_files(), mutated(), lying_headers().map(lambda c: c[0]), st.binary(max_size=64)
    ),
    st.sampled_from(("", "data:image/png;base64,", "data:;base64,", " \n")),
    st.integers(0, 76),
    st.one_of(st.none(), st.integers(-2, 70_000), st.booleans(), st.text(max_size=3)),
)
def test_b64_image_objects(raw: bytes, prefix: str, wrap: int, side: Any) -> None:
    text = base64.b64encode(raw).decode()
    if wrap:
        text = "\n".join(text[i : i + wrap] for i in range(0, len(text), wrap))
    value = {"image": prefix + text, "height": side, "width": side}
    try:
        out = images.check_b64_image(value, MAX_PIXELS)
    except errors.AutodepError as exc:
        assert 400 <= exc.http_status < 500, exc
        return
    assert out == raw


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


@FUZZ
@given(st.one_of(JSON, st.dictionaries(st.sampled_from(("image", "height", "width", "x")), JSON)))
def test_any_json_as_b64_image(value: Any) -> None:
    try:
        images.check_b64_image(value, MAX_PIXELS)
    except errors.AutodepError as exc:
        assert 400 <= exc.http_status < 500, exc


@FUZZ
@given(st.text(max_size=200))
def test_any_text_as_base64(text: str) -> None:
    assume(text)
    try:
        images.decode_b64(text)
    except errors.AutodepError as exc:
        assert exc.http_status == 422, exc
