"""The in-process limit: the worker's own decode → normalise → forward → classify, no serving.

Called by bench.cli. Each setting (processes × torch threads) runs in fresh processes started
with "spawn" (no OpenMP state crosses a fork), each with its own copy of the model; the
processes start every batch size together (a barrier) and run it for the same fixed time, so
the aggregate img/s is what the whole machine can do. Uses worker.processing's functions, the
exact code the worker runs per batch. Imports torch and worker.processing.
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from autodep_celery.config import IMAGENET_MEAN, IMAGENET_STD, WebSettings
from autodep_celery.worker import memory, processing

BATCH_SIZES = (1, 2, 4, 8)
SETTINGS = ((1, 2), (2, 1))
"""(processes, torch threads per process) to try."""
BARRIER_TIMEOUT_S = 300.0
MAX_PIXELS = WebSettings().max_image_pixels


@dataclass(frozen=True)
class LimitPoint:
    processes: int
    threads: int
    batch_size: int
    images: int
    seconds: float

    @property
    def img_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    @property
    def setting(self) -> str:
        return f"{self.processes} proc x {self.threads} thr"


def run_pipeline(module: Any, images: Sequence[bytes], top_n: int) -> list[Any]:
    """One worker batch: what worker.batch does for ImageClassification items."""
    tensors = [processing.decode_image(data, MAX_PIXELS, None) for data in images]
    batch = processing.normalise(torch.stack(tensors), IMAGENET_MEAN, IMAGENET_STD)
    with torch.inference_mode():
        logits = processing.main_output(module(batch))
    return processing.classify(logits, [top_n] * len(images), None)


def _child(
    model_path: str,
    image: bytes,
    top_n: int,
    threads: int,
    batch_sizes: Sequence[int],
    duration_s: float,
    warmup_s: float,
    barrier: Any,
    results: Any,
) -> None:
    memory.keep_freed_memory()  # the worker's allocator settings: same code, same allocator
    torch.set_num_threads(threads)
    module = torch.jit.load(model_path, map_location="cpu").eval()
    for size in batch_sizes:
        step = functools.partial(run_pipeline, module, [image] * size, top_n)
        _loop(step, warmup_s)
        barrier.wait(BARRIER_TIMEOUT_S)  # every process measures the same window
        calls, seconds = _loop(step, duration_s)
        results.put((size, calls * size, seconds))


def _loop(step: Callable[[], Any], duration_s: float) -> tuple[int, float]:
    """Call `step` until `duration_s` has passed (at least once); return (calls, seconds)."""
    started = time.perf_counter()
    calls = 0
    while True:
        step()
        calls += 1
        elapsed = time.perf_counter() - started
        if elapsed >= duration_s:
            return calls, elapsed


def measure_setting(
    model_path: str,
    image: bytes,
    top_n: int,
    processes: int,
    threads: int,
    duration_s: float,
    warmup_s: float,
    batch_sizes: Sequence[int] = BATCH_SIZES,
) -> list[LimitPoint]:
    """Aggregate img/s of `processes` × `threads` at each batch size (children always stopped)."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(processes)
    results = ctx.Queue()
    children = [
        ctx.Process(
            target=_child,
            daemon=True,
            args=(
                model_path,
                image,
                top_n,
                threads,
                tuple(batch_sizes),
                duration_s,
                warmup_s,
                barrier,
                results,
            ),
        )
        for _ in range(processes)
    ]
    try:
        for child in children:
            child.start()
        per_size: dict[int, list[tuple[int, float]]] = {size: [] for size in batch_sizes}
        for _ in range(processes * len(batch_sizes)):
            size, images, seconds = _get(results, children)
            per_size[size].append((images, seconds))
        for child in children:
            child.join(30)
    finally:
        for child in children:
            if child.is_alive():
                child.kill()
                child.join(5)
    points = []
    for size, runs in per_size.items():
        # Sum of each process's own rate: all ran the same window, started by the barrier.
        rate = sum(images / seconds for images, seconds in runs)
        seconds = max(s for _, s in runs)
        points.append(LimitPoint(processes, threads, size, round(rate * seconds), seconds))
    return points


def _get(results: Any, children: list[Any]) -> tuple[int, int, float]:
    import queue

    while True:
        try:
            return results.get(timeout=1.0)  # type: ignore[no-any-return]
        except queue.Empty:
            dead = [c for c in children if not c.is_alive() and c.exitcode != 0]
            if dead:
                raise RuntimeError(
                    f"an in-process benchmark process exited with code {dead[0].exitcode}"
                ) from None


def best(points: Sequence[LimitPoint]) -> LimitPoint:
    return max(points, key=lambda p: p.img_per_s)
