"""Per-process state that must not cross a fork, reset in one place.

gunicorn forks its workers from the master and billiard forks pool children from the Celery
worker: a thread, a socket or a lock made before the fork is dead, shared or stuck in the
child. Objects that hold such state register a reset here (kombu's ``register_after_fork``,
built on ``os.register_at_fork``); the child runs every registered reset right after the fork,
before any of its own code, so no module has to compare pids by hand. Resets only drop
references and make fresh locks: they must not take a lock or do I/O (another thread of the
parent may have held it at the fork). Imports nothing heavy.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

_registry: dict[int, tuple[weakref.ref[Any], Callable[[Any], None]]] = {}
"""id(obj) -> (a weak reference to obj, its reset); keyed by id, since dataclasses with
eq=True are unhashable, and weak so that registering never keeps an object alive."""
_lock = threading.RLock()  # reentrant: a weakref callback may run while it is held


def register(obj: Any, reset: Callable[[Any], None]) -> None:
    """Call ``reset(obj)`` in every child forked from now on while `obj` lives."""
    key = id(obj)

    def gone(_ref: weakref.ref[Any]) -> None:
        with _lock:
            if key in _registry and _registry[key][0] is _ref:
                del _registry[key]

    with _lock:
        _registry[key] = (weakref.ref(obj, gone), reset)


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.RLock()  # it may have been held by another thread at the fork
    for ref, reset in list(_registry.values()):
        obj = ref()
        if obj is None:
            continue
        try:
            reset(obj)
        except Exception:  # a broken reset must not kill the new process
            log.exception("resetting %r after fork failed", obj)


os.register_at_fork(after_in_child=_after_fork_in_child)
