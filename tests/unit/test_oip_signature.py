"""web.oip_signature: OIP inputs -> forward() arguments (by name, INPUT__<i>, in order, dotted
elements), forward()'s result -> named outputs, and model metadata from a published signature.
The signatures are what worker.schemas publishes for the example models."""

from __future__ import annotations

import pytest

from autodep_celery import errors, typed
from autodep_celery.web import oip_signature as sig
from autodep_celery.web.oip_codec import OipTensor

pytestmark = pytest.mark.unit

TINY = {"inputs": [{"name": "x", "type": "Tensor", "default": False}], "output": "Tensor"}
MULTI = {
    "inputs": [
        {"name": "tensor_list", "type": "List[Tensor]", "default": False},
        {"name": "single_tensor", "type": "Tensor", "default": False},
        {"name": "tensor_dict", "type": "Dict[str, Tensor]", "default": False},
        {"name": "an_integer", "type": "int", "default": False},
        {"name": "a_string", "type": "str", "default": False},
    ],
    "output": "Dict[str, Tuple[List[Tensor], str, int]]",
}
TEXTGEN = {
    "inputs": [{"name": "texts", "type": "List[str]", "default": False}],
    "output": "List[str]",
}
DEFAULTS = {
    "inputs": [
        {"name": "a", "type": "Tensor", "default": False},
        {"name": "b", "type": "Optional[float]", "default": True},
        {"name": "c", "type": "bool", "default": True},
    ],
    "output": "Tuple[Tensor, int]",
}


def f32(name: str, values: list[float], shape: list[int] | None = None) -> OipTensor:
    return OipTensor(name, "FP32", shape or [len(values)], typed.pack(typed.BY_OIP["FP32"], values))


def i64(name: str, values: list[int]) -> OipTensor:
    return OipTensor(name, "INT64", [len(values)], typed.pack(typed.BY_OIP["INT64"], values))


def text(name: str, *values: str) -> OipTensor:
    return OipTensor(name, "BYTES", [len(values)], list(values))


def wire(t: OipTensor) -> dict:
    return typed.tensor(typed.BY_OIP[t.datatype], t.shape, t.data)  # type: ignore[arg-type]


def refused(inputs: list[OipTensor], schema: dict | None) -> str:
    with pytest.raises(errors.ClientError) as info:
        sig.arguments(inputs, schema)
    assert info.value.http_status == 400
    return info.value.message


def test_parse_type_strings() -> None:
    t = sig.parse("Dict[str, Tuple[List[Tensor], str, int]]")
    assert t.head == "Dict" and [a.head for a in t.args] == ["str", "Tuple"]
    assert [a.head for a in t.args[1].args] == ["List", "str", "int"]
    assert sig.parse("Optional[Tensor]").unwrap() == sig.JitType("Tensor")
    assert sig.parse("Union[int, NoneType]").unwrap() == sig.JitType("int")


def test_metadata_of_the_example_signatures() -> None:
    assert sig.metadata_inputs(TINY) == [{"name": "x", "datatype": "FP32", "shape": [-1]}]
    assert sig.metadata_outputs(TINY) == [{"name": "OUTPUT__0", "datatype": "FP32", "shape": [-1]}]
    assert sig.metadata_inputs(MULTI) == [
        {"name": "tensor_list.<i>", "datatype": "FP32", "shape": [-1]},
        {"name": "single_tensor", "datatype": "FP32", "shape": [-1]},
        {"name": "tensor_dict.<key>", "datatype": "FP32", "shape": [-1]},
        {"name": "an_integer", "datatype": "INT64", "shape": [1]},
        {"name": "a_string", "datatype": "BYTES", "shape": [1]},
    ]
    assert [o["name"] for o in sig.metadata_outputs(MULTI)] == [
        "<key>.0.<i>",
        "<key>.1",
        "<key>.2",
    ]
    assert sig.metadata_outputs(TEXTGEN) == [
        {"name": "OUTPUT__0", "datatype": "BYTES", "shape": [-1]}
    ]
    assert [o["name"] for o in sig.metadata_outputs(DEFAULTS)] == ["OUTPUT__0", "OUTPUT__1"]
    assert sig.signature_text(DEFAULTS) == (
        "forward(a: Tensor, b: Optional[float] = ..., c: bool = ...) -> Tuple[Tensor, int]"
    )


@pytest.mark.parametrize("name", ["x", "INPUT__0", "input__0", "anything"])
def test_one_tensor_by_name_by_triton_name_or_in_order(name: str) -> None:
    x = f32(name, [1, 2, 3, 4, 5, 6], [1, 2, 3])
    assert sig.arguments([x], TINY) == [wire(x)]
    assert sig.arguments([x], None) == [wire(x)]


