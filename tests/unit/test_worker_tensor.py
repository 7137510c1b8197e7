"""The worker half of Tensor: wire values to torch and back (worker.tensor_values), arguments
checked against forward()'s schema (worker.tensor_signature), and Tensor items through
worker.batch.run_batch on scripted models."""

from __future__ import annotations

import struct
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple  # noqa: UP035 - TorchScript signatures

import pytest
import torch
from torch import Tensor

from autodep_celery import contract, errors, typed
from autodep_celery.config import ModelSettings, Settings
from autodep_celery.web.testing import png_bytes
from autodep_celery.worker import tensor_signature, tensor_values
from autodep_celery.worker.batch import run_batch
from autodep_celery.worker.registry import Registry

pytestmark = pytest.mark.unit

FAR = time.time() + 3600
CPU = torch.device("cpu")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
VALUES = {
    "uint8": [0, 255],
    "int8": [-128, 127],
    "int16": [-32768, 32767],
    "int32": [-(2**31), 2**31 - 1],
    "int64": [INT64_MIN, INT64_MAX],
    "float16": [0.5, 65504.0],
    "float32": [0.25, -3.5],
    "float64": [0.1, 5e-324],
    "bool": [True, False],
}


class Signature(torch.nn.Module):
    """Every argument kind the wire carries, with defaults and nested containers."""

    def forward(
        self,
        x: Tensor,
        pair: Tuple[int, float],  # noqa: UP006
        names: List[str],  # noqa: UP006
        table: Dict[str, Tensor],  # noqa: UP006
        scale: float = 1.0,
        flag: bool = False,
        extra: Optional[Tensor] = None,  # noqa: UP045
    ) -> Tuple[Tensor, int, str, bool, Optional[Tensor], List[float]]:  # noqa: UP006, UP045
        total = x * scale + table["a"] + pair[0] + pair[1]
        return total, pair[0], ",".join(names), flag, extra, [scale, pair[1]]


@pytest.fixture(scope="module")
def settings(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    path = tmp_path_factory.mktemp("sig") / "sig.pt"
    torch.jit.script(Signature()).save(str(path))  # type: ignore[no-untyped-call]
    return Settings(
        models=(
            ModelSettings("sig", str(path), task="Tensor"),
            ModelSettings("multi", str(model_dir / "multi.pt"), task="Tensor"),
            ModelSettings("tiny", str(model_dir / "tiny.pt"), task="ImageClassification"),
        )
    )


@pytest.fixture(scope="module")
def registry(settings: Settings) -> Registry:
    return Registry(settings)


def wire(dtype: str, shape: list[int], values: list[Any]) -> dict[str, Any]:
    return typed.tensor_from_values(dtype, shape, values)


def run(registry: Registry, settings: Settings, model: str, *arg_lists: list[Any]) -> list[Any]:
    items = [contract.args_item(args, FAR) for args in arg_lists]
    batch = dict(contract.make_batch(model, "b", "", items))
    return run_batch(registry, settings, batch)["results"]  # type: ignore[no-any-return]


# ---- tensor_values --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", list(VALUES))
def test_every_dtype_crosses_both_ways_byte_for_byte(dtype: str) -> None:
    sent = wire(dtype, [2, 1], VALUES[dtype])
    tensor = tensor_values.to_torch(sent, CPU, "argument 1")
    assert tensor.dtype == tensor_values.TORCH_DTYPES[dtype] and tensor.shape == (2, 1)
    assert tensor.flatten().tolist() == VALUES[dtype]
    assert tensor_values.to_wire(tensor, "m") == sent


def test_int64_limits_stay_exact_and_outputs_are_detached_contiguous_cpu() -> None:
    big = tensor_values.to_torch(wire("int64", [2], [INT64_MIN, INT64_MAX]), CPU, "a")
    assert big.tolist() == [INT64_MIN, INT64_MAX]
    grad = torch.arange(6, dtype=torch.float32).reshape(2, 3).requires_grad_()
    out = tensor_values.to_wire(grad.t() * 1, "m")  # transposed: not contiguous
    assert out["shape"] == [3, 2]
    assert typed.values_of(out) == [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
    widened = tensor_values.to_wire(torch.tensor([1.5], dtype=torch.bfloat16), "m")
    assert widened["dtype"] == "float32" and typed.values_of(widened) == [1.5]
    empty = tensor_values.to_torch(wire("float32", [0, 3], []), CPU, "a")
    assert empty.shape == (0, 3) and tensor_values.to_wire(empty, "m")["data"] == b""


def test_containers_and_scalars_both_ways() -> None:
    sent = [
        [wire("int8", [1], [3]), "s"],
        typed.make_dict([("k", 1.5), (2, None)]),
        True,
        7,
    ]
    got = tensor_values.to_torch(sent, CPU, "argument 1")
    assert got[0][0].tolist() == [3] and got[0][1] == "s"
    assert got[1] == {"k": 1.5, 2: None} and got[2:] == [True, 7]
    assert tensor_values.to_wire({"out": (torch.tensor([1]), "s", 3)}, "m") == typed.make_dict(
        [("out", [wire("int64", [1], [1]), "s", 3])]
    )


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (torch.tensor([1j]), "model m returned a complex64 tensor at the output"),
        ({"a": [torch.device("cpu")]}, "model m returned a device at the output['a'][0]"),
        ({1.5: 1}, "model m returned a float dict key at the output"),
        (torch.zeros(2).to_sparse(), "model m returned a sparse_coo float32 tensor"),
    ],
)
def test_an_output_no_protocol_carries_is_a_model_error(output: Any, message: str) -> None:
    with pytest.raises(errors.ModelError) as caught:
        tensor_values.to_wire(output, "m")
    assert caught.value.code == "unsupported_output" and caught.value.http_status == 500
    assert caught.value.message.startswith(message), caught.value.message


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"x": 1}, "argument 2 is not a wire value (a dict)"),
        (b"raw", "argument 2 is not a wire value (a bytes)"),
        ({"$": "tensor", "dtype": "int4", "shape": [1], "data": b"\0"}, "has dtype 'int4'"),
        ({"$": "tensor", "dtype": "int32", "shape": [2], "data": b"\0"}, "holds 8 bytes, not 1"),
        ({"$": "tensor", "dtype": "int32", "shape": [1]}, "argument 2 has no data bytes"),
        (
            {"$": "tensor", "dtype": "int32", "shape": [0, 2**64], "data": b""},
            "argument 2: shape [0, 18446744073709551616] has a dimension past",
        ),
        ({"$": "dict", "items": [[1.5, 2]]}, "has a key 1.5; dict keys must be strings or ints"),
        ([{"$": "dict", "items": 3}], "argument 2[0] is a dict without a list of"),
    ],
)
def test_a_malformed_wire_value_is_refused(value: Any, message: str) -> None:
    with pytest.raises(errors.InvalidInput) as caught:
        tensor_values.to_torch(value, CPU, "argument 2")
    assert caught.value.code == "invalid_arguments" and message in caught.value.message


