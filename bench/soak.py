"""`autodep bench --scenario soak`: a steady load at a fraction of the system's capacity for
minutes, watching for anything that grows (issue #11, "Load").

One `autodep serve --config` (bench.serve_config: the one workload's model, autoscaled as by
default) on a free port. Its capacity is measured first, in the same run, with a saturating
closed loop (bench.autoscale.calibrate) unless --rate-rps gives the rate; then evenly spaced
arrivals at --load-fraction of it go open loop (bench.openloop) for --minutes. From the moment
the server is ready until it stops, a thread samples every --sample-every-s the memory of every
process of its tree and its Redis (bench.soak_probe); bench.soak_report turns requests and
samples into per-minute latency/errors and the growth of each metric with a verdict, also when
the run is interrupted part-way (the figures go into `results` in a finally). bench.cli writes
the JSON, then the PNG (bench.soak_plot). Imports no torch.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autodep_celery import processes
from autodep_celery.bench import (
    autoscale,
    openloop,
    report,
    serve_config,
    soak_probe,
    soak_report,
    soak_summary,
    systems,
    timeline,
    workloads,
)
from autodep_celery.bench.progress import Progress

log = logging.getLogger(__name__)

DEFAULT_WORKLOAD = "tiny"
DEFAULT_MINUTES = 10.0
LOAD_FRACTION = 0.7
SAMPLE_EVERY_S = 5.0
"""Memory and Redis are sampled this often: 120 samples in 10 minutes, for a few ms each."""
QUICK_CAPACITY_S = (1.0, 2.0)
"""Capacity's warm-up and measurement with --quick (else autoscale.CALIBRATE_*)."""
REPORT_EVERY_S = 60.0
TAIL_SAMPLES = 2
"""Sampling goes on this many intervals after the last answer: what the idle server keeps."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "--scenario soak",
        "also takes --workloads (one; default tiny), --config, --min-workers, --max-workers "
        "and --max-in-flight; --quick shortens the capacity measurement to 3 s",
    )
    g.add_argument(
        "--minutes",
        type=autoscale._positive,
        default=DEFAULT_MINUTES,
        help=f"length of the steady load, default {DEFAULT_MINUTES:g} (fractions allowed)",
    )
    g.add_argument(
        "--load-fraction",
        type=autoscale._positive,
        default=LOAD_FRACTION,
        help=f"offered rate as a share of the measured capacity, default {LOAD_FRACTION:g}",
    )
    g.add_argument(
        "--rate-rps",
        type=autoscale._positive,
        help="offered rate in req/s; the capacity is then not measured",
    )
    g.add_argument(
        "--sample-every-s",
        type=autoscale._positive,
        default=SAMPLE_EVERY_S,
        help=f"memory and Redis sampling interval, default {SAMPLE_EVERY_S:g}",
    )


def capacity_s(args: argparse.Namespace) -> tuple[float, float]:
    if args.quick:
        return QUICK_CAPACITY_S
    return autoscale.CALIBRATE_WARMUP_S, autoscale.CALIBRATE_S


def plan(args: argparse.Namespace) -> dict[str, float]:
    """Estimated seconds per step, for the ETA."""
    steps = {"models": 10.0, "start": 30.0}
    if args.rate_rps is None:
        steps["capacity"] = sum(capacity_s(args)) + 1
    steps["soak"] = args.minutes * 60 + TAIL_SAMPLES * args.sample_every_s + 2
    steps["stop"] = 10.0
    return steps


class Sampler:
    """A thread calling `probe` every `interval_s`; samples keep their monotonic time ("at")
    until `series()` makes it relative to the start of the load."""

    def __init__(
        self,
        probe: soak_probe.Probe,
        interval_s: float,
        on_sample: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.probe, self.interval_s, self.on_sample = probe, interval_s, on_sample
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="soak-sampler", daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def series(self, t0: float) -> list[dict[str, Any]]:
        return [
            {"t_s": s["at"] - t0, **{k: v for k, v in s.items() if k != "at"}}
            for s in list(self.samples)
        ]

    def _loop(self) -> None:
        tick = time.monotonic()
        while not self._stop.is_set():
            try:
                s = {
                    "at": time.monotonic(),
                    "loadavg": soak_probe.loadavg(),
                    "processes": self.probe.processes(),
                    "redis": self.probe.redis_stats(),
                }
                self.samples.append(s)
                if self.on_sample is not None:
                    self.on_sample(s)
            except Exception:  # a gap in the samples, never a sampler that stops for good
                log.warning("sampling failed; trying again next interval", exc_info=True)
            tick += self.interval_s
            self._stop.wait(max(0.0, tick - time.monotonic()))


def run(
    args: argparse.Namespace,
    workdir: Path,
    children: list[processes.Child],
    progress: Progress,
    results: dict[str, Any],
) -> dict[str, Any]:
    """Fill `results` as measurements come in and return it with the figures."""
    (name,) = args.workloads
    base = serve_config.read_base(args.config)
    models_dir = args.models or workdir / "models"
    progress.step(f"models: taking or building {name} in {models_dir}", "models")
    path = workloads.build_models(models_dir, [name])[name]
    entry = serve_config.model_entry(base, name, path)
    cores = os.cpu_count() or 1
    high = args.max_workers or entry.get("max_workers") or cores
    low = min(
        high, args.min_workers if args.min_workers is not None else entry.get("min_workers", 1)
    )
    autoscaled = bool(base.get("autoscaler", {}).get("enabled", True))
    progress.done(f"{entry['path']}; pool {low}..{high}" + ("" if autoscaled else " (fixed)"))
    config = serve_config.for_system(base, entry, autoscaled, low, high)
    duration = args.minutes * 60
    results.update(
        {
            "scenario": "soak",
            "machine": report.machine_info(),
            "options": {
                "workload": name,
                "path": "/inference",
                "minutes": args.minutes,
                "load_fraction": None if args.rate_rps else args.load_fraction,
                "rate_rps": args.rate_rps,
                "min_workers": low,
                "max_workers": high,
                "autoscaled": autoscaled,
                "max_in_flight": args.max_in_flight,
                "sample_every_s": args.sample_every_s,
                "base_config": str(args.config) if args.config else None,
                "config": serve_config.dumps(config),
            },
        }
    )
    port = processes.free_port()
    progress.step(f"autodep serve on port {port}", "start")
    child = autoscale.start(config, "soak", port, workdir, children)
    body = workloads.request_body(name, workloads.jpeg(workloads.WORKLOADS[name].size))
    systems.check_inference(f"http://127.0.0.1:{port}/inference", body, workloads.TOP_N)
    progress.done("ready, answers correctly")
    loop = openloop.OpenLoop(
        port, "/inference", body, args.max_in_flight, autoscale.CLIENT_TIMEOUT_S
    )
    probe = soak_probe.Probe(child.pid, base.get("broker", {}).get("url") or None)
    watch = _Watch(loop, progress)
    sampler = Sampler(probe, args.sample_every_s, watch.on_sample).start()
    t0 = time.monotonic()
    requests: list[timeline.Request] | None = None
    try:
        if args.rate_rps is None:
            warm, seconds = capacity_s(args)
            progress.step(f"capacity: closed loop, {warm:g} s warm-up + {seconds:g} s", "capacity")
            results["capacity"] = autoscale.calibrate(loop, high, warm, seconds)
            rate = args.load_fraction * results["capacity"]["req_per_s"]
            progress.done(f"{results['capacity']['req_per_s']:.1f} req/s; soak at {rate:.1f}")
        else:
            rate = args.rate_rps
            results["capacity"] = {"req_per_s": None, "rate_given_rps": rate}
        results["options"]["rate_rps"] = rate
        arrivals = [(k + 0.5) / rate for k in range(max(1, int(duration * rate)))]
        progress.step(f"soak: {rate:.1f} req/s for {args.minutes:g} min", "soak")
        results["redis_key_patterns"] = {"before": probe.key_patterns()}
        t0 = time.monotonic() + 0.2
        watch.begin(t0)
        requests = loop.run(arrivals, t0)
        results["redis_key_patterns"]["after"] = probe.key_patterns()
        time.sleep(TAIL_SAMPLES * args.sample_every_s)
        results["machine"]["loadavg_at_end"] = list(os.getloadavg())
    finally:
        sampler.stop()
        probe.close()
        done = requests is not None
        _record(results, requests or loop.records(), done, sampler, t0, duration)
    progress.done(soak_summary.one_line(results.get("figures")))
    progress.step("stopping", "stop")
    systems.stop([child])
    children.remove(child)
    progress.done("stopped")
    return results


def _record(
    results: dict[str, Any],
    requests: list[timeline.Request],
    complete: bool,
    sampler: Sampler,
    t0: float,
    duration_s: float,
) -> None:
    """Samples and figures into `results`, however far the run got (an interrupted load is
    judged over the part that ran)."""
    results["samples"] = sampler.series(t0)
    if "capacity" in results and requests:
        measured = duration_s if complete else max(r.intended_s for r in requests)
        results["figures"] = soak_report.figures(requests, results["samples"], measured)
        results["figures"]["measured_s"] = measured
        results["figures"]["complete"] = complete


class _Watch:
    """Progress lines while the load runs: one a minute with the last minute's figures."""

    def __init__(self, loop: openloop.OpenLoop, progress: Progress) -> None:
        self.loop, self.progress = loop, progress
        self.t0: float | None = None
        self.next_s = REPORT_EVERY_S

    def begin(self, t0: float) -> None:
        self.t0 = t0

    def on_sample(self, s: dict[str, Any]) -> None:
        if self.t0 is None or s["at"] - self.t0 < self.next_s:
            return
        start = self.next_s - REPORT_EVERY_S
        self.next_s += REPORT_EVERY_S
        last = [r for r in self.loop.records() if start <= r.intended_s < start + REPORT_EVERY_S]
        rss = sum(p["rss_mb"] for p in s["processes"])
        r = s["redis"] or {}
        self.progress.note(
            f"t={s['at'] - self.t0:5.0f} s: last minute {soak_summary.minute_line(last)}; "
            f"RSS {rss:,.0f} MB in {len(s['processes'])} processes; Redis "
            f"{r.get('used_memory_mb', 0):.1f} MB, {r.get('clients', '-')} clients, "
            f"{r.get('keys', '-')} keys; load {s['loadavg']:.2f}"
        )
