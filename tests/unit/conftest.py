"""What several unit test modules share: the example models on disk (`model_dir`, a fixture),
Settings that serve a few models (`make_settings`) and a Flask test client over a fake
dispatcher (`client_for`). Import the two functions from here, as tests/integration does with
its conftest. Each imports what it needs when called (torch for the models, the Flask app for
the client), so a tier that fails to import fails only its own tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from autodep_celery.config import ModelSettings, Settings, WebSettings


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """worker.examples' TorchScript models, a labels file that fits `tiny` (10 lines), one that
    does not (2 lines) and a file that is not a model at all."""
    from autodep_celery.worker.examples import write_example_models

    d = tmp_path_factory.mktemp("models")
    write_example_models(d)
    (d / "tiny_labels.txt").write_text("\n".join(f"thing-{i}" for i in range(10)) + "\n")
    (d / "short_labels.txt").write_text("a\nb\n")
    (d / "broken.pt").write_bytes(b"not a torchscript file")
    return d


def make_settings(
    models: Iterable[str | ModelSettings] = ("m",),
    tasks: Mapping[str, str] | None = None,
    **web: Any,
) -> Settings:
    """Settings serving `models`: a name gets a placeholder path (the web tier never opens
    it) and its task from `tasks`; a ModelSettings is kept as it is. `web`: WebSettings."""
    task_of = tasks or {}

    def model(m: str | ModelSettings) -> ModelSettings:
        if isinstance(m, ModelSettings):
            return m
        return ModelSettings(m, f"/tmp/{m}.pt", task_of.get(m))

    return Settings(web=WebSettings(**web), models=tuple(model(m) for m in models))


def client_for(
    dispatcher: Any = None,
    models: Iterable[str | ModelSettings] = ("m",),
    tasks: Mapping[str, str] | None = None,
    **web: Any,
) -> tuple[Any, Any]:
    """A Flask test client of create_app(make_settings(models, tasks, **web), dispatcher), and
    the dispatcher: by default a FakeDispatcher with one ready process per model."""
    from autodep_celery.web.app import create_app
    from autodep_celery.web.testing import FakeDispatcher, proc

    settings = make_settings(models, tasks, **web)
    if dispatcher is None:
        dispatcher = FakeDispatcher([proc(m.name, pid=i) for i, m in enumerate(settings.models)])
    return create_app(settings, dispatcher).test_client(), dispatcher
