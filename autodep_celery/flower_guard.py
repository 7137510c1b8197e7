"""Flower behind a login whenever it listens beyond loopback.

`celery -A autodep_celery flower` listens on every interface by default (Flower's ``--address``
is ""), and without ``--basic_auth`` or ``--auth`` anyone who reaches it reads every worker and
task, and, with ``FLOWER_UNAUTHENTICATED_API``, resizes, restarts and shuts workers down. Here,
without one of those logins, Flower binds 127.0.0.1 when no address was asked for, refuses to
start when an address beyond loopback was, and is left alone on a Unix socket or when
``[auth] allow_unauthenticated_flower`` says something else guards it (docker compose: the
container's port is published on 127.0.0.1 only).

The hook: Celery's CLI loads its subcommand plugins (Flower's ``flower.command``) before it
imports the app that ``-A`` names, and that command builds its server with the module's
``Flower`` class only after every option is final (FLOWER_* environment, flowerconfig.py, the
command line). :func:`install`, called when :func:`celery_app.default_app` builds the app,
replaces that class with a subclass whose ``start_http_server`` (the point before anything is
bound) applies :func:`decide`. Nothing is imported from Flower; another celery command (a
worker) only gets an unused subclass (docs/architecture.md §2.21). Imports the stdlib and the
core only.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, NamedTuple

from autodep_celery.config import Settings
from autodep_celery.listen import is_loopback

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
"""Where Flower listens when no address and no login are given."""
ALLOW_KEY = "[auth] allow_unauthenticated_flower"
ALLOW_ENV = "AUTODEP_AUTH__ALLOW_UNAUTHENTICATED_FLOWER"
_GUARDED = "_autodep_guarded"


class Decision(NamedTuple):
    address: str | None
    """What Flower binds; None: it must not start."""
    message: str
    """Why, when the address changed or Flower is refused; empty otherwise."""


def decide(address: str, unix_socket: str, has_login: bool, allowed: bool) -> Decision:
    """Where Flower may listen given its --address, --unix_socket, whether a login is set and
    whether an unauthenticated Flower beyond loopback is allowed."""
    if unix_socket or has_login or allowed or is_loopback(address):
        return Decision(address, "")
    fix = (
        "set a login (--basic_auth=user:password or FLOWER_BASIC_AUTH; or --auth with "
        f"Flower's OAuth options), or set {ALLOW_KEY} = true ({ALLOW_ENV}=true) when something "
        "else guards it (a port published on 127.0.0.1 only, an authenticating proxy)"
    )
    if not address:
        return Decision(
            LOOPBACK,
            f"Flower listens on {LOOPBACK} only: it has no login. To reach it from other "
            f"machines, give --address and {fix}",
        )
    return Decision(
        None,
        f"Flower would listen on {address!r}, beyond loopback, without a login: anyone who "
        "reaches it reads every worker and task (and with FLOWER_UNAUTHENTICATED_API resizes "
        f"and shuts down workers). Listen on loopback (--address={LOOPBACK}), or {fix}",
    )


def install(settings: Settings) -> bool:
    """Guard the flower command of this process, if Celery's CLI loaded it; True if it did."""
    command = sys.modules.get("flower.command")
    base = getattr(command, "Flower", None)
    if command is None or base is None:
        return False
    if getattr(base, _GUARDED, False):
        return True
    allowed = settings.auth.allow_unauthenticated_flower
    unguarded = base.start_http_server

    def start_http_server(self: Any) -> Any:
        options = self.options
        has_login = bool(options.basic_auth or options.auth)  # Flower's own test for a login
        decision = decide(options.address or "", options.unix_socket or "", has_login, allowed)
        if decision.address is None:
            log.error("%s", decision.message)
            raise SystemExit(1)
        if decision.message:
            log.warning("%s", decision.message)
            options.address = decision.address
        return unguarded(self)

    guarded = type(base.__name__, (base,), {"start_http_server": start_http_server, _GUARDED: True})
    command.Flower = guarded  # type: ignore[attr-defined]  # looked up when the command runs
    return True
