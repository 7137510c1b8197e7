"""The web process's model set: config.toml's models merged with the registry in Redis
(autodep_celery.model_registry), so a model registered through any web process is served by
every one without a restart.

The set is re-read at most every REFRESH_S, by the first request after that (a hook of
web.routes.management), and at once when a request names a model this process does not know:
the settings the routes get (:class:`LiveSettings`) look in Redis before answering "no such
model" (such reads at most every FORCED_READ_MIN_S). When the set changes, listeners update
what holds models (the dispatcher's table, the metrics' labels). An unreadable Redis keeps the
last set. Must not import torch or Flask.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import redis

from autodep_celery import forksafe, model_registry
from autodep_celery.config import ModelSettings, Settings
from autodep_celery.web.redis_client import connect

log = logging.getLogger(__name__)

REFRESH_S = 1.0
"""Longest time a web process serves a model set older than Redis's (a DELETE done through
another process takes effect here within this; a registration at once, on its first request)."""
FORCED_READ_MIN_S = 0.05
"""Shortest time between two reads forced by requests naming a model this process does not
know: a flood of made-up names costs Redis at most 20 reads a second per web process, not one
per request. A model registered elsewhere may thus answer 404 here for up to this long, and
only while such a flood goes on."""


class RegistrySource(Protocol):
    def read(self) -> dict[str, bytes]:
        """The registry hash; raises when Redis cannot be read."""
        ...

    def client(self) -> redis.Redis:
        """A client for writing it (web.routes.management)."""
        ...


class RedisRegistry:
    """The registry of one Redis; the client is made on first use, after gunicorn forks."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._client: redis.Redis | None = None
        forksafe.register(self, RedisRegistry._after_fork)

    def _after_fork(self) -> None:
        self._client = None

    def client(self) -> redis.Redis:
        if self._client is None:
            self._client = connect(self._url)
        return self._client

    def read(self) -> dict[str, bytes]:
        return model_registry.read(self.client())


@dataclass(frozen=True)
class LiveSettings(Settings):
    """Settings whose ``model(name)`` refreshes the table once before answering None, so every
    route that resolves a model (validation, /predictions, /v2, /management) finds one that
    another web process registered a moment ago."""

    def model(self, name: str) -> ModelSettings | None:
        found = Settings.model(self, name)
        table: ModelTable | None = getattr(self, "_table", None)
        if found is None and table is not None:
            return Settings.model(table.refresh(miss=True), name)
        return found


class ModelTable:
    def __init__(
        self,
        static: Settings,
        source: RegistrySource | None,
        *,
        refresh_s: float = REFRESH_S,
        forced_min_s: float = FORCED_READ_MIN_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.static = static
        """config.toml's settings, as the process started with them."""
        self.source = source if static.management.enabled else None
        self._refresh_s = refresh_s
        self._forced_min_s = forced_min_s
        self._clock = clock
        self._raw: dict[str, bytes] = {}
        self._settings = self._live(static)
        self._read_at = float("-inf")
        self._missed_at = float("-inf")
        self._failing = False
        self._listeners: list[Callable[[Settings], None]] = []
        self._lock = threading.Lock()
        forksafe.register(self, ModelTable._after_fork)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._read_at = float("-inf")  # the child reads Redis on its own first request
        self._missed_at = float("-inf")

    def _live(self, settings: Settings) -> LiveSettings:
        fields = {f.name: getattr(settings, f.name) for f in dataclasses.fields(Settings)}
        live = LiveSettings(**fields)
        if self.source is not None:
            object.__setattr__(live, "_table", self)  # frozen; not a field: asdict skips it
        return live

    def settings(self) -> Settings:
        """The current set (no I/O)."""
        return self._settings

    def raw(self) -> dict[str, bytes]:
        """The registry entries behind the current set (for modelUrl and loadedAtStartup)."""
        return self._raw

    def on_change(self, listener: Callable[[Settings], None]) -> None:
        self._listeners.append(listener)

    def _due(self, now: float, force: bool, miss: bool) -> bool:
        if self._failing or not (force or miss):
            return now - self._read_at >= self._refresh_s
        return force or now - self._missed_at >= self._forced_min_s

    def refresh(self, force: bool = False, miss: bool = False) -> Settings:
        """Re-read the registry when the set is older than refresh_s, at once with `force`
        (management calls, after their own writes), or for a `miss` (a request named a model
        not in the set) if the last miss read is FORCED_READ_MIN_S old; returns the set. A
        failed read keeps the last set and is tried again after refresh_s."""
        if self.source is None:
            return self._settings
        if not self._due(self._clock(), force, miss):
            return self._settings
        with self._lock:
            now = self._clock()
            if not self._due(now, force, miss):
                return self._settings  # another thread read it meanwhile, or Redis is down
            self._read_at = now
            if miss:
                self._missed_at = now
            try:
                raw = self.source.read()
            except (redis.RedisError, OSError) as exc:
                if not self._failing:
                    log.warning("cannot read the model registry (%s); keeping the last set", exc)
                self._failing = True
                return self._settings
            self._failing = False
            if raw == self._raw:
                return self._settings
            merged = model_registry.merge(self.static, raw)
            before = {m.name for m in self._settings.models}
            self._raw, self._settings = raw, self._live(merged)
        after = {m.name for m in merged.models}
        if before != after:
            log.info(
                "models now served: %s (added: %s, removed: %s)",
                ", ".join(sorted(after)) or "none",
                ", ".join(sorted(after - before)) or "none",
                ", ".join(sorted(before - after)) or "none",
            )
        for listener in self._listeners:
            try:
                listener(merged)
            except Exception:  # one holder failing must not keep the others stale
                log.exception("model set listener failed")
        return self._settings


def build(
    settings: Settings, dispatcher: object, *listeners: Callable[[Settings], None], from_redis: bool
) -> ModelTable:
    """The app's table (web.app): read from Redis with the real wiring (`from_redis`; test doubles
    get config's models only), telling the dispatcher and `listeners` of each change."""
    table = ModelTable(settings, RedisRegistry(settings.result_url) if from_redis else None)
    set_models = getattr(dispatcher, "set_models", None)  # test doubles may not have it
    if set_models is not None:
        table.on_change(lambda s: set_models(s.models))
    for listener in listeners:
        table.on_change(listener)
    return table
