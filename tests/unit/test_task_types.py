"""The task-type registry: the core names each type once, the web and worker halves register
under exactly the served names, config, OpenAPI and both tiers follow the registry, a name that
is not registered is refused with the existing errors, and the raw type (Tensor) is taken by
every model."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest

from autodep_celery import config, contract, task_types, typed
from autodep_celery.config import ConfigError, ModelSettings, Settings
from autodep_celery.web import schema
from autodep_celery.web import task_types as web_types
from autodep_celery.web.testing import png_bytes
from autodep_celery.web.validation import parse_inference
from tests.unit.conftest import client_for, make_settings

pytestmark = pytest.mark.unit

B64 = base64.b64encode(png_bytes(4, 3)).decode()
DATA = {
    task_types.IMAGE: {"B64Image": {"image": B64}},
    task_types.TEXT: {"Text": "hi"},
    task_types.ARGS: {"Tensor": [{"type": "string", "value": "hi"}]},
}
"""A request's data for each input kind."""
FAR = time.time() + 3600


def test_the_core_registry() -> None:
    assert task_types.NAMES == ("ImageClassification", "ImageToImage", "TextToText", "Tensor")
    assert task_types.SERVED == task_types.NAMES
    assert contract.INFERENCE_TYPES == task_types.SERVED
    assert {t.input for t in task_types.TYPES} == {
        task_types.IMAGE,
        task_types.TEXT,
        task_types.ARGS,
    }
    assert [t.name for t in task_types.TYPES if t.raw] == ["Tensor"]


def write(tmp_path: Path, task: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f'[[models]]\nname = "m"\npath = "m.pt"\ntask = "{task}"\n')
    return path


@pytest.mark.parametrize("name", task_types.NAMES)
def test_every_registered_name_is_accepted_by_config(tmp_path: Path, name: str) -> None:
    assert config.TASKS == task_types.NAMES
    assert config.load(write(tmp_path, name), environ={}).models[0].task == name


def test_an_unregistered_name_is_refused_by_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        config.load(write(tmp_path, "ImageToText"), environ={})
    assert str(caught.value) == (
        "models[0] (m).task 'ImageToText' is not one of ImageClassification, ImageToImage, "
        "TextToText, Tensor; did you mean ImageToImage?"
    )


def test_the_web_half_covers_exactly_the_served_types() -> None:
    assert tuple(web_types.TASKS) == task_types.SERVED
    for name, task in web_types.TASKS.items():
        assert task.name == name and task.type is task_types.REGISTRY[name]
        assert task.data.kind == task.type.input
        assert set(task.defaults) <= set(task.type.options)
    assert {d.kind for d in web_types.INPUTS} == {t.input for t in task_types.TYPES if t.served}


def test_openapi_lists_exactly_the_registered_types() -> None:
    client, _ = client_for()
    body = client.get("/openapi.json").json["paths"]["/inference"]["post"]
    request = body["requestBody"]["content"]["application/json"]["schema"]
    names: list[str] = []
    with_options: list[str] = []
    data_tags: list[str] = []
    for variant in request["oneOf"]:  # one per data form, with the types that take it
        kinds = variant["properties"]["inference_type"]
        named, *tagged = kinds["oneOf"] if "oneOf" in kinds else [kinds]
        names += named["enum"]
        with_options += [next(iter(o["properties"])) for o in tagged[0]["oneOf"]] if tagged else []
        data_tags += [next(iter(o["properties"])) for o in variant["properties"]["data"]["oneOf"]]
    assert sorted(names) == sorted(task_types.SERVED)
    assert with_options == list(web_types.WITH_OPTIONS)
    assert data_tags == list(web_types.DATA_TAGS) == ["B64Image", "Text", "text", "Tensor"]
    outputs = {tag for task in web_types.TASKS.values() for tag in task.output}
    assert set(schema.INFERENCE.tags) == outputs == {"Classification", "B64Image", "Text", "Tensor"}
    for name in task_types.SERVED:
        assert name in body["description"]


@pytest.mark.parametrize("name", task_types.SERVED)
def test_each_served_type_parses_to_its_item(name: str) -> None:
    task_type = task_types.REGISTRY[name]
    assert task_type.input is not None
    body = {"data": DATA[task_type.input], "inference_type": name}
    parsed = parse_inference(body, make_settings(), deadline=FAR)
    assert parsed.task is web_types.TASKS[name]
    item = parsed.item
    assert item["task"] == name and item["kind"] == task_type.input and item["deadline"] == FAR
    assert set(item) == {"kind", "task", task_type.input, "deadline", *parsed.task.defaults}


