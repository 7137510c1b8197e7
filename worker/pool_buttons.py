"""Flower's "Grow" and "Shrink" pool buttons on workers started with ``--autoscale``.

Celery refuses ``pool_grow`` and ``pool_shrink`` on an autoscaling worker ("adjust autoscale
range instead", since 4.4.6), and every autodep worker autoscales, so Flower's pool buttons
(and ``celery control pool_grow``) would only ever show that refusal. These replacements move
the autoscale range instead, through the same path as the autoscaler (worker.control): grow by
N raises min (and max if needed) to the current size plus N and forks at once; shrink by N
lowers max (and min if needed), stopping idle children. A pool never shrinks below one process
here: going to zero is the autoscaler's decision. Without ``--autoscale`` Celery's own commands
run unchanged. The autodep autoscaler leaves a pool resized by hand alone for
``autoscaler.manual_hold_s``.

Registered when the worker imports worker.tasks; replaces Celery's commands of the same name
(celery.worker.control is imported first, so these registrations come last).
"""

from __future__ import annotations

from typing import Any

from celery.worker import control as celery_control
from celery.worker.control import control_command

from autodep_celery.worker.control import autodep_autoscale

_celery_pool_grow = celery_control.pool_grow
_celery_pool_shrink = celery_control.pool_shrink


def _scaler(state: Any) -> Any:
    return getattr(state.consumer.controller, "autoscaler", None)


@control_command(args=[("n", int)], signature="[N=1]")
def pool_grow(state: Any, n: int = 1, **kwargs: Any) -> dict[str, Any]:
    """Grow the pool by n processes (on an autoscaling worker: raise its autoscale range)."""
    scaler = _scaler(state)
    if scaler is None:
        return _celery_pool_grow(state, n, **kwargs)  # type: ignore[no-any-return]  # Celery's own
    target = scaler.processes + max(0, n)
    grown: dict[str, Any] = autodep_autoscale(
        state, max=max(scaler.max_concurrency, target), min=target
    )
    return grown


@control_command(args=[("n", int)], signature="[N=1]")
def pool_shrink(state: Any, n: int = 1, **kwargs: Any) -> dict[str, Any]:
    """Shrink the pool by n processes, to one at least (autoscaling: lower its range)."""
    scaler = _scaler(state)
    if scaler is None:
        return _celery_pool_shrink(state, n, **kwargs)  # type: ignore[no-any-return]  # Celery's own
    target = max(1, scaler.processes - max(0, n))
    shrunk: dict[str, Any] = autodep_autoscale(
        state, max=target, min=min(scaler.min_concurrency, target)
    )
    return shrunk
