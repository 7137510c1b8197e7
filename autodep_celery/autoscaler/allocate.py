"""Spreading a model's pool over the workers that consume its queue. Pure.

A model's pool is counted across every worker consuming ``autodep.<model>``, including workers
started by hand on other machines. Each worker is filled evenly up to the pool bounds it was
started with (``--autoscale=MAX,MIN``: the operator's statement of what that machine holds); a
worker that serves several models gets the sum of its models' shares. Workers started with a
fixed ``-c N`` count as N and are never resized.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerSlot:
    hostname: str
    models: tuple[str, ...]
    processes: int
    """Its pool's size now (target)."""
    low: int
    """Smallest pool it may have (its declared min, at least 1: a running worker keeps one)."""
    high: int
    """Largest pool it may have (its declared max)."""
    resizable: bool = True


def split(total: int, caps: dict[str, int]) -> dict[str, int]:
    """`total` processes over workers as evenly as their caps allow (water filling); what does
    not fit is left out (the caller sees the shortfall)."""
    share = dict.fromkeys(caps, 0)
    left = total
    open_ = sorted((h for h in caps if caps[h] > 0), key=lambda h: (caps[h], h))
    while left > 0 and open_:
        each = max(1, left // len(open_))
        for h in list(open_):
            if left <= 0:
                break
            add = min(each, caps[h] - share[h], left)
            share[h] += add
            left -= add
            if share[h] >= caps[h]:
                open_.remove(h)
    return share


def capacity(workers: Iterable[WorkerSlot]) -> int:
    return sum(w.high if w.resizable else w.processes for w in workers)


def pool_sizes(desired: dict[str, int], workers: list[WorkerSlot]) -> dict[str, int]:
    """Pool size per worker hostname for the desired processes per model."""
    sizes = dict.fromkeys((w.hostname for w in workers), 0)
    for model, total in desired.items():
        serving = [w for w in workers if model in w.models]
        fixed = sum(w.processes for w in serving if not w.resizable)
        caps = {w.hostname: w.high for w in serving if w.resizable}
        for host, n in split(max(0, total - fixed), caps).items():
            sizes[host] += n
    out: dict[str, int] = {}
    for w in workers:
        out[w.hostname] = min(max(sizes[w.hostname], w.low), w.high) if w.resizable else w.processes
    return out
