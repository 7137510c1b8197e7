"""Figures and printed summary of an autoscale run (bench.autoscale's raw records in, JSON-able
results out).

system_figures() turns one system's raw requests and pool samples into time windows and
figures (bench.timeline); summarize() adds the comparison: worker-seconds of the autoscaled
pool, of the fixed pool at max and of an oracle that knew the trace (ceil(offered rate /
per-process capacity), capacity = the fixed pool's saturated throughput / max), and throughput
under sustained
saturation, autoscaled / fixed (target >= 0.95). Pure (unit-tested); imports no torch or
matplotlib.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from autodep_celery.bench import timeline
from autodep_celery.bench.timeline import PoolSample, Request
from autodep_celery.bench.traces import Trace

LATENCY_WINDOW_S = 2.0
"""Latency percentiles at each instant are over the answers of the last 2 s."""
SETTLE_FRACTION = 1 / 3
"""Throughput under saturation leaves out the first third of each peak phase: the autoscaler's
reaction is reported on its own (reaction_s), not averaged into the throughput."""
TARGET_RATIO = 0.95
SATURATED_MARGIN = 1.02
"""The fixed pool counts as saturated when the peak offered rate exceeds its throughput by 2%."""


def steady_phases(trace: Trace) -> list[tuple[float, float]]:
    return [(a + SETTLE_FRACTION * (b - a), b) for a, b in trace.peak_phases()]


def throughput_over(requests: Sequence[Request], phases: list[tuple[float, float]]) -> float | None:
    seconds = sum(b - a for a, b in phases)
    if seconds <= 0:
        return None
    return sum((timeline.throughput(requests, a, b) or 0.0) * (b - a) for a, b in phases) / seconds


def system_figures(
    requests: Sequence[Request],
    samples: Sequence[PoolSample],
    trace: Trace,
    low: int,
    step_s: float,
) -> dict[str, Any]:
    """Everything reported about one system's run."""
    end = max([trace.duration_s, *(r.done_s for r in requests if r.done_s is not None)])
    ok = sorted(r.latency_s for r in requests if r.ok and r.latency_s is not None)
    steady = steady_phases(trace)
    rise, load_end = trace.rise_at_s(), trace.load_ends_at_s()
    before = [s.processes for s in samples if s.t_s <= rise and s.processes is not None]
    start_count = before[-1] if before else low
    ready_before = [s.ready for s in samples if s.t_s <= rise and s.ready is not None]

    def ready_above(s: PoolSample) -> bool:
        return s.ready is not None and bool(ready_before) and s.ready > ready_before[-1]

    return {
        "outcomes": timeline.outcome_counts(requests),
        "latency_ms": {
            "p50": _ms(timeline.percentile(ok, 50)),
            "p99": _ms(timeline.percentile(ok, 99)),
        },
        "worker_s": timeline.worker_seconds(samples, 0.0, trace.duration_s),
        "saturated_rps": throughput_over(requests, steady),
        "saturated_phases_s": steady,
        "peak_phase_rps": throughput_over(requests, trace.peak_phases()),
        "processes_at_rise": start_count,
        "reaction_s": timeline.first_time(
            samples, rise, lambda s: (s.processes or 0) > start_count
        ),
        "reaction_ready_s": timeline.first_time(samples, rise, ready_above),
        "back_to_min_s": timeline.first_time(
            samples, load_end, lambda s: s.processes is not None and s.processes <= low
        ),
        "actions": timeline.actions(samples, 0.0, end),
        "actions_at_steady_peak": sum(timeline.actions(samples, a, b) for a, b in steady),
        "windows": timeline.windows(requests, samples, end, step_s, LATENCY_WINDOW_S),
    }


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """`results` (each system already through system_figures) plus results["summary"]."""
    t = results["trace"]
    trace = Trace(t["shape"], t["duration_s"], t["peak_rps"], t["base_rps"])
    low, high = results["options"]["min_workers"], results["options"]["max_workers"]
    fixed = results["systems"].get("fixed", {})
    auto = results["systems"].get("autoscaled", {})
    measured = fixed.get("saturated_rps")
    saturated = bool(measured) and trace.peak_rps > SATURATED_MARGIN * measured
    capacity = measured if saturated else results.get("capacity", {}).get("req_per_s")
    summary: dict[str, Any] = {
        "capacity_rps": capacity,
        "capacity_from": "fixed pool at peak" if saturated else "closed-loop calibration",
        "peak_over_capacity": trace.peak_rps / capacity if capacity else None,
        "worker_s": {"fixed": fixed.get("worker_s"), "autoscaled": auto.get("worker_s")},
        "throughput_ratio": timeline_ratio(auto.get("saturated_rps"), measured),
        "target_ratio": TARGET_RATIO,
        "fixed_saturated": saturated,
    }
    if capacity:
        per_process = capacity / high
        summary["per_process_rps"] = per_process
        summary["worker_s"]["oracle"] = timeline.oracle_worker_seconds(
            trace.rate, trace.duration_s, per_process, 0, high
        )
        summary["worker_s"]["oracle_at_least_min"] = timeline.oracle_worker_seconds(
            trace.rate, trace.duration_s, per_process, low, high
        )
    ratio = summary["throughput_ratio"]
    summary["target_met"] = None if ratio is None or not saturated else ratio >= TARGET_RATIO
    results["summary"] = summary
    return results


