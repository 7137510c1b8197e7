"""Publish each loaded model's forward() signature, so the web tier can describe the model (Open
Inference Protocol metadata) and name its inputs without importing torch.

Called by worker.runtime: each process writes the signature of every model it loads to
``contract.schema_key(model)`` (no TTL: a signature changes only with the model file, and the
next load overwrites it), and at start reads the signature of the models it serves but does not
keep loaded (past worker.max_loaded_models) when none is published yet, so that /v2 can name
their inputs before their first request. Imports torch; knows nothing of Celery or HTTP.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

import redis
import torch

from autodep_celery import contract
from autodep_celery.config import Settings

log = logging.getLogger(__name__)


def describe(module: Any) -> dict[str, Any] | None:
    """``{"inputs": [{"name", "type", "default"}], "output": "<type>"}`` of a TorchScript
    module's forward() (without self and keyword-only arguments); None without a schema."""
    try:
        schema = module.forward.schema
    except (AttributeError, RuntimeError):
        return None
    inputs = [
        {"name": a.name, "type": str(a.type), "default": bool(a.has_default_value())}
        for a in schema.arguments[1:]
        if not a.kwarg_only
    ]
    returns = [str(r.type) for r in schema.returns]
    output = returns[0] if len(returns) == 1 else f"Tuple[{', '.join(returns)}]"
    return {"inputs": inputs, "output": output}


def publish(client: redis.Redis | None, modules: Iterable[tuple[str, Any]]) -> None:
    """Write the signature of each (model name, module); a Redis failure is logged, not raised
    (the model still serves; /v2 metadata says its signature is unknown)."""
    if client is None:
        return
    pipe = client.pipeline(transaction=False)
    for name, module in modules:
        described = describe(module)
        if described is not None:
            pipe.set(contract.schema_key(name), json.dumps(described))
    try:
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("cannot publish model signatures: %s", exc)


def publish_missing(client: redis.Redis | None, settings: Settings, names: list[str]) -> None:
    """Publish the signatures of models `names` (not loaded by this process) that nobody has
    published yet, loading each on the CPU just long enough to read it."""
    if client is None or not names:
        return
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.exists(contract.schema_key(name))
    try:
        published = pipe.execute()
    except redis.RedisError as exc:
        log.warning("cannot read model signatures: %s", exc)
        return
    for name in (n for n, found in zip(names, published, strict=True) if not found):
        model = settings.model(name)
        if model is None:
            continue
        try:
            module = torch.jit.load(model.path, map_location="cpu")  # type: ignore[no-untyped-call]  # untyped in torch
        except Exception as exc:  # torch raises RuntimeError, ValueError, OSError...
            log.warning("model %s: cannot read its signature from %s: %s", name, model.path, exc)
            continue
        publish(client, [(name, module)])