def test_an_unregistered_type_is_an_unknown_inference_type() -> None:
    client, fake = client_for()
    r = client.post("/inference", json={"data": {"Text": "x"}, "inference_type": "Detection"})
    assert r.status_code == 422 and r.json["error"]["code"] == "unknown_inference_type"
    assert r.json["error"]["message"] == (
        'inference_type \'Detection\' is not one of "ImageToImage", "TextToText", "Tensor" or '
        '{"ImageClassification": {"top_n": N}}'
    )
    assert fake.submitted == []


def test_a_model_configured_for_tensor_refuses_every_other_type() -> None:
    client, fake = client_for(tasks={"m": "Tensor"})
    r = client.post("/inference", json={"data": {"Text": "x"}, "inference_type": "TextToText"})
    assert r.status_code == 422 and r.json["error"] == {
        "code": "task_mismatch",
        "message": "model m is configured for Tensor, not TextToText; send inference_type "
        "Tensor or choose another model",
    }
    assert fake.submitted == []


@pytest.mark.parametrize("configured", task_types.NAMES)
def test_the_raw_type_is_taken_by_a_model_configured_for_any_task(configured: str) -> None:
    body = {"data": DATA[task_types.ARGS], "inference_type": "Tensor"}
    settings = make_settings(tasks={"m": configured})
    parsed = parse_inference(body, settings, deadline=FAR)
    assert parsed.item == {"kind": "args", "task": "Tensor", "args": ["hi"], "deadline": FAR}


def test_make_item_refuses_a_type_that_is_not_served() -> None:
    reserved = task_types.TaskType("Reserved", None)
    with pytest.raises(ValueError, match="Reserved is not served yet"):
        contract.make_item(reserved, b"", FAR)


def test_the_worker_half_covers_exactly_the_served_types(model_dir: Path) -> None:
    from autodep_celery.worker import task_types as worker_types
    from autodep_celery.worker.batch import run_batch
    from autodep_celery.worker.registry import Registry

    assert tuple(worker_types.HANDLERS) == task_types.SERVED
    for name, handler in worker_types.HANDLERS.items():
        assert handler.name == name and handler.type is task_types.REGISTRY[name]

    settings = Settings(
        models=(
            ModelSettings("tiny", str(model_dir / "tiny.pt")),
            ModelSettings("tensor", str(model_dir / "tiny.pt"), task="Tensor"),
        )
    )
    registry = Registry(settings)
    # a model configured for Tensor loads without a warm-up (no input is known)
    assert registry.get("tensor").num_classes is None
    assert registry.get("tiny").num_classes == 10  # warmed up by ImageClassification's hook

    def run(model: str, item: dict[str, object]) -> dict[str, object]:
        batch = dict(contract.make_batch(model, "b", "", [item]))  # type: ignore[list-item]
        [result] = run_batch(registry, settings, batch)["results"]
        return result  # type: ignore[no-any-return]

    unknown = run("tiny", {"kind": "image", "task": "Detection", "image": b"", "deadline": FAR})
    assert unknown["error"] == {
        "code": "invalid_input",
        "message": "inference_type 'Detection' is not one of ImageClassification, "
        "ImageToImage, TextToText, Tensor",
        "status": 422,
    }
    wrong_kind = run("tiny", {"kind": "image", "task": "Tensor", "image": b"", "deadline": FAR})
    assert wrong_kind["error"]["message"] == "a 'image' input cannot be used for Tensor"  # type: ignore[index]
    image = contract.image_item("ImageClassification", png_bytes(), FAR, 1)
    refused = run("tensor", dict(image))
    assert refused["error"]["code"] == "wrong_inference_type"  # type: ignore[index]
    # the raw type runs on a model configured for any task, or none
    tensor = typed.tensor_from_values("float32", [1, 3, 4, 4], [0.5] * 48)
    for model in ("tiny", "tensor"):
        result = run(model, dict(contract.args_item([tensor], FAR)))
        assert result["ok"], result
        assert result["output"]["Tensor"]["shape"] == [1, 10]  # type: ignore[index]
