"""Wire values (autodep_celery.typed) to torch objects and back: the worker's side of every tensor
protocol (/serve, /v2, ``inference_type: "Tensor"``).

Called by the Tensor handler of :mod:`worker.task_types`: `to_torch` builds forward()'s
arguments from an item's ``args``, `to_wire` turns forward()'s return value into the item's
output. A tensor's bytes are copied once into a tensor that owns them (torch.frombuffer on a
bytearray) and back out once (numpy's tobytes), never through lists of numbers, so int64 stays
exact and float16 stays float16. Imports torch and numpy; knows nothing of Celery, Redis or HTTP.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import torch

from autodep_celery import errors, typed
from autodep_celery.worker import processing

TORCH_DTYPES = {
    "uint8": torch.uint8,
    "int8": torch.int8,
    "int16": torch.int16,
    "int32": torch.int32,
    "int64": torch.int64,
    "float16": torch.float16,
    "float32": torch.float32,
    "float64": torch.float64,
    "bool": torch.bool,
}
"""The nine dtypes of autodep_celery.typed.DTYPES, by the same names."""
WIRE_NAMES = {v: k for k, v in TORCH_DTYPES.items()}
WIDENED = {torch.bfloat16: torch.float32}
"""Output dtypes no protocol names, sent as a dtype that holds every value exactly."""
_LITTLE = sys.byteorder == "little"
_MAX_DIM = 2**63 - 1
"""torch's sizes are int64."""
_CARRIED = (
    "tensors, lists, tuples, dicts with str or int keys, ints, floats, bools, strings or None"
)


def to_torch(value: Any, device: torch.device, where: str) -> Any:
    """The torch object of wire `value` (tensors on `device`, lists as lists); `where` names
    it in an error ("argument 2")."""
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, list):
        return [to_torch(v, device, f"{where}[{i}]") for i, v in enumerate(value)]
    if typed.is_tensor(value):
        return _tensor(value, device, where)
    if typed.is_dict(value):
        items = value.get("items")
        if not isinstance(items, list) or not all(
            isinstance(kv, list | tuple) and len(kv) == 2 for kv in items
        ):
            raise _bad(f"{where} is a dict without a list of [key, value] items")
        out: dict[Any, Any] = {}
        for k, v in items:
            if not isinstance(k, str | int) or isinstance(k, bool):
                raise _bad(f"{where} has a key {k!r:.40}; dict keys must be strings or ints")
            out[k] = to_torch(v, device, f"{where}[{k!r}]")
        return out
    raise _bad(f"{where} is not a wire value (a {type(value).__name__})")


def _tensor(value: dict[str, Any], device: torch.device, where: str) -> torch.Tensor:
    name = value.get("dtype")
    dt = TORCH_DTYPES.get(name) if isinstance(name, str) else None
    if dt is None:
        raise _bad(f"{where} has dtype {name!r}; use one of {', '.join(TORCH_DTYPES)}")
    data = value.get("data")
    try:
        shape = typed.check_shape(value.get("shape"), f"{where}'s shape")
    except typed.TypedValueError as exc:
        raise _bad(str(exc)) from None
    if any(d > _MAX_DIM for d in shape):
        raise _bad(f"{where}: shape {shape} has a dimension past {_MAX_DIM}")
    if not isinstance(data, bytes | bytearray):
        raise _bad(f"{where} has no data bytes")
    size = typed.numel(shape) * dt.itemsize
    if len(data) != size:
        raise _bad(f"{where}: a {name} tensor of shape {shape} holds {size} bytes, not {len(data)}")
    try:
        if not data:
            return torch.empty(shape, dtype=dt, device=device)
        # bytearray: torch.frombuffer warns on read-only buffers; the tensor must own its data.
        flat = torch.frombuffer(bytearray(data), dtype=dt)
        if not _LITTLE and flat.element_size() > 1:
            array = np.frombuffer(data, dtype=np.dtype(name).newbyteorder("<"))
            flat = torch.from_numpy(array.astype(np.dtype(name)))
        return flat.reshape(shape).to(device)
    except (RuntimeError, ValueError, TypeError) as exc:  # out of memory, ...
        error = processing.torch_error_line(exc)
        raise _bad(f"{where}: cannot make a {name} tensor of shape {shape}: {error}") from None


def _bad(message: str) -> errors.InvalidInput:
    return errors.InvalidInput(message, code="invalid_arguments")


def to_wire(value: Any, model: str, where: str = "the output") -> Any:
    """Wire value of forward()'s return value `value`; a ModelError naming `model` and the
    place (``the output['out'][0]``) for anything no protocol can carry."""
    if isinstance(value, torch.Tensor):
        return _tensor_wire(value, model, where)
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [to_wire(v, model, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        items = []
        for k, v in value.items():
            if not isinstance(k, str | int) or isinstance(k, bool):
                raise _unsupported(model, f"a {type(k).__name__} dict key at {where}")
            items.append((k, to_wire(v, model, f"{where}[{k!r}]")))
        return typed.make_dict(items)
    raise _unsupported(model, f"a {type(value).__name__} at {where}")


def _tensor_wire(tensor: torch.Tensor, model: str, where: str) -> dict[str, Any]:
    tensor = tensor.detach()
    tensor = tensor.to(WIDENED.get(tensor.dtype, tensor.dtype))
    name = WIRE_NAMES.get(tensor.dtype)
    if name is None or tensor.layout != torch.strided:
        what = str(tensor.dtype).removeprefix("torch.")
        if tensor.layout != torch.strided:
            what = f"{str(tensor.layout).removeprefix('torch.')} {what}"
        raise _unsupported(
            model,
            f"a {what} tensor at {where}",
            f"tensors must be dense and one of {', '.join(TORCH_DTYPES)}",
        )
    array = tensor.cpu().contiguous().numpy()
    data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    return typed.tensor(name, list(tensor.shape), data)


def _unsupported(model: str, what: str, allowed: str = "") -> errors.ModelError:
    return errors.ModelError(
        f"model {model} returned {what}, which the tensor protocols cannot carry; "
        f"{allowed or 'return ' + _CARRIED}",
        code="unsupported_output",
    )
