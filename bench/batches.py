"""What the served system did with the measured requests, read from its own /metrics: the
batches it formed (mean items per batch) and each batch's round trip by hop (contract.PHASES:
to the worker, in the worker, back to the web), as means over one measured point.

bench.throughput snapshots /metrics before and after a point and keeps diff()'s answer in the
point's row; bench.report prints it. A scrape that fails gives None: these figures explain a
point, they never fail one.
"""

from __future__ import annotations

import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from autodep_celery.contract import PHASES

Snapshot = dict[str, float]


def snapshot(base_url: str, timeout_s: float = 5.0) -> Snapshot | None:
    """Sums and counts of the batch size and phase histograms, over every model."""
    try:
        with urllib.request.urlopen(base_url + "/metrics", timeout=timeout_s) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    out: Snapshot = {}
    for family in text_string_to_metric_families(text):
        if family.name not in ("autodep_batch_size_items", "autodep_batch_phase_seconds"):
            continue
        for s in family.samples:
            if not s.name.endswith(("_sum", "_count")):
                continue
            key = s.name + (f":{s.labels['phase']}" if "phase" in s.labels else "")
            out[key] = out.get(key, 0.0) + s.value
    return out


def diff(before: Snapshot | None, after: Snapshot | None) -> dict[str, Any] | None:
    """Batches formed between the snapshots, their mean size and the mean ms of each hop."""
    if before is None or after is None:
        return None

    def delta(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    batches = delta("autodep_batch_size_items_count")
    if batches <= 0:
        return None
    out: dict[str, Any] = {
        "batches": int(batches),
        "mean_items": delta("autodep_batch_size_items_sum") / batches,
        "phases_ms": {},
    }
    for phase in PHASES:
        timed = delta(f"autodep_batch_phase_seconds_count:{phase}")
        if timed > 0:
            out["phases_ms"][phase] = (
                1000 * delta(f"autodep_batch_phase_seconds_sum:{phase}") / timed
            )
    return out