def timeline_ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def one_line(requests: Sequence[Request]) -> str:
    """A progress line for one replayed trace."""
    c = timeline.outcome_counts(requests)
    ok = sorted(r.latency_s for r in requests if r.ok and r.latency_s is not None)
    errors = ", ".join(f"{k} {v}" for k, v in c.items() if k not in ("sent", "ok")) or "no errors"
    p50, p99 = _ms(timeline.percentile(ok, 50)), _ms(timeline.percentile(ok, 99))
    return f"{c['ok']}/{c['sent']} answered 2xx ({errors}); p50 {_f(p50)} ms, p99 {_f(p99)} ms"


def format_summary(results: dict[str, Any]) -> str:
    m, o, t, s = results["machine"], results["options"], results["trace"], results["summary"]
    fixed, auto = results["systems"]["fixed"], results["systems"]["autoscaled"]
    ws = s["worker_s"]
    cap = s.get("capacity_rps")
    lines = [
        f"autodep bench --scenario autoscale: {o['model']}, {t['shape']} trace of "
        f"{t['duration_s']:g} s, {t['base_rps']:.1f} -> {t['peak_rps']:.1f} req/s "
        f"({_f(s.get('peak_over_capacity'), 2)} x capacity {_f(cap)} req/s, "
        f"from the {s['capacity_from']})",
        f"{m['cores']} cores ({m['cpu_model']}), {m['date']}; load average at start "
        f"{m['loadavg_at_start'][0]:.2f}; pool: autoscaled {o['min_workers']}..{o['max_workers']}"
        f", fixed {o['max_workers']}; process counts from GET {_source(auto)} (autoscaled), "
        f"{_source(fixed)} (fixed)",
        "",
        f"{'':34}{'fixed':>12}{'autoscaled':>12}{'oracle':>12}",
        f"{'worker-seconds over the trace':34}{_f(ws.get('fixed')):>12}"
        f"{_f(ws.get('autoscaled')):>12}{_f(ws.get('oracle')):>12}"
        f"   (oracle kept >= min: {_f(ws.get('oracle_at_least_min'))})",
        f"{'req/s under sustained saturation':34}{_f(fixed['saturated_rps']):>12}"
        f"{_f(auto['saturated_rps']):>12}   (last 2/3 of each peak phase)",
        f"{'req/s over whole peak phases':34}{_f(fixed['peak_phase_rps']):>12}"
        f"{_f(auto['peak_phase_rps']):>12}",
    ]
    for label, key in (("p50 latency, ms (2xx)", "p50"), ("p99 latency, ms (2xx)", "p99")):
        lines.append(
            f"{label:34}{_f(fixed['latency_ms'][key]):>12}{_f(auto['latency_ms'][key]):>12}"
        )
    for label, key in (("requests sent", "sent"), ("answered 2xx", "ok")):
        lines.append(
            f"{label:34}{fixed['outcomes'].get(key, 0):>12}{auto['outcomes'].get(key, 0):>12}"
        )
    lines += [
        f"{'errors and shed':34}{_errors(fixed['outcomes']):>12}{_errors(auto['outcomes']):>12}",
        f"{'scale actions (at steady peak)':34}{_actions(fixed):>12}{_actions(auto):>12}",
        "",
        f"throughput under saturation, autoscaled / fixed: {_f(s['throughput_ratio'], 3)} "
        f"(target >= {s['target_ratio']:g}: {_verdict(s)})",
        f"worker-seconds saved against the fixed pool: "
        f"{_pct(ws.get('autoscaled'), ws.get('fixed'))}; against the oracle: autoscaled uses "
        f"{_f(timeline_ratio(ws.get('autoscaled'), ws.get('oracle')), 2)} x",
        f"{_reaction(auto, o['min_workers'], o['max_workers'])}; back to the minimum "
        f"{_f(auto['back_to_min_s'])} s after the load ended",
    ]
    return "\n".join(lines)


def _reaction(auto: dict[str, Any], low: int, high: int) -> str:
    at_rise = auto.get("processes_at_rise")
    if auto["reaction_s"] is None and at_rise is not None and at_rise > low:
        return f"reaction to the rise: not measured, the base load already held {at_rise} processes"
    if auto["reaction_s"] is None and low >= high:
        return "reaction to the rise: none possible (min = max)"
    return (
        f"reaction to the rise (a process more): {_f(auto['reaction_s'])} s"
        f" (one more ready: {_f(auto['reaction_ready_s'])} s)"
    )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _pct(part: float | None, whole: float | None) -> str:
    return "-" if part is None or not whole else f"{100 * (1 - part / whole):.0f}%"


def _source(res: dict[str, Any]) -> str:
    return "/autoscaler" if res.get("pool_source") == "autoscaler" else "/workers/_status"


def _verdict(s: dict[str, Any]) -> str:
    if not s.get("fixed_saturated"):
        return "not measured: the peak did not saturate the fixed pool; raise --peak-rps"
    return {True: "met", False: "NOT met", None: "not measured"}[s["target_met"]]


def _errors(outcomes: dict[str, int]) -> str:
    return str(sum(v for k, v in outcomes.items() if k not in ("sent", "ok")))


def _actions(res: dict[str, Any]) -> str:
    return f"{res['actions']} ({res['actions_at_steady_peak']})"
