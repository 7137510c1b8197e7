"""How large an input each model takes: a bound per model on image pixels and tensor elements,
so that one request cannot hold a pool process for longer than a bounded time.

A model's forward pass grows with its input when nothing resizes it: the example ResNet-18 on
one thread took 0.08 s at 224x224, 4.8 s at 2048x2048 and 17 s at 4096x4096 (2.5 GB), and an
image under web.max_image_pixels (40 MP) ran past the task time limit, so its pool child was
killed with every request batched with it (docs/architecture.md §2.20). The web checks these
bounds from the image header or the tensor shapes before anything is queued (413), and the
worker checks them again before decoding, for items that did not come through the web.

Called by web.images, web.task_types and the tensor routes, and by worker.processing and
worker.task_types. Imports the stdlib and the core only.
"""

from __future__ import annotations

from autodep_celery import errors, typed
from autodep_celery.config import ModelSettings

IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")
"""The Pillow plugins an image may be opened with, in the web and in the worker: the formats the
error messages name. Pillow would otherwise try every plugin it has, among them EPS, which runs
Ghostscript on the bytes when it is installed, and a dozen rarely used decoders."""

DEFAULT_MAX_INPUT_PIXELS = 2048 * 2048
"""Pixels of an image sent to a model without ``resize`` (4,194,304; 84 times the 224x224
warm-up): the example ResNet-18 computes it in ~5 s on one thread with a ~0.9 GB peak, well
inside the default 30 s deadline."""
DEFAULT_SIDE = 2048
ELEMENTS_PER_PIXEL = 3
"""A Tensor request may hold as many elements as an RGB image of the model's pixel bound."""


def max_input_pixels(model: ModelSettings) -> int | None:
    """The model's own pixel bound: its ``max_input_pixels``, else none when it has a
    ``resize`` (every image is resized before the forward pass, so only decoding grows with
    it, bounded by web.max_image_pixels: ~0.8 s for a 40 MP JPEG), else the default."""
    if model.max_input_pixels is not None:
        return model.max_input_pixels
    return None if model.resize is not None else DEFAULT_MAX_INPUT_PIXELS


def max_input_elements(model: ModelSettings) -> int:
    """The most tensor elements one Tensor request may send to the model (all arguments)."""
    if model.max_input_elements is not None:
        return model.max_input_elements
    return ELEMENTS_PER_PIXEL * (model.max_input_pixels or DEFAULT_MAX_INPUT_PIXELS)


def check_image(
    width: int, height: int, max_image_pixels: int, model: ModelSettings | None = None
) -> None:
    """Raise ImageTooLarge (413) for an image over web.max_image_pixels, InputTooLarge (413)
    for one over `model`'s own bound; the message names the limit and the setting to change."""
    pixels = width * height
    if pixels > max_image_pixels:
        raise errors.ImageTooLarge(
            f"the image is {width}x{height} = {pixels} pixels; the limit is {max_image_pixels} "
            "(web.max_image_pixels); resize it first"
        )
    bound = max_input_pixels(model) if model is not None else None
    if model is None or bound is None or pixels <= bound:
        return
    if model.max_input_pixels is None:
        why = (
            f"model {model.name} has no resize, so its forward pass grows with the image; it "
            f"takes at most {bound} pixels ({DEFAULT_SIDE}x{DEFAULT_SIDE}, the default "
            "max_input_pixels)"
        )
    else:
        why = f"model {model.name} takes at most {bound} pixels (its max_input_pixels)"
    fix = "set resize = [height, width] or a larger" if model.resize is None else "raise"
    raise errors.InputTooLarge(
        f"the image is {width}x{height} = {pixels} pixels; {why}. Send a smaller image, or "
        f"{fix} max_input_pixels in the model's [[models]] entry"
    )


def check_tensor_args(args: object, model: ModelSettings) -> None:
    """Raise InputTooLarge (413) when the tensors of one Tensor request (its wire values) hold
    more elements than `model` takes."""
    count = typed.count_elements(args)
    bound = max_input_elements(model)
    if count <= bound:
        return
    default = " (3 x max_input_pixels by default)" if model.max_input_elements is None else ""
    raise errors.InputTooLarge(
        f"the tensors sent hold {count} elements; model {model.name} takes at most {bound} "
        f"per request (its max_input_elements{default}). Send smaller tensors, or raise "
        "max_input_elements in the model's [[models]] entry"
    )
