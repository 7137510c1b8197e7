"""API keys: bearer tokens for the inference routes, a separate admin key for management.

Keys come from the environment (``AUTODEP_API_KEYS``, ``AUTODEP_ADMIN_KEYS``: comma-separated)
or from files named in ``[auth]`` (one key per line, ``#`` comments), never from config.toml
itself, so they stay out of the repository, of process listings and of the settings the app
logs. With no key of a kind configured, its routes are open (``autodep serve`` on loopback);
:func:`check_listen` refuses a server that listens beyond loopback with no key at all unless
``[auth] allow_unauthenticated`` says so (docs/architecture.md §2.19). An admin key is also
accepted on inference routes. Keys are compared in constant time (``hmac.compare_digest``)
against every configured key, and never logged. Must not import torch.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass
from pathlib import Path

from autodep_celery import errors
from autodep_celery.config import ConfigError, Settings
from autodep_celery.listen import is_loopback

API_KEYS_ENV = "AUTODEP_API_KEYS"
ADMIN_KEYS_ENV = "AUTODEP_ADMIN_KEYS"

OPEN = "open"
INFERENCE = "inference"
ADMIN = "admin"

ACCESS = {
    "inference": INFERENCE,
    "torchserving": INFERENCE,
    "oip": INFERENCE,
    "torchserve": INFERENCE,
    "classify": INFERENCE,
    "jobs": INFERENCE,
    "management": ADMIN,
}
"""Blueprint -> who may call it; every other blueprint (health, readiness, metrics, docs,
status) is open, so probes and scrapers need no key."""
OPEN_ENDPOINTS = frozenset(
    {
        "oip.live",
        "oip.ready",
        "oip.model_ready",
        "oip.model_version_ready",
        "torchserve.ping",
        "torchserving.healthcheck",
    }
)
"""Health endpoints inside protected blueprints: those protocols' probes carry no key."""


class Unauthorized(errors.ClientError):
    http_status = 401
    code = "unauthorized"


class Forbidden(errors.ClientError):
    http_status = 403
    code = "forbidden"


@dataclass(frozen=True)
class Keys:
    api: tuple[bytes, ...] = ()
    admin: tuple[bytes, ...] = ()

    @property
    def any(self) -> bool:
        return bool(self.api or self.admin)


def _split(text: str) -> list[str]:
    keys = []
    for line in text.replace(",", "\n").splitlines():
        key = line.split("#", 1)[0].strip()
        if key:
            keys.append(key)
    return keys


def _read_file(path: str, what: str) -> list[str]:
    try:
        return _split(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"auth.{what} {path!r} cannot be read: {exc.strerror}") from None


def load_keys(settings: Settings, environ: dict[str, str] | None = None) -> Keys:
    env = os.environ if environ is None else environ
    a = settings.auth
    api = _split(env.get(API_KEYS_ENV, ""))
    admin = _split(env.get(ADMIN_KEYS_ENV, ""))
    if a.api_keys_file:
        api += _read_file(a.api_keys_file, "api_keys_file")
    if a.admin_keys_file:
        admin += _read_file(a.admin_keys_file, "admin_keys_file")
    for key in (*api, *admin):
        if len(key) < 16:
            raise ConfigError(
                "an API or admin key is shorter than 16 characters; use a random one, e.g. "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
    return Keys(tuple(k.encode() for k in api), tuple(k.encode() for k in admin))


def _matches(token: bytes, keys: tuple[bytes, ...]) -> bool:
    found = False
    for key in keys:  # every key compared, so timing says nothing about which matched
        found |= hmac.compare_digest(token, key)
    return found


def bearer(header: str | None) -> bytes | None:
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip().encode()


def authorize(keys: Keys, access: str, header: str | None) -> None:
    """Raise Unauthorized/Forbidden unless `header` (Authorization) may call an `access` route."""
    if access == OPEN:
        return
    required = keys.admin if access == ADMIN else keys.api + keys.admin
    if not required:
        if access == ADMIN and keys.api:
            # API keys but no admin key: management stays closed, never open to API keys
            raise Forbidden(
                "management needs an admin key and none is configured; set AUTODEP_ADMIN_KEYS "
                "or [auth] admin_keys_file"
            )
        return
    token = bearer(header)
    if token is None:
        kind = "an admin key" if access == ADMIN else "an API key"
        raise Unauthorized(f"this route needs {kind}: send Authorization: Bearer <key>")
    if _matches(token, required):
        return
    if access == ADMIN and _matches(token, keys.api):
        raise Forbidden("an API key cannot call management routes; use an admin key")
    raise Unauthorized("the key is not valid; check Authorization: Bearer <key>")


def check_listen(settings: Settings, keys: Keys, host: str | None = None) -> None:
    """Refuse to serve beyond loopback without any key, unless explicitly allowed."""
    host = settings.web.host if host is None else host
    if is_loopback(host) or keys.any or settings.auth.allow_unauthenticated:
        return
    raise ConfigError(
        f"web.host {host!r} listens beyond loopback and no API key is configured: anyone who "
        f"reaches it can run models and register model files. Set {API_KEYS_ENV} and "
        f"{ADMIN_KEYS_ENV} (or [auth] api_keys_file / admin_keys_file), or set [auth] "
        "allow_unauthenticated = true (AUTODEP_AUTH__ALLOW_UNAUTHENTICATED=true) if a proxy "
        "in front does the authentication"
    )
