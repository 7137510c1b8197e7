"""The worker half of each inference task type: the hooks a batch runs through (compare
LitServe's LitAPI decode/batch/predict/unbatch and mosec's Worker.forward).

- ``preprocess(loaded, item, settings)`` -> (batching key, input): decode one item. Items of the
  same type and key share one forward pass (images: their decoded shape, so that they stack).
- ``batched(loaded)``: one forward pass per group, or one per item (a text model whose forward
  takes a single str).
- ``collate(loaded, inputs)``: the model's input for a group (stack, move, normalise).
- ``call(loaded, input)``: how forward is called with it (``module(input)``; Tensor spreads
  its arguments).
- ``postprocess(loaded, output, items)``: one Output, or an AutodepError, per item.
- ``describe(input)``: how an error names an input the model rejected.
- ``warm_up(loaded)``: one dummy forward pass after loading.

:mod:`worker.batch` keeps what every type shares: deadlines, the timed forward pass, and
splitting a group whose forward pass fails, so that one bad input fails alone. Handlers are
registered in `HANDLERS` under the names of :mod:`autodep_celery.task_types`. Imports torch;
knows nothing of Celery, Redis or HTTP.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from autodep_celery import contract, errors, input_limits, task_types
from autodep_celery.config import Settings
from autodep_celery.worker import processing, tensor_signature, tensor_values

if TYPE_CHECKING:
    from autodep_celery.worker.registry import LoadedModel

Output = dict[str, Any]
PerItem = Sequence[Output | errors.AutodepError]


class Handler(ABC):
    """The worker half of one task type."""

    name: ClassVar[str]

    def __init__(self) -> None:
        self.type = task_types.REGISTRY[self.name]

    @abstractmethod
    def preprocess(
        self, loaded: LoadedModel, item: dict[str, Any], settings: Settings
    ) -> tuple[Hashable, Any]:
        """(batching key, model input) of one item; an AutodepError fails this item alone."""

    def batched(self, loaded: LoadedModel) -> bool:
        return True

    @abstractmethod
    def collate(self, loaded: LoadedModel, inputs: list[Any]) -> Any:
        """The model's input for one forward pass over `inputs`."""

    def call(self, loaded: LoadedModel, inputs: Any) -> Any:
        """One forward pass over collate's result (worker.batch times it)."""
        return loaded.module(inputs)

    @abstractmethod
    def postprocess(self, loaded: LoadedModel, output: Any, items: list[dict[str, Any]]) -> PerItem:
        """One Output or error per item; raising an AutodepError fails the whole group."""

    @abstractmethod
    def describe(self, value: Any) -> str:
        """An input the model rejected, as an error message names it."""

    @abstractmethod
    def warm_up(self, loaded: LoadedModel) -> None:
        """One forward pass on dummy input (under torch.inference_mode)."""


# ---- images ---------------------------------------------------------------------------------
WARMUP_SIZE = (224, 224)
"""Height and width of the warm-up image for models without a `resize`."""


class ImageHandler(Handler):
    """What the image types share: decode to [3, H, W] in 0..1, group by shape, stack."""

    def preprocess(
        self, loaded: LoadedModel, item: dict[str, Any], settings: Settings
    ) -> tuple[Hashable, Any]:
        image = item.get("image")
        if not isinstance(image, bytes | bytearray):
            raise errors.InvalidInput(f"an {self.name} item needs image bytes")
        tensor = processing.decode_image(
            bytes(image), settings.web.max_image_pixels, loaded.settings.resize, loaded.settings
        )
        return tuple(tensor.shape), tensor

    def collate(self, loaded: LoadedModel, inputs: list[Any]) -> Any:
        return torch.stack(inputs).to(loaded.device, loaded.dtype)

    def describe(self, value: Any) -> str:
        return f"input of shape [1, {', '.join(map(str, value.shape))}]"

    def warm_up(self, loaded: LoadedModel) -> None:
        height, width = loaded.settings.resize or WARMUP_SIZE
        batch = torch.rand(1, 3, height, width, device=loaded.device, dtype=loaded.dtype)
        output = processing.main_output(loaded.module(batch))
        if isinstance(output, torch.Tensor) and output.dim() == 2:
            loaded.num_classes = int(output.shape[1])


class ImageClassification(ImageHandler):
    name = "ImageClassification"

    def collate(self, loaded: LoadedModel, inputs: list[Any]) -> Any:
        batch = super().collate(loaded, inputs)
        return processing.normalise(batch, loaded.settings.mean, loaded.settings.std)

    def postprocess(self, loaded: LoadedModel, output: Any, items: list[dict[str, Any]]) -> PerItem:
        top_ns = [_top_n(item) for item in items]
        logits = processing.main_output(output)
        if not isinstance(logits, torch.Tensor):
            raise errors.InvalidInput(
                f"model {loaded.name} does not return a tensor of class scores"
            )
        loaded.num_classes = int(logits.shape[1]) if logits.dim() >= 2 else None
        return processing.classify(logits, top_ns, loaded.labels)