# ---- tensor_signature -----------------------------------------------------------------------
SIG = (
    "forward(x: Tensor, pair: Tuple[int, float], names: List[str], table: Dict[str, Tensor], "
    "scale: float = ..., flag: bool = ..., extra: Optional[Tensor] = ...)"
)


def sig_args() -> list[Any]:
    return [torch.ones(2), [1, 2], ["a", "b"], {"a": torch.ones(2)}]


def test_bind_converts_lists_to_tuples_and_ints_to_floats(registry: Registry) -> None:
    module = registry.get("sig").module
    assert str(tensor_signature.signature_of(module)) == SIG
    bound = tensor_signature.bind(module, "sig", [*sig_args(), 2])
    assert bound[1] == (1, 2.0) and isinstance(bound[1][1], float)
    assert bound[4] == 2.0 and isinstance(bound[4], float)
    assert tensor_signature.bind(module, "sig", [*sig_args(), 2.0, True, None])[6] is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a[:3], "model sig takes 4 to 7 arguments but 3 were sent; its signature is "),
        (lambda a: [*a, 1.0, True, None, 1], "takes 4 to 7 arguments but 8 were sent"),
        (
            lambda a: ["x", *a[1:]],
            "argument 1 (x) of model sig must be Tensor, but a str was sent; its signature is ",
        ),
        (
            lambda a: [a[0], [1, 2, 3], *a[2:]],
            "argument 2 (pair) of model sig must be Tuple[int, float], but a List[int] of 3 was "
            "sent",
        ),
        (
            lambda a: [a[0], [1.5, 2], *a[2:]],
            "argument 2 (pair) of model sig must be Tuple[int, float], but its item [0] is a "
            "float where int is expected",
        ),
        (
            lambda a: [*a[:2], ["a", 3], a[3]],
            "argument 3 (names) of model sig must be List[str], but its item [1] is an int "
            "where str is expected",
        ),
        (
            lambda a: [*a[:3], {"a": "t"}],
            "argument 4 (table) of model sig must be Dict[str, Tensor], but its item ['a'] is a "
            "str where Tensor is expected",
        ),
        (
            lambda a: [*a[:3], {1: torch.ones(1)}],
            "its item [1] (its key) is an int where str is expected",
        ),
        (lambda a: [*a, True], "argument 5 (scale) of model sig must be float, but a bool was"),
        (lambda a: [*a, 1.0, 1], "argument 6 (flag) of model sig must be bool, but an int was"),
        (
            lambda a: [*a, 1.0, True, [torch.ones(1)]],
            "argument 7 (extra) of model sig must be Optional[Tensor], but a List[Tensor] of 1",
        ),
    ],
)
def test_bind_names_the_argument_what_it_expects_and_what_was_sent(
    registry: Registry, change: Any, message: str
) -> None:
    with pytest.raises(errors.InvalidInput) as caught:
        tensor_signature.bind(registry.get("sig").module, "sig", change(sig_args()))
    assert caught.value.code == "invalid_arguments" and caught.value.http_status == 422
    assert message in caught.value.message, caught.value.message
    assert caught.value.message.endswith(SIG)


