"""`autodep bench --scenario autoscale`: one load trace against a fixed pool at max and against
the autoscaled pool, in one run (issue #7, "Proof").

Order: the fixed pool first (`[autoscaler] enabled = false`, min_workers = max_workers); its
capacity is measured with a short saturating closed loop, which also sets the trace's peak
(PEAK_X x capacity unless --peak-rps is given). Then the same trace, open loop (bench.openloop),
against that pool and, after it is stopped, against `autodep serve` with the autoscaler. Each
system is `autodep serve --config` with a file from bench.serve_config, on a free port on
127.0.0.1, stopped before the next starts. bench.autoscale_report turns the raw records into the
figures; bench.cli writes them (JSON before the PNG). Imports no torch (the example models are
built by bench.workloads when missing).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autodep_celery import processes
from autodep_celery.bench import (
    autoscale_report,
    openloop,
    report,
    serve_config,
    systems,
    timeline,
    traces,
    workloads,
)
from autodep_celery.bench.progress import Progress
from autodep_celery.bench.timeline import PoolSample, Request

DEFAULT_MODEL = "resnet18"
DEFAULT_TRACE_S = 90.0
"""Long enough for a step up, a plateau and the way back down; a run takes ~4 minutes."""
PEAK_X = 1.25
"""Default peak rate as a multiple of the fixed pool's capacity: saturated even when the shared
machine's speed drifts by 10-20% between calibration and trace; the client's in-flight cap
(shedding the excess) keeps the backlog within the server's deadline."""
BASE_FRACTION = 0.2
"""Default base rate as a fraction of the peak."""
CALIBRATE_WARMUP_S = 15.0
"""A fresh pool runs at ~40% of its steady throughput for its first ~10 s of deep load
(measured: 15 then 35-38 req/s in consecutive 8 s windows at 32 in flight, resnet18, 2 cores)."""
CALIBRATE_S = 8.0
MAX_IN_FLIGHT = 128
CLIENT_TIMEOUT_S = 45.0
"""Above the server's request_timeout_s (30 s), which answers 504 first."""
SETTLE_WAIT_S = 60.0
"""How long a system may take to reach its starting pool size before the trace starts."""
PROGRESS_EVERY_S = 10.0
TAIL_S = 30.0
"""After the autoscaled trace: how long to keep sampling, unloaded, for the pool to return to
its minimum (when it has not within the trace), so the time back is measured, not cut off."""


def _number(cast: type, low: float, strict: bool) -> Callable[[str], Any]:
    """An argparse type: `cast(text)` that is > low (strict) or >= low."""

    def parse(text: str) -> Any:
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a {cast.__name__}: {text!r}") from None
        if value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {low:g}")
        return value

    return parse


_positive = _number(float, 0, strict=True)
_non_negative = _number(float, 0, strict=False)
_count = _number(int, 0, strict=False)
_at_least_one = _number(int, 1, strict=False)


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("--scenario autoscale")
    g.add_argument(
        "--model",
        choices=tuple(workloads.WORKLOADS),
        default=DEFAULT_MODEL,
        help=f"model to load (an example model; default {DEFAULT_MODEL})",
    )
    g.add_argument("--trace", choices=traces.SHAPES, default="step", help="default: step")
    g.add_argument(
        "--trace-s",
        type=_positive,
        default=DEFAULT_TRACE_S,
        help=f"length of the trace in seconds, default {DEFAULT_TRACE_S:g}",
    )
    g.add_argument(
        "--peak-rps",
        type=_positive,
        help=f"peak offered rate (default: {PEAK_X:g} x the fixed pool's measured capacity)",
    )
    g.add_argument(
        "--base-rps",
        type=_non_negative,
        help=f"base offered rate (default: {BASE_FRACTION:g} x peak)",
    )
    g.add_argument("--min-workers", type=_count, help="autoscaled pool minimum (default 1)")
    g.add_argument(
        "--max-workers", type=_count, help="autoscaled maximum and fixed pool size (default: cores)"
    )
    g.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="base config.toml for both systems (e.g. its [autoscaler] settings); the "
        "scenario sets [autoscaler] enabled and the model's min/max_workers",
    )
    g.add_argument(
        "--max-in-flight",
        type=_at_least_one,
        default=MAX_IN_FLIGHT,
        help=f"open-loop cap on requests in flight (more are shed), default {MAX_IN_FLIGHT}",
    )
    g.add_argument(
        "--tail-s",
        type=_non_negative,
        default=TAIL_S,
        help="after the autoscaled trace, wait up to this long (no load) for the pool to "
        f"return to its minimum, default {TAIL_S:g}",
    )
    g.add_argument(
        "--sample-s",
        type=_positive,
        default=openloop.SAMPLE_INTERVAL_S,
        help=f"sampling interval, default {openloop.SAMPLE_INTERVAL_S:g}",
    )