def test_multi_takes_dotted_elements_and_scalars() -> None:
    a, b, s, d = (
        f32("tensor_list.1", [2]),
        f32("tensor_list.0", [1]),
        f32("single_tensor", [3]),
        f32("tensor_dict.k", [4]),
    )
    args = sig.arguments([s, a, i64("an_integer", [7]), b, d, text("a_string", "hi")], MULTI)
    assert args == [[wire(b), wire(a)], wire(s), typed.make_dict([("k", wire(d))]), 7, "hi"]
    # Triton's positional names address the same arguments
    args = sig.arguments(
        [
            f32("INPUT__0.0", [1]),
            f32("INPUT__1", [3]),
            f32("INPUT__2.k", [4]),
            i64("INPUT__3", [7]),
            text("INPUT__4", "hi"),
        ],
        MULTI,
    )
    assert args[0] == [wire(f32("x", [1]))] and args[3:] == [7, "hi"]


def test_scalar_and_list_arguments() -> None:
    assert sig.arguments([text("texts", "a b", "c")], TEXTGEN) == [["a b", "c"]]
    assert sig.arguments([text("texts", "one")], TEXTGEN) == [["one"]]
    a = f32("a", [1])
    assert sig.arguments([a, f32("b", [0.5])], DEFAULTS) == [wire(a), 0.5]
    assert sig.arguments([a], DEFAULTS) == [wire(a)]  # trailing defaults left out


@pytest.mark.parametrize(
    ("inputs", "schema", "message"),
    [
        ([f32("p", [1]), f32("q", [1])], TINY, "2 inputs were sent, but forward(x: Tensor)"),
        ([f32("x", [1]), f32("y", [1])], TINY, "x, y are not all argument names"),
        ([f32("single_tensor", [1])], MULTI, "input 'tensor_list' is missing"),
        ([f32("a", [1]), OipTensor("c", "BOOL", [1], b"\x01")], DEFAULTS, "'b' is missing: an "),
        ([f32("x.0", [1]), f32("what.1", [1])], TINY, "not all argument names"),
        ([f32("a", [1]), f32("q", [1])], DEFAULTS, "a, q are not all argument names"),
        ([f32("x", [1, 2])], {**TINY, "inputs": [{"name": "x", "type": "int"}]}, "one element"),
        (
            [f32("texts", [1])],
            {**TINY, "inputs": [{"name": "texts", "type": "List[Tensor]"}]},
            "texts.0, texts.1",
        ),
        ([f32("tensor_list.0", [1]), f32("tensor_list.2", [1])], MULTI, "in turn"),
        ([f32("x", [1]), f32("x.0", [1])], TINY, "'x.0' is not used"),
        ([f32("INPUT__0", [1]), f32("input__0", [1])], TINY, "name the same argument"),
        ([f32("INPUT__3", [1])], TINY, "names no argument"),
        ([f32("x.0", [1])], None, "no worker has loaded this model yet"),
    ],
)
def test_mapping_mistakes_are_400(
    inputs: list[OipTensor], schema: dict | None, message: str
) -> None:
    assert message in refused(inputs, schema)


def test_without_a_signature_inputs_go_in_order() -> None:
    a, b = f32("INPUT__1", [1]), f32("INPUT__0", [2])
    assert sig.arguments([a, b], None) == [wire(b), wire(a)]
    assert sig.arguments([text("s", "hi"), text("t", "a", "b")], None) == ["hi", ["a", "b"]]


def names(outputs: list[OipTensor]) -> list[tuple[str, str, list[int]]]:
    return [(o.name, o.datatype, o.shape) for o in outputs]


def test_outputs_are_named_after_their_place() -> None:
    t = wire(f32("o", [1, 2]))
    assert names(sig.outputs(t, TINY)) == [("OUTPUT__0", "FP32", [2])]
    assert names(sig.outputs([t, t], None)) == [
        ("OUTPUT__0", "FP32", [2]),
        ("OUTPUT__1", "FP32", [2]),
    ]
    assert names(sig.outputs(typed.make_dict([("out", t)]), None)) == [("out", "FP32", [2])]
    assert names(sig.outputs("echo: hi", None)) == [("OUTPUT__0", "BYTES", [1])]
    assert sig.outputs(["A B", "C"], TEXTGEN)[0].values() == ["A B", "C"]
    assert names(sig.outputs([t, 3], DEFAULTS)) == [
        ("OUTPUT__0", "FP32", [2]),
        ("OUTPUT__1", "INT64", [1]),
    ]
    assert sig.outputs(None, None) == []
    assert names(sig.outputs([], TEXTGEN)) == [("OUTPUT__0", "BYTES", [0])]
    multi = typed.make_dict([("k", [[t, t], "s", 5])])
    assert (
        names(sig.outputs(multi, MULTI))
        == names(sig.outputs(multi, None))
        == [
            ("k.0.0", "FP32", [2]),
            ("k.0.1", "FP32", [2]),
            ("k.1", "BYTES", [1]),
            ("k.2", "INT64", [1]),
        ]
    )


def test_scalar_lists_are_one_tensor_without_a_signature() -> None:
    (out,) = sig.outputs([True, False], None)
    assert (out.datatype, out.values()) == ("BOOL", [True, False])
    (out,) = sig.outputs([1.5, 2.5], None)
    assert (out.datatype, out.values()) == ("FP64", [1.5, 2.5])
