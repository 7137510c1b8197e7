"""Figures of a soak run: per-minute latency and errors, and for every process role, Redis
memory, connections and keys, the value after warm-up, at the end, and the growth per 10 minutes
with a verdict (bounded or growing) against a stated threshold.

bench.soak hands over the raw records (one bench.timeline.Request per arrival, one sample per
tick from bench.soak_probe) and gets JSON-able figures back (bench.soak_summary prints them).
Growth is the slope of a least-squares line through the samples of the second half of the load
(the first half holds the warm-up: allocator arenas, caches and connection pools filling up),
times 600 s. A metric is "bounded" when that growth is at most its threshold, max(absolute,
relative x value after warm-up); the thresholds are the constants below, also written into the
JSON. Pure (unit-tested); imports nothing of the project but bench.timeline and the role
names of bench.soak_probe.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from autodep_celery.bench import soak_probe, timeline
from autodep_celery.bench.timeline import Request

PER_S = 600.0
"""Growth is reported per 10 minutes."""
MINUTE_S = 60.0
WARMUP_S = 60.0
"""The "start" value is the first sample this long into the load (at most a quarter of it)."""
THRESHOLDS: dict[str, tuple[float, float]] = {
    "rss_mb": (2.0, 0.01),
    "redis_memory_mb": (1.0, 0.05),
    "redis_clients": (2.0, 0.0),
    "redis_keys": (10.0, 0.05),
}
"""(absolute, relative to the start) growth per 10 minutes above which a metric is "growing".
RSS: 2 MB per process (a role's threshold scales with its processes) or 1%: a process that
doubles in a day grows ~0.7% per 10 min. Redis memory: 1 MB or 5% (its messages in flight
move it by tens of KB). Clients: 2 connections (steady traffic holds a fixed set; a leak adds
one per request or per reconnect). Keys: 10 or 5% (per-process status keys come and go with
the pool; a key made per request and never deleted adds thousands)."""
MIN_FIT_S = 120.0
"""A fit window shorter than this (a load under 4 minutes) is noted as too short to judge by:
allocator and cache settling then weighs as much as a leak would."""
COVER = 0.9
"""A process counts for the per-process fit when it is in this share of the second half's
samples (a pool child started or stopped part-way is left out)."""


def fit_slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope (units per second) through (t, y); None under 3 points or when every
    t is the same."""
    if len(points) < 3:
        return None
    n = len(points)
    mt = sum(t for t, _ in points) / n
    my = sum(y for _, y in points) / n
    stt = sum((t - mt) ** 2 for t, _ in points)
    if stt <= 0:
        return None
    return sum((t - mt) * (y - my) for t, y in points) / stt


def warmup_s(duration_s: float) -> float:
    return min(WARMUP_S, duration_s / 4)


def growth(
    points: Sequence[tuple[float, float]], duration_s: float, absolute: float, relative: float
) -> dict[str, Any]:
    """Start (after warm-up), end, min/max over the load, growth per 10 min over its second half
    and the verdict, for one series of (t_s since the load started, value)."""
    during = sorted(p for p in points if 0 <= p[0] <= duration_s + 1e-9)
    if not during:
        return {"verdict": "not measured", "samples": 0}
    warm = warmup_s(duration_s)
    after = [p for p in during if p[0] >= warm] or during
    second = [p for p in during if p[0] >= duration_s / 2]
    slope = fit_slope(second)
    start = after[0][1]
    threshold = max(absolute, relative * abs(start))
    per = None if slope is None else slope * PER_S
    values = [y for _, y in during]
    return {
        "start": start,
        "start_t_s": after[0][0],
        "end": during[-1][1],
        "min": min(values),
        "max": max(values),
        "growth_per_10min": per,
        "threshold_per_10min": threshold,
        "verdict": "not measured" if per is None else "bounded" if per <= threshold else "growing",
        "samples": len(during),
        "fit_samples": len(second),
    }


def minutes(requests: Sequence[Request], duration_s: float) -> list[dict[str, Any]]:
    """One row per minute of arrivals (the last may be shorter): sent, 2xx, errors by kind,
    p50/p99/max latency of the 2xx (ms) and 2xx per second."""
    n = max(1, math.ceil(duration_s / MINUTE_S - 1e-9))
    groups: list[list[Request]] = [[] for _ in range(n)]
    for r in requests:
        if 0 <= r.intended_s < duration_s:
            groups[min(n - 1, int(r.intended_s // MINUTE_S))].append(r)
    rows = []
    for k, group in enumerate(groups):
        start, end = k * MINUTE_S, min(duration_s, (k + 1) * MINUTE_S)
        outcomes = timeline.outcome_counts(group)
        ok = sorted(r.latency_s for r in group if r.ok and r.latency_s is not None)
        rows.append(
            {
                "minute": k + 1,
                "start_s": start,
                "end_s": end,
                "sent": outcomes["sent"],
                "ok": outcomes["ok"],
                "errors": {key: v for key, v in outcomes.items() if key not in ("sent", "ok")},
                "error_count": error_count(outcomes),
                "ok_per_s": outcomes["ok"] / (end - start) if end > start else None,
                "p50_ms": _ms(timeline.percentile(ok, 50)),
                "p99_ms": _ms(timeline.percentile(ok, 99)),
                "max_ms": _ms(ok[-1] if ok else None),
            }
        )
    return rows


def error_count(outcomes: dict[str, int]) -> int:
    return sum(v for k, v in outcomes.items() if k not in ("sent", "ok"))


def role_series(samples: Sequence[dict[str, Any]], key: str = "rss_mb") -> dict[str, Any]:
    """Per role: [(t_s, total of `key`, processes)] over the samples, roles in ROLES order."""
    out: dict[str, list[tuple[float, float, int]]] = {}
    for s in samples:
        totals: dict[str, list[float]] = {}
        for p in s.get("processes", []):
            if p.get(key) is not None:
                totals.setdefault(p["role"], []).append(p[key])
        for role, values in totals.items():
            out.setdefault(role, []).append((s["t_s"], sum(values), len(values)))
    order = {r: i for i, r in enumerate(soak_probe.ROLES)}
    return dict(sorted(out.items(), key=lambda kv: order.get(kv[0], len(order))))


def process_series(samples: Sequence[dict[str, Any]]) -> dict[int, tuple[str, list[Any]]]:
    """Per pid: its role and [(t_s, rss_mb)]."""
    out: dict[int, tuple[str, list[Any]]] = {}
    for s in samples:
        for p in s.get("processes", []):
            out.setdefault(p["pid"], (p["role"], []))[1].append((s["t_s"], p["rss_mb"]))
    return out


def cpu_cores(samples: Sequence[dict[str, Any]], duration_s: float) -> dict[str, float]:
    """Per role: CPU used over the load, in cores (user + system seconds of each process
    between its first and last sample within the load, over the load's sampled span)."""
    during = [s for s in samples if 0 <= s["t_s"] <= duration_s + 1e-9]
    if len(during) < 2:
        return {}
    span = during[-1]["t_s"] - during[0]["t_s"]
    if span <= 0:
        return {}
    first: dict[int, tuple[str, float]] = {}
    last: dict[int, float] = {}
    for s in during:
        for p in s.get("processes", []):
            if p.get("cpu_s") is not None:
                first.setdefault(p["pid"], (p["role"], p["cpu_s"]))
                last[p["pid"]] = p["cpu_s"]
    out: dict[str, float] = {}
    for pid, (role, cpu) in first.items():
        out[role] = out.get(role, 0.0) + (last[pid] - cpu) / span
    order = {r: i for i, r in enumerate(soak_probe.ROLES)}
    return dict(sorted(out.items(), key=lambda kv: order.get(kv[0], len(order))))


def rss_growth(samples: Sequence[dict[str, Any]], duration_s: float) -> dict[str, Any]:
    """Per role: the total RSS's growth and, per process present through the second half,
    each one's; the verdict is on the total unless the role's process count changed in the
    second half (a pool resized), then on the worst process."""
    absolute, relative = THRESHOLDS["rss_mb"]
    half = [s["t_s"] for s in samples if duration_s / 2 <= s["t_s"] <= duration_s + 1e-9]
    pss = role_series(samples, "pss_mb")
    per_pid = process_series(samples)
    out: dict[str, Any] = {}
    for role, series in role_series(samples).items():
        during = [c for t, _, c in series if 0 <= t <= duration_s + 1e-9]
        counts_half = {c for t, _, c in series if duration_s / 2 <= t <= duration_s + 1e-9}
        n = max(during) if during else 1
        total = growth([(t, v) for t, v, _ in series], duration_s, absolute * n, relative)
        procs = {}
        for pid, (r, points) in per_pid.items():
            seen = sum(1 for t, _ in points if duration_s / 2 <= t <= duration_s + 1e-9)
            if r == role and half and seen >= COVER * len(half):
                procs[str(pid)] = growth(points, duration_s, absolute, relative)
        worst = max(
            (g for g in procs.values() if g.get("growth_per_10min") is not None),
            key=lambda g: g["growth_per_10min"],
            default=None,
        )
        resized = len(counts_half) > 1
        if resized and procs:
            growing = any(g["verdict"] == "growing" for g in procs.values())
            verdict, judged = ("growing" if growing else "bounded"), "per process (resized)"
        else:
            verdict, judged = total["verdict"], "role total"
        pss_points = [(t, v) for t, v, _ in pss.get(role, [])]
        out[role] = {
            "processes": {
                "start": during[0] if during else None,
                "end": during[-1] if during else None,
                "max": n,
            },
            "total": total,
            "pss_total": _ends(pss_points, duration_s),
            "worst_process": worst,
            "per_process": procs,
            "verdict": verdict,
            "judged_on": judged,
        }
    return out


def redis_growth(samples: Sequence[dict[str, Any]], duration_s: float) -> dict[str, Any]:
    """used_memory, connected clients and keys: growth and verdict of each."""
    out = {}
    for name, field in (
        ("redis_memory_mb", "used_memory_mb"),
        ("redis_clients", "clients"),
        ("redis_keys", "keys"),
    ):
        points = [
            (s["t_s"], float(s["redis"][field]))
            for s in samples
            if s.get("redis") and s["redis"].get(field) is not None
        ]
        out[name] = growth(points, duration_s, *THRESHOLDS[name])
    return out


def verdicts(figures: dict[str, Any]) -> dict[str, str]:
    """One verdict per metric: "rss:<role>", then the Redis ones."""
    out = {f"rss:{role}": v["verdict"] for role, v in figures["rss"].items()}
    out.update({name: v["verdict"] for name, v in figures["redis"].items()})
    return out


def figures(
    requests: Sequence[Request], samples: Sequence[dict[str, Any]], duration_s: float
) -> dict[str, Any]:
    """Everything reported about a soak run's load phase."""
    rows = minutes(requests, duration_s)
    outcomes = timeline.outcome_counts(requests)
    ok = sorted(r.latency_s for r in requests if r.ok and r.latency_s is not None)
    full = [r for r in rows if r["end_s"] - r["start_s"] >= MINUTE_S - 1e-9] or rows
    p99s = [r["p99_ms"] for r in full if r["p99_ms"] is not None]
    out: dict[str, Any] = {
        "outcomes": outcomes,
        "errors": error_count(outcomes),
        "error_rate": error_count(outcomes) / len(requests) if requests else None,
        "latency_ms": {
            "p50": _ms(timeline.percentile(ok, 50)),
            "p99": _ms(timeline.percentile(ok, 99)),
            "max": _ms(ok[-1] if ok else None),
        },
        "p99_per_minute_ms": {"min": min(p99s, default=None), "max": max(p99s, default=None)},
        "minutes": rows,
        "rss": rss_growth(samples, duration_s),
        "redis": redis_growth(samples, duration_s),
        "cpu_cores": cpu_cores(samples, duration_s),
        "thresholds": {
            k: {"absolute_per_10min": a, "relative_per_10min": r}
            for k, (a, r) in THRESHOLDS.items()
        },
        "warmup_s": warmup_s(duration_s),
        "fit_from_s": duration_s / 2,
        "fit_window_s": duration_s / 2,
        "fit_window_enough": duration_s / 2 >= MIN_FIT_S,
    }
    out["verdicts"] = verdicts(out)
    out["all_bounded"] = all(v == "bounded" for v in out["verdicts"].values())
    return out


def _ends(points: list[tuple[float, float]], duration_s: float) -> dict[str, Any] | None:
    g = growth(points, duration_s, 0.0, 0.0)
    return None if not g.get("samples") else {"start": g["start"], "end": g["end"]}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000