def _top_n(item: dict[str, Any]) -> int:
    top_n = item.get("top_n", contract.DEFAULT_TOP_N)
    if not isinstance(top_n, int) or isinstance(top_n, bool):
        return 0  # classify() reports it as out of range
    return top_n


class ImageToImage(ImageHandler):
    name = "ImageToImage"

    def postprocess(self, loaded: LoadedModel, output: Any, items: list[dict[str, Any]]) -> PerItem:
        return processing.image_outputs(output)


# ---- text -----------------------------------------------------------------------------------
TEXT_LIST = "list"
"""A text model whose forward takes List[str]: one call per group."""
TEXT_STR = "str"
"""A text model whose forward takes one str: one call per item."""
WARMUP_TEXT = "warm up"


def text_kind_of(module: Any) -> str | None:
    """ "list" / "str" when forward's first argument is List[str] / str, else None."""
    try:
        arguments = module.forward.schema.arguments
    except (AttributeError, RuntimeError):
        return None
    if len(arguments) < 2:
        return None
    kind = str(arguments[1].type)
    if kind == "List[str]":
        return TEXT_LIST
    if kind == "str":
        return TEXT_STR
    return None


class TextToText(Handler):
    name = "TextToText"

    def preprocess(
        self, loaded: LoadedModel, item: dict[str, Any], settings: Settings
    ) -> tuple[Hashable, Any]:
        text = item.get("text")
        if not isinstance(text, str):
            raise errors.InvalidInput(f"a {self.name} item needs a text string")
        return None, text

    def batched(self, loaded: LoadedModel) -> bool:
        return loaded.text_kind == TEXT_LIST  # else forward takes one str (or is unknown)

    def collate(self, loaded: LoadedModel, inputs: list[Any]) -> Any:
        return inputs if self.batched(loaded) else inputs[0]

    def postprocess(self, loaded: LoadedModel, output: Any, items: list[dict[str, Any]]) -> PerItem:
        if not self.batched(loaded):
            return [_text_output(loaded, output)]
        if not isinstance(output, list) or len(output) != len(items):
            raise errors.ModelError(
                f"model {loaded.name} must return one string per input string "
                f"({len(items)}), got {type(output).__name__}"
            )
        return [_text_output(loaded, text) for text in output]

    def describe(self, value: Any) -> str:
        return f"a string of {len(value)} characters"

    def warm_up(self, loaded: LoadedModel) -> None:
        loaded.module([WARMUP_TEXT] if loaded.text_kind == TEXT_LIST else WARMUP_TEXT)


def _text_output(loaded: LoadedModel, output: Any) -> Output | errors.AutodepError:
    if not isinstance(output, str):
        return errors.ModelError(
            f"model {loaded.name} returned {type(output).__name__}, not a string"
        )
    return {"Text": output}


# ---- tensors --------------------------------------------------------------------------------
class Tensor(Handler):
    """The raw type: forward(*args) on the item's decoded arguments, its return value as it is.

    Each item is its own forward pass (a generic signature gives no batch dimension to stack
    along); items still share the batch message with the model's other requests. No warm-up:
    a signature does not say what shapes its tensors take.
    """

    name = "Tensor"

    def preprocess(
        self, loaded: LoadedModel, item: dict[str, Any], settings: Settings
    ) -> tuple[Hashable, Any]:
        args = item.get("args")
        if not isinstance(args, list):
            raise errors.InvalidInput(
                "a Tensor item needs a list of arguments", code="invalid_arguments"
            )
        input_limits.check_tensor_args(args, loaded.settings)  # before any tensor is built
        values = [
            tensor_values.to_torch(value, loaded.device, f"argument {position}")
            for position, value in enumerate(args, start=1)
        ]
        return None, tensor_signature.bind(loaded.module, loaded.name, values)

    def batched(self, loaded: LoadedModel) -> bool:
        return False

    def collate(self, loaded: LoadedModel, inputs: list[Any]) -> Any:
        return inputs[0]

    def call(self, loaded: LoadedModel, inputs: Any) -> Any:
        return loaded.module(*inputs)

    def postprocess(self, loaded: LoadedModel, output: Any, items: list[dict[str, Any]]) -> PerItem:
        return [{self.name: tensor_values.to_wire(output, loaded.name)}]

    def describe(self, value: Any) -> str:
        sent = ", ".join(tensor_signature.describe(v) for v in value)
        return f"the arguments ({sent})"

    def warm_up(self, loaded: LoadedModel) -> None:
        pass


# ---- the registry ---------------------------------------------------------------------------
HANDLERS: dict[str, Handler] = {
    h.name: h for h in (ImageClassification(), ImageToImage(), TextToText(), Tensor())
}


def warm_up_handler(loaded: LoadedModel) -> Handler | None:
    """The handler that warms `loaded` up: its configured task's; for a model without a task,
    TextToText's when forward takes strings, else ImageClassification's (it learns the class
    count). Tensor's warm-up does nothing."""
    task = loaded.settings.task
    if task is None:
        task = TextToText.name if loaded.text_kind is not None else ImageClassification.name
    return HANDLERS.get(task)