# ---- run_batch --------------------------------------------------------------------------------
MULTI_ARGS = [
    [wire("float32", [1, 2], [10, 1]), wire("float32", [1, 3], [10, 1, 1])],
    wire("float32", [1, 3], [10, 1, 1]),
    typed.make_dict(
        [("x", wire("float32", [1, 2], [1, 2])), ("y", wire("float32", [1, 3], [0, 1, 1]))]
    ),
    30,
    "Hello!",
]


def test_multi_answers_as_in_process_and_bad_items_fail_alone(
    registry: Registry, settings: Settings, model_dir: Path
) -> None:
    good, short, swapped = MULTI_ARGS, MULTI_ARGS[:3], [MULTI_ARGS[1], *MULTI_ARGS[1:]]
    ok, arity, kind = run(registry, settings, "multi", good, short, swapped)
    assert ok["ok"] and ok["compute_ns"] > 0
    model = torch.jit.load(str(model_dir / "multi.pt"))  # type: ignore[no-untyped-call]
    args = tensor_values.to_torch(MULTI_ARGS, CPU, "args")
    with torch.inference_mode():
        expected = model(*args)
    assert ok["output"] == {"Tensor": tensor_values.to_wire(expected, "multi")}
    [first, second] = expected["out"][0]
    out = ok["output"]["Tensor"]["items"][0][1]
    assert struct.unpack("<3f", out[0][0]["data"]) == tuple(first.flatten().tolist())
    assert typed.values_of(out[0][1]) == second.flatten().tolist() == [50.0, 33.0, 33.0]
    assert out[1:] == ["Hello!", 30]
    assert arity["error"]["code"] == kind["error"]["code"] == "invalid_arguments"
    assert arity["error"]["status"] == kind["error"]["status"] == 422
    assert "model multi takes 5 arguments but 3 were sent" in arity["error"]["message"]
    assert kind["error"]["message"].startswith(
        "argument 1 (tensor_list) of model multi must be List[Tensor], but a Tensor (float32, "
        "shape [1, 3]) was sent; its signature is forward(tensor_list: List[Tensor], "
    )


def test_a_forward_failure_is_422_naming_the_arguments(
    registry: Registry, settings: Settings
) -> None:
    no_key = [*MULTI_ARGS[:2], typed.make_dict([]), *MULTI_ARGS[3:]]
    [result] = run(registry, settings, "multi", no_key)
    assert result["error"]["code"] == "model_rejected_input"
    assert result["error"]["message"].startswith(
        "model multi rejected the arguments (a List[Tensor] of 2, a Tensor (float32, shape "
        "[1, 3]), an empty dict, an int, a str): "
    ), result["error"]["message"]


def test_tensor_items_share_a_batch_with_other_types_on_any_model(
    registry: Registry, settings: Settings
) -> None:
    image = contract.image_item("ImageClassification", png_bytes(), FAR, 2)
    x = wire("float32", [1, 3, 4, 4], [0.5] * 48)
    items = [contract.args_item([x], FAR), image, contract.args_item([x, x], FAR)]
    batch = dict(contract.make_batch("tiny", "b", "", items))
    raw, classified, wrong = run_batch(registry, settings, batch)["results"]
    assert raw["output"]["Tensor"]["shape"] == [1, 10]
    assert len(classified["output"]["Classification"]) == 2
    assert wrong["error"]["code"] == "invalid_arguments"
    assert "model tiny takes 1 argument but 2 were sent" in wrong["error"]["message"]


def test_a_tensor_model_answers_every_output_kind(registry: Registry, settings: Settings) -> None:
    args = [
        wire("int64", [2], [1, 2]),
        [3, 0.5],
        ["a", "b"],
        typed.make_dict([("a", wire("int64", [2], [10, 20]))]),
    ]
    [result] = run(registry, settings, "sig", [*args, 2, True])
    total, first, joined, flag, extra, floats = result["output"]["Tensor"]
    assert total["dtype"] == "float32" and typed.values_of(total) == [15.5, 27.5]
    assert (first, joined, flag, extra, floats) == (3, "a,b", True, None, [2.0, 0.5])
