"""Read one input sent without base64: the raw request body, or the one file of a
multipart/form-data form. The routes that take uploads (TorchServe's /predictions, /classify)
read requests here, so they accept the same forms and refuse the same mistakes with the same
4xx errors.

Only the image header is checked (:func:`web.images.check_image_bytes`); the worker decodes the
image. The form parser is bounded per request (parts, bytes of a non-file field) on top of
Flask's MAX_CONTENT_LENGTH (web.max_body_bytes), so a form of thousands of parts cannot exhaust
memory. Must not import torch.
"""

from __future__ import annotations

from typing import NamedTuple

from flask import Request
from werkzeug.exceptions import RequestEntityTooLarge

from autodep_celery import errors
from autodep_celery.config import ModelSettings
from autodep_celery.web import images
from autodep_celery.web.openapi import Media

FIELDS = ("data", "body")
"""The form fields TorchServe's handlers read (``row.get("data") or row.get("body")``)."""
MAX_FORM_PARTS = 16
"""Parts a multipart form may have: an upload needs one (werkzeug allows 1000)."""
MAX_FORM_FIELD_BYTES = 1024 * 1024
"""Bytes of one non-file form field, held in memory (files are spooled by werkzeug)."""
ANY_FILE = frozenset({"", "application/octet-stream", "application/x-www-form-urlencoded"})
"""Media types that may hold any file: none, binary, and what ``curl --data-binary @file``
sends by default (the body is then the file, not a form, and is never parsed as one)."""
MULTIPART = "multipart/form-data"
EXAMPLES = "curl --data-binary @cat.jpg URL, or curl -F data=@cat.jpg URL"
BINARY = {"type": "string", "format": "binary", "minLength": 1}
"""A file's bytes: an empty one is refused (empty_body, empty_file)."""
IMAGE = Media(
    {
        "image/*": BINARY,
        "application/octet-stream": BINARY,
        MULTIPART: {
            "type": "object",
            "properties": {
                "data": {
                    **BINARY,
                    "description": "The image (TorchServe's field; body, or any single file "
                    "field, is accepted too).",
                }
            },
            "required": ["data"],  # a form without a file is refused (missing_file)
        },
    },
    description="The image file as the body (any image/* type, application/octet-stream, or "
    "none), or the one file of a multipart form.",
)
"""How an image upload is described in /openapi.json."""


class Upload(NamedTuple):
    data: bytes
    media_type: str
    """The body's or the part's media type, lower case without parameters; "" if none."""
    where: str
    """How messages name it: "the body" or 'form field "data"'."""
    text: bool = False
    """A form value rather than a file (werkzeug decoded it as UTF-8: fit for text only)."""

    @property
    def is_text(self) -> bool:
        return self.text or self.media_type.startswith("text/")


def _error(message: str, code: str, status: int = 400) -> errors.ClientError:
    return errors.ClientError(message, code=code, http_status=status)


def read(request: Request) -> Upload:
    """The body, or the one file of a multipart form (or its "data"/"body" value); 400 when
    there is nothing, or several files."""
    if request.mimetype == MULTIPART:
        return _from_form(request)
    data = request.get_data(cache=False)  # never parsed as a form, whatever its Content-Type
    if not data:
        raise _error(f"the body is empty; send the file as the body ({EXAMPLES})", "empty_body")
    return Upload(data, request.mimetype, "the body")


def _from_form(request: Request) -> Upload:
    request.max_form_parts = MAX_FORM_PARTS
    request.max_form_memory_size = MAX_FORM_FIELD_BYTES
    try:
        files = list(request.files.items(multi=True))
        values = [(k, v) for k, v in request.form.items(multi=True) if k in FIELDS]
    except RequestEntityTooLarge:
        limit = request.max_content_length
        if limit is not None and (request.content_length or 0) > limit:
            raise  # the body itself is too large: the app's 413 says so
        raise _error(
            f"the multipart form has more than {MAX_FORM_PARTS} parts or a non-file field over "
            f"{MAX_FORM_FIELD_BYTES} bytes; send one file, in the field named data",
            "form_too_large",
            413,
        ) from None
    if len(files) > 1:
        names = ", ".join(name for name, _ in files)
        raise _error(
            f"the multipart form has {len(files)} files ({names}); send exactly one, in the "
            "field named data",
            "too_many_files",
        )
    if files:
        name, part = files[0]
        where = f'form field "{name}"'
        data = part.read()
        if not data:
            raise _error(f"the file in {where} is empty; send the file's bytes", "empty_file")
        return Upload(data, (part.mimetype or "").lower(), where)
    if values:
        name, value = min(values, key=lambda kv: FIELDS.index(kv[0]))  # "data" before "body"
        return Upload(value.encode(), "", f'form field "{name}"', text=True)
    got = ", ".join(sorted(set(request.form))) or "none"
    raise _error(
        f"the multipart form has no file (fields received: {got}; a malformed form has none); "
        "send the file in a field named data: curl -F data=@cat.jpg URL",
        "missing_file",
    )


def image(request: Request, max_pixels: int, model: ModelSettings | None = None) -> bytes:
    """The image file of the request, its header checked; see `read`."""
    return check_image(read(request), max_pixels, model)


def check_image(upload: Upload, max_pixels: int, model: ModelSettings | None = None) -> bytes:
    """`upload`'s bytes if they may be an image: 415 for a media type that is not one, 422 for
    bytes that are not an image, 413 over `max_pixels` or over what `model` takes."""
    if upload.text:
        raise _error(
            f"{upload.where} is a form value, not a file; upload the image as a file: "
            "curl -F data=@cat.jpg URL",
            "not_a_file",
        )
    media = upload.media_type
    if media not in ANY_FILE and not media.startswith("image/"):
        raise _error(
            f"{upload.where} has Content-Type {media}, not an image; send the image file with "
            f"an image/* or application/octet-stream type ({EXAMPLES}); base64 images in JSON "
            "go to POST /inference",
            "unsupported_media_type",
            415,
        )
    images.check_image_bytes(upload.data, max_pixels, upload.where, model)
    return upload.data


def check_text(upload: Upload) -> str:
    """`upload` as UTF-8 text: 415 for a media type that is not text, 422 for bad UTF-8."""
    media = upload.media_type
    if not upload.is_text and media not in ANY_FILE:
        raise _error(
            f"{upload.where} has Content-Type {media}; send the text with Content-Type: "
            "text/plain (curl -H 'Content-Type: text/plain' --data-binary @input.txt URL)",
            "unsupported_media_type",
            415,
        )
    try:
        return upload.data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise errors.InvalidInput(
            f"{upload.where} is not UTF-8 text ({exc.reason} at byte {exc.start}); send UTF-8",
            code="invalid_text",
        ) from None
