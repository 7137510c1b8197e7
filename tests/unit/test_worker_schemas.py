"""worker.schemas: the forward() signature a worker publishes for the web's /v2 metadata, read
from the example models, and what web.oip_signature makes of it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis
import torch

from autodep_celery import contract
from autodep_celery.web import oip_signature
from autodep_celery.worker import schemas

pytestmark = pytest.mark.unit


def load(model_dir: Path, name: str) -> Any:
    return torch.jit.load(str(model_dir / f"{name}.pt"))


def test_describe_the_example_models(model_dir: Path) -> None:
    assert schemas.describe(load(model_dir, "tiny")) == {
        "inputs": [{"name": "x", "type": "Tensor", "default": False}],
        "output": "Tensor",
    }
    assert schemas.describe(load(model_dir, "textgen")) == {
        "inputs": [{"name": "texts", "type": "List[str]", "default": False}],
        "output": "List[str]",
    }
    assert schemas.describe(load(model_dir, "segmenter"))["output"] == "Dict[str, Tensor]"
    assert schemas.describe(object()) is None


def test_multi_signature_gives_its_metadata(model_dir: Path) -> None:
    if not (model_dir / "multi.pt").exists():
        pytest.skip("no multi example model")
    described = schemas.describe(load(model_dir, "multi"))
    assert described is not None
    assert [i["type"] for i in described["inputs"]] == [
        "List[Tensor]",
        "Tensor",
        "Dict[str, Tensor]",
        "int",
        "str",
    ]
    assert [o["name"] for o in oip_signature.metadata_inputs(described)] == [
        "tensor_list.<i>",
        "single_tensor",
        "tensor_dict.<key>",
        "an_integer",
        "a_string",
    ]


class Pipe:
    def __init__(self, fail: bool = False) -> None:
        self.written: dict[str, str] = {}
        self.fail = fail

    def pipeline(self, transaction: bool = True) -> Pipe:
        return self

    def set(self, key: str, value: str) -> None:
        self.written[key] = value

    def execute(self) -> None:
        if self.fail:
            raise redis.ConnectionError("down")


def test_publish_writes_one_key_per_model_and_survives_redis_down(model_dir: Path) -> None:
    pipe = Pipe()
    schemas.publish(pipe, [("a", load(model_dir, "tiny")), ("b", object())])  # type: ignore[arg-type]
    assert list(pipe.written) == [contract.schema_key("a")] == ["autodep:schema:a"]
    assert json.loads(pipe.written["autodep:schema:a"])["output"] == "Tensor"
    schemas.publish(Pipe(fail=True), [("a", load(model_dir, "tiny"))])  # type: ignore[arg-type]
    schemas.publish(None, [("a", load(model_dir, "tiny"))])


def test_runtime_publishes_loaded_and_unloaded_models(model_dir: Path) -> None:
    """A process publishes the models it loads, and reads the signature of those it serves
    past worker.max_loaded_models (lazily loaded), unless one is published already."""
    from autodep_celery.config import BrokerSettings, ModelSettings, Settings, WorkerSettings
    from autodep_celery.worker import runtime
    from tests.unit.test_worker_tasks import FakeRedis

    settings = Settings(
        broker=BrokerSettings(url="redis://fake:1/0"),
        worker=WorkerSettings(max_loaded_models=1),
        models=tuple(
            ModelSettings(name=n, path=str(model_dir / f"{n}.pt"))
            for n in ("echo", "textgen", "tiny")
        ),
    )
    fake = FakeRedis()
    fake.strings[contract.schema_key("tiny")] = "published before"
    rt = runtime.Runtime(settings=settings, hostname="w@t", models=["echo", "textgen", "tiny"])
    rt._redis = fake  # type: ignore[assignment]
    rt.load()
    assert rt.registry.loaded_names() == ["echo"]
    assert json.loads(fake.strings[contract.schema_key("echo")])["output"] == "str"
    assert json.loads(fake.strings[contract.schema_key("textgen")])["output"] == "List[str]"
    assert fake.strings[contract.schema_key("tiny")] == "published before"
    rt.registry.get("tiny")  # a lazy load publishes again: the file may have changed
    assert json.loads(fake.strings[contract.schema_key("tiny")])["output"] == "Tensor"