def plan(args: argparse.Namespace) -> dict[str, float]:
    """Estimated seconds per step, for the ETA."""
    trace = args.trace_s + 10  # the tail: answers still coming back after the last arrival
    return {
        "models": 10.0,
        "start:fixed": 30.0,
        "calibrate": CALIBRATE_WARMUP_S + CALIBRATE_S + 1,
        "trace:fixed": trace,
        "stop:fixed": 5.0,
        "start:autoscaled": 30.0,
        "trace:autoscaled": trace + args.tail_s / 2,
        "stop:autoscaled": 5.0,
    }


def run(
    args: argparse.Namespace,
    workdir: Path,
    children: list[processes.Child],
    progress: Progress,
    results: dict[str, Any],
) -> dict[str, Any]:
    """Fill `results` as measurements come in (so a failure part-way keeps them) and return
    it with the summary."""
    cores = os.cpu_count() or 1
    base = serve_config.read_base(args.config)
    models_dir = args.models or workdir / "models"
    progress.step(f"models: taking or building {args.model} in {models_dir}", "models")
    path = workloads.build_models(models_dir, [args.model])[args.model]
    entry = serve_config.model_entry(base, args.model, path)
    high = args.max_workers or entry.get("max_workers") or cores
    low = args.min_workers if args.min_workers is not None else entry.get("min_workers", 1)
    low = min(low, high)
    progress.done(f"{entry['path']}; pool {low}..{high}")
    body = workloads.request_body(args.model, workloads.jpeg(workloads.WORKLOADS[args.model].size))
    results.update(
        {
            "scenario": "autoscale",
            "machine": report.machine_info(),
            "options": {
                "model": args.model,
                "min_workers": low,
                "max_workers": high,
                "max_in_flight": args.max_in_flight,
                "sample_s": args.sample_s,
                "base_config": str(args.config) if args.config else None,
            },
            "systems": {},
        }
    )
    trace: traces.Trace | None = None
    for system in ("fixed", "autoscaled"):
        config = serve_config.for_system(base, entry, system == "autoscaled", low, high)
        port = processes.free_port()
        progress.step(f"{system}: autodep serve on port {port}", f"start:{system}")
        child = start(config, system, port, workdir, children)
        systems.check_inference(f"http://127.0.0.1:{port}/inference", body, workloads.TOP_N)
        progress.done("ready, answers correctly")
        loop = openloop.OpenLoop(port, "/inference", body, args.max_in_flight, CLIENT_TIMEOUT_S)
        settle(port, args.model, high if system == "fixed" else low, progress)
        if trace is None:
            progress.step(f"fixed: capacity, closed loop for {CALIBRATE_S:g} s", "calibrate")
            results["capacity"] = calibrate(loop, high)
            trace = make_trace(args, results["capacity"]["req_per_s"])
            results["trace"] = trace.to_dict()
            progress.done(
                f"{results['capacity']['req_per_s']:.1f} req/s; trace {trace.shape}, "
                f"{trace.base_rps:.1f} -> {trace.peak_rps:.1f} req/s over {trace.duration_s:g} s"
            )
        progress.step(f"{system}: {trace.shape} trace, {trace.duration_s:g} s", f"trace:{system}")
        tail = (low, args.tail_s) if system == "autoscaled" else None
        requests, samples, source = replay(loop, trace, port, args, progress, tail)
        results["systems"][system] = {
            "config": serve_config.dumps(config),
            "pool_source": source,
            **autoscale_report.system_figures(requests, samples, trace, low, args.sample_s),
        }
        progress.done(autoscale_report.one_line(requests))
        progress.step(f"{system}: stopping", f"stop:{system}")
        systems.stop([child])
        children.remove(child)
        progress.done("stopped")
    results["machine"]["loadavg_at_end"] = list(os.getloadavg())
    return autoscale_report.summarize(results)


