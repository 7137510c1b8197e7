"""The model registry: models registered, rescaled or unregistered at runtime (TorchServe's
management API, web.routes.management), kept in Redis on top of config.toml's models.

``autodep:registry`` (contract.REGISTRY_KEY) is a hash, one field per model name, holding JSON:

    {"fields": {"name": "x", "path": "/store/x.pt", ...}, "url": "x.pt", "ts": ...}   registered
    {"fields": {"min_workers": 2, "max_workers": 4}, "ts": ...}       a config.toml model, rescaled
    {"deleted": true, "ts": ...}                                       a config.toml model, removed

:func:`merge` is the one rule that turns config.toml's models and these entries into the model
set; the web (web.model_table: about every second, and at once on an unknown name), each worker
(celery_app.default_app, at start) and the autoscaler (every tick) read it through
:func:`effective`. :func:`resolve_in_store` is the one gate for files: a path inside
``[management] model_store`` to a TorchScript archive. Writes are WATCH transactions, so two web
processes registering one name cannot both win. Imports redis; never torch or Flask.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import redis

from autodep_celery import config, errors
from autodep_celery.config import ConfigError, ModelSettings, Settings
from autodep_celery.contract import REGISTRY_KEY

log = logging.getLogger(__name__)

MODEL_VERSION = "1.0"
VERSION_NAMES = (MODEL_VERSION, "1")
"""How clients name the one version: TorchServe's archiver writes "1.0", the OIP says "1"."""
"""The one version of every model (TorchServe's describe and register messages name one)."""
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_EXPORT_HINT = "export it with torch.jit.script(model).save(path) (or torch.jit.trace)"
_warned: set[tuple[str, bytes]] = set()
"""Bad entries already logged by this process (merge runs every second in every web process)."""

Raw = Mapping[str, bytes]
"""The registry hash as read: model name -> JSON entry."""


def _client_error(message: str, code: str, status: int = 400) -> errors.ClientError:
    return errors.ClientError(message, code=code, http_status=status)


# ---- reading -------------------------------------------------------------------------------


def read(client: redis.Redis) -> dict[str, bytes]:
    """The registry hash, names decoded (one HGETALL)."""
    return {_text(k): _bytes(v) for k, v in client.hgetall(REGISTRY_KEY).items()}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def entry(raw: bytes | None) -> dict[str, Any] | None:
    """One entry as a dict, None when absent or unreadable."""
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def effective(settings: Settings, client: redis.Redis) -> Settings:
    """`settings` with the registry merged in; config.toml's models only when management is
    disabled. Raises redis errors: each caller decides what an outage means for it."""
    if not settings.management.enabled:
        return settings
    return merge(settings, read(client))


def merge(static: Settings, raw: Raw) -> Settings:
    """config.toml's models in their order, each rescaled or removed by its entry, then the
    registered ones by name. A bad entry is skipped (logged once): one wrong field in Redis must
    not stop every process from serving the others."""
    models = {m.name: m for m in static.models}
    for name in sorted(raw):
        data = entry(raw[name])
        if data is None or not isinstance(data.get("fields", {}), dict):
            _warn(name, raw[name], "not a JSON object with a fields object")
            continue
        if data.get("deleted"):
            models.pop(name, None)
            continue
        try:
            models[name] = _build(static, name, data.get("fields", {}))
        except (ConfigError, TypeError, ValueError) as exc:
            _warn(name, raw[name], str(exc))
    return dataclasses.replace(static, models=tuple(models.values()))


def _build(static: Settings, name: str, fields: dict[str, Any]) -> ModelSettings:
    base = static.model(name)
    merged = {**(_plain(base) if base is not None else {}), **fields, "name": name}
    autoscaler = dataclasses.asdict(static.autoscaler)
    model = config.from_dict({"autoscaler": autoscaler, "models": [merged]}).models[0]
    config.check_model(static, model)
    return model


def _plain(model: ModelSettings) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(model).items() if v is not None}


def _warn(name: str, raw: bytes, why: str) -> None:
    if (name, raw) not in _warned:
        _warned.add((name, raw))
        log.warning("model registry: ignoring the entry of %s (%s)", name, why)


def origin(static: Settings, raw: Raw, model: ModelSettings) -> tuple[str, bool]:
    """(modelUrl, loadedAtStartup) of a served model: the url it was registered with, else its
    path relative to the model store (or its file name), and whether config.toml defines it."""
    data = entry(raw.get(model.name)) or {}
    url = data.get("url")
    if isinstance(url, str) and url:
        return url, False
    path = Path(model.path)
    try:
        shown = str(path.relative_to(Path(static.management.model_store).resolve()))
    except ValueError:
        shown = path.name
    return shown, static.model(model.name) is not None


# ---- the model store -----------------------------------------------------------------------


