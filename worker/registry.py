"""Loaded TorchScript models of one worker process: load, warm up, keep a small LRU.

Created by worker.runtime in each pool child after fork (never in the prefork parent: a forward
pass there hangs multi-threaded children, docs/architecture.md §2.3), and used by worker.batch to
find a model by name. Imports torch; knows nothing of Celery or Redis.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from autodep_celery import errors
from autodep_celery.config import ModelSettings, Settings
from autodep_celery.worker import processing, task_types

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    settings: ModelSettings
    module: Any
    """The torch.jit.ScriptModule, in eval mode, on `device`."""
    device: torch.device
    text_kind: str | None = None
    """task_types.TEXT_LIST when forward takes List[str] (one call per batch), TEXT_STR for one
    call per item, None when its first argument is not text."""
    labels: list[str] | None = None
    """The configured labels file's lines, or None to use the defaults."""
    num_classes: int | None = None
    """Width of the classification output, once a forward pass has shown it."""
    load_s: float = 0.0
    warmup_s: float = 0.0

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def dtype(self) -> torch.dtype:
        return torch.float16 if self.half else torch.float32

    @property
    def half(self) -> bool:
        return self.settings.half and self.device.type == "cuda"


class ModelLoadError(errors.ModelError):
    code = "model_load_failed"


def device_of(model: ModelSettings, settings: Settings) -> torch.device:
    return torch.device(model.device or settings.worker.device)


def load_model(model: ModelSettings, settings: Settings) -> LoadedModel:
    """Load, move, warm up; raises ModelLoadError with a message naming the model."""
    device = device_of(model, settings)
    started = time.perf_counter()
    try:
        module = torch.jit.load(  # type: ignore[no-untyped-call]  # untyped in torch
            model.path, map_location=device
        )
    except Exception as exc:  # torch raises RuntimeError, ValueError, OSError...
        raise ModelLoadError(
            f"model {model.name}: cannot load {model.path} as TorchScript "
            f"({processing.torch_error_line(exc)})"
        ) from None
    module.eval()
    loaded = LoadedModel(settings=model, module=module, device=device)
    if loaded.half:
        module.half()
    loaded.text_kind = task_types.text_kind_of(module)
    if model.labels:
        try:
            loaded.labels = processing.read_labels(model.labels)
        except OSError as exc:
            raise ModelLoadError(
                f"model {model.name}: cannot read labels {model.labels}: {exc}"
            ) from None
    loaded.load_s = time.perf_counter() - started
    warm_up(loaded)
    if loaded.labels is not None and loaded.num_classes is not None:
        if len(loaded.labels) != loaded.num_classes:
            raise ModelLoadError(
                f"model {model.name}: labels file {model.labels} has {len(loaded.labels)} "
                f"lines but the model outputs {loaded.num_classes} classes; "
                "give one label per class, one per line"
            )
    return loaded


def warm_up(loaded: LoadedModel) -> None:
    """Run one dummy batch so the first request does not pay for lazy initialisation (the
    task type's warm-up hook; none for a type without a worker half)."""
    handler = task_types.warm_up_handler(loaded)
    started = time.perf_counter()
    try:
        if handler is not None:
            with torch.inference_mode():
                handler.warm_up(loaded)
    except Exception as exc:  # a model with an unusual signature still serves what it can
        log.warning("model %s: warm-up failed (%s)", loaded.name, processing.torch_error_line(exc))
    loaded.warmup_s = time.perf_counter() - started


class Registry:
    """The models of one process; at most `max_loaded` stay loaded (least recently used out)."""

    def __init__(self, settings: Settings, max_loaded: int | None = None) -> None:
        self.settings = settings
        self.max_loaded = max(1, max_loaded or settings.worker.max_loaded_models)
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._failed: dict[str, ModelLoadError] = {}
        self._lock = threading.Lock()
        self.on_load: Callable[[LoadedModel], None] | None = None
        """Called with each model this process loads (worker.runtime publishes its signature)."""

    def get(self, name: str) -> LoadedModel:
        """The loaded model, loading it (and evicting the oldest) on a miss."""
        with self._lock:
            loaded = self._models.get(name)
            if loaded is not None:
                self._models.move_to_end(name)
                return loaded
            model = self.settings.model(name)
            if model is None:
                known = ", ".join(m.name for m in self.settings.models) or "none"
                raise errors.UnknownModel(f"no model named {name!r}; configured models: {known}")
            if name in self._failed:
                raise self._failed[name]
            try:
                loaded = load_model(model, self.settings)
            except ModelLoadError as exc:
                self._failed[name] = exc
                raise
            self._models[name] = loaded
            if self.on_load is not None:
                self.on_load(loaded)
            while len(self._models) > self.max_loaded:
                evicted, _ = self._models.popitem(last=False)
                log.info(
                    "model %s unloaded (worker.max_loaded_models=%d)", evicted, self.max_loaded
                )
            return loaded

    def preload(self, names: list[str]) -> list[str]:
        """Load up to max_loaded of `names`; returns the ones that loaded. Failures are logged."""
        ready = []
        for name in names[: self.max_loaded]:
            try:
                loaded = self.get(name)
            except errors.AutodepError as exc:
                log.error("model %s not served by this process: %s", name, exc.message)
                continue
            log.info(
                "model %s loaded in %.2fs, warmed up in %.2fs on %s",
                name,
                loaded.load_s,
                loaded.warmup_s,
                loaded.device,
            )
            ready.append(name)
        return ready

    def failed_names(self) -> list[str]:
        with self._lock:
            return list(self._failed)

    def loaded_names(self) -> list[str]:
        with self._lock:
            return list(self._models)