def start(
    config: dict[str, Any], system: str, port: int, workdir: Path, children: list[processes.Child]
) -> processes.Child:
    """`autodep serve --config` (appended to `children` first), once GET /ready answers 200."""
    path = workdir / f"{system}.toml"
    path.write_text(serve_config.dumps(config))
    argv = processes.python_argv(
        "-m", "autodep_celery.cli", "serve", "--config", str(path), "--port", str(port)
    )
    argv += ["--log-dir", str(workdir / f"{system}-logs")]
    child = processes.start(
        f"autodep serve ({system})",
        argv,
        env=systems.clean_env(),
        log_path=workdir / f"{system}.log",
        cwd=str(workdir),
    )
    children.append(child)
    processes.wait_until(
        lambda: systems.http_status(f"http://127.0.0.1:{port}/ready") == 200,
        systems.READY_TIMEOUT_S,
        f"autodep serve ({system})",
        interval_s=0.5,
        alive=child.alive,
    )
    return child


def calibrate(
    loop: openloop.OpenLoop,
    high: int,
    warmup_s: float = CALIBRATE_WARMUP_S,
    seconds: float = CALIBRATE_S,
) -> dict[str, Any]:
    """Saturated throughput of the fixed pool: a closed loop deep enough (16 requests per
    process) for the web tier to form full batches, as a backlog under overload does.
    Also bench.soak's capacity."""
    concurrency = max(32, 16 * high)
    loop.saturate(warmup_s, concurrency)
    got = loop.saturate(seconds, concurrency)
    rate = timeline.throughput(got, 0.0, seconds) or 0.0
    if rate <= 0:
        raise RuntimeError(f"no request answered 2xx in {seconds:g} s of closed loop")
    return {"req_per_s": rate, "concurrency": concurrency, "seconds": seconds}


def make_trace(args: argparse.Namespace, capacity_rps: float) -> traces.Trace:
    peak = args.peak_rps or PEAK_X * capacity_rps
    base = args.base_rps if args.base_rps is not None else BASE_FRACTION * peak
    return traces.Trace(args.trace, args.trace_s, peak, min(base, peak))


def settle(port: int, model: str, want: int, progress: Progress) -> None:
    """Wait (bounded) until the pool has `want` processes, so each trace starts from the
    system's resting size; a pool that never gets there is noted, not fatal."""
    sampler = openloop.PoolSampler(port, model, 0.0, lambda: 0)
    for _ in range(int(SETTLE_WAIT_S / 0.5)):
        if sampler.sample().processes == want:
            return
        time.sleep(0.5)
    progress.note(f"pool did not reach {want} processes in {SETTLE_WAIT_S:g} s; starting anyway")


def _at_most(samples: list[PoolSample], low: int) -> bool:
    last = samples[-1].processes if samples else None
    return last is not None and last <= low


def replay(
    loop: openloop.OpenLoop,
    trace: traces.Trace,
    port: int,
    args: argparse.Namespace,
    progress: Progress,
    tail: tuple[int, float] | None = None,
) -> tuple[list[Request], list[PoolSample], str | None]:
    """Run the trace with the pool sampled throughout: requests, pool samples and where the
    process counts came from ("autoscaler" or "workers"). With `tail` = (min, seconds), keep
    sampling after the last answer until the pool is back at min or the seconds have passed."""
    arrivals = traces.arrival_times(trace)
    t0 = time.monotonic() + 0.2
    every = max(1, round(PROGRESS_EVERY_S / args.sample_s))

    seen = [0]

    def on_sample(s: PoolSample) -> None:
        seen[0] += 1
        if seen[0] % every == 0:
            progress.note(
                f"t={s.t_s:5.1f} s: offered {trace.rate(s.t_s):5.1f} req/s, processes "
                f"{s.processes}, backlog {s.backlog}, in flight {s.outstanding}"
            )

    sampler = openloop.PoolSampler(
        port, args.model, t0, lambda: loop.in_flight, args.sample_s, on_sample
    )
    sampler.start()
    try:
        requests = loop.run(arrivals, t0)
        if tail is not None:
            low, seconds = tail
            end = time.monotonic() + seconds
            while time.monotonic() < end and not _at_most(sampler.samples, low):
                time.sleep(args.sample_s)
    finally:
        samples = sampler.stop()
    return requests, samples, sampler.source