def resolve_in_store(store: str, url: str) -> Path:
    """The real path of `url`, a TorchScript file inside the model store `store`; a 4xx
    ClientError saying what is wrong otherwise. Symlinks are resolved before the check, so
    neither a link nor an absolute path can reach a file outside the store."""
    if not url:
        raise _client_error(
            "url is required: a TorchScript file in the model store, e.g. url=resnet18.pt",
            "missing_url",
        )
    if "\0" in url:
        raise _client_error("url must not contain NUL characters", "invalid_url")
    if not url.isascii():
        try:
            url.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: no file can have that name
            raise _client_error("url must be valid Unicode text", "invalid_url") from None
    if _SCHEME.match(url) or url.startswith("//"):
        raise _client_error(
            f"url {url!r} is not a file in the model store: downloads (http://, s3://, file:) "
            "are not supported; copy the file into the model store and pass its relative path",
            "invalid_url",
        )
    if ".." in PurePosixPath(url).parts:
        raise _client_error(
            f"url {url!r} must not contain '..'; pass a path relative to the model store",
            "invalid_url",
        )
    root = Path(store).resolve()
    if not root.is_dir():
        raise errors.AutodepError(
            f"the model store {root} does not exist; create it or set [management] model_store",
            code="model_store_missing",
        )
    try:
        real = (root / url).resolve(strict=True)  # an absolute url replaces root here
    except FileNotFoundError:
        raise _client_error(
            f"no file {url!r} in the model store; copy it there first", "model_file_not_found", 404
        ) from None
    # a symlink loop, a name too long; ValueError: whatever else the path API refuses (NUL and
    # lone surrogates are refused above with a clearer message)
    except (OSError, RuntimeError, ValueError) as exc:
        raise _client_error(f"url {url!r} cannot be resolved: {exc}", "invalid_url") from None
    if not real.is_relative_to(root):
        raise _client_error(
            f"url {url!r} leads outside the model store (through an absolute path or a "
            "symlink); only files inside the model store can be registered",
            "outside_model_store",
            403,
        )
    if not real.is_file():
        raise _client_error(f"url {url!r} is not a regular file", "invalid_url")
    check_torchscript(real, url)
    return real


def check_torchscript(path: Path, shown: str) -> None:
    """Refuse, cheaply and without torch, a file that is not a TorchScript archive: a zip with
    one top folder holding data.pkl, constants.pkl and code/ (torch.save() writes no code/)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        raise _client_error(
            f"{shown} is not a TorchScript file (not a zip archive); {_EXPORT_HINT}",
            "not_torchscript",
        ) from None
    tops = {n.split("/", 1)[0] for n in names}
    top = next(iter(tops)) if len(tops) == 1 else ""
    needed = {f"{top}/data.pkl", f"{top}/constants.pkl"}
    if not top or not needed <= set(names) or not any(n.startswith(f"{top}/code/") for n in names):
        raise _client_error(
            f"{shown} is a zip but not a TorchScript archive (a torch.save() checkpoint has no "
            f"code/); {_EXPORT_HINT}",
            "not_torchscript",
        )


# ---- writing -------------------------------------------------------------------------------


def _served(static: Settings, name: str, data: dict[str, Any] | None) -> bool:
    if data is None:
        return static.model(name) is not None
    return not data.get("deleted")


def _fields(model: ModelSettings) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in _plain(model).items()}


def _transaction(client: redis.Redis, name: str, change: Callable[[Any, Any], None]) -> None:
    """Run `change(pipe, entry of name)` under WATCH of the registry, again if another process
    wrote meanwhile; `change` checks, then queues its writes after ``pipe.multi()``."""

    def run(pipe: Any) -> None:
        change(pipe, entry(pipe.hget(REGISTRY_KEY, name)))

    client.transaction(run, REGISTRY_KEY)


def register(client: redis.Redis, static: Settings, model: ModelSettings, url: str) -> None:
    """Add `model`, registered from `url`; 409 when a model of that name is served already
    (from config.toml or the registry). A config.toml model that was unregistered may be
    registered again: its tombstone is replaced."""

    def change(pipe: Any, data: dict[str, Any] | None) -> None:
        if _served(static, model.name, data):
            raise _client_error(
                f'model "{model.name}" is already registered; unregister it first '
                f"(DELETE /management/models/{model.name}) or choose another model_name",
                "model_exists",
                409,
            )
        value = {"fields": _fields(model), "url": url, "ts": time.time()}
        pipe.multi()
        pipe.hset(REGISTRY_KEY, model.name, json.dumps(value))

    _transaction(client, model.name, change)


def set_bounds(
    client: redis.Redis, static: Settings, current: ModelSettings, low: int, high: int
) -> ModelSettings:
    """Set the pool bounds (min_workers, max_workers) of a served model; the autoscaler applies
    them on its next tick. Returns the model as it now is."""
    updated = dataclasses.replace(current, min_workers=low, max_workers=high)
    try:
        config.check_model(static, updated)
    except ConfigError as exc:
        raise _client_error(str(exc), "invalid_workers") from None

    def change(pipe: Any, data: dict[str, Any] | None) -> None:
        if not _served(static, current.name, data):
            raise _unknown(current.name)
        value = dict(data or {})
        value["fields"] = {**value.get("fields", {}), "min_workers": low, "max_workers": high}
        value["ts"] = time.time()
        pipe.multi()
        pipe.hset(REGISTRY_KEY, current.name, json.dumps(value))

    _transaction(client, current.name, change)
    return updated


def unregister(client: redis.Redis, static: Settings, name: str) -> None:
    """Stop serving `name`: a registered model's entry goes, a config.toml model gets a
    tombstone (it stays unserved, across restarts too, until registered again)."""

    def change(pipe: Any, data: dict[str, Any] | None) -> None:
        if not _served(static, name, data):
            raise _unknown(name)
        pipe.multi()
        if static.model(name) is not None:
            pipe.hset(REGISTRY_KEY, name, json.dumps({"deleted": True, "ts": time.time()}))
        else:
            pipe.hdel(REGISTRY_KEY, name)

    _transaction(client, name, change)


def _unknown(name: str) -> errors.UnknownModel:
    return errors.UnknownModel(
        f"Model not found: {name}; GET /management/models lists the registered models"
    )
