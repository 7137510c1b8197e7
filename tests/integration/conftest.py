"""Real services for integration tests: redis-server, Celery workers and gunicorn, on free ports.

Everything is started with the same command lines users run (autodep_celery.launch), waited for
by readiness checks (PING, worker status records, GET /health), logged to files whose tails are
attached to any failing test, and torn down (SIGTERM, then SIGKILL of each process group).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
import requests
import torch

from autodep_celery import config, embedded_redis, launch, processes, status
from autodep_celery.config import ModelSettings, Settings

LOGS: list[Path] = []
IN_CI = os.environ.get("CI") == "true"


@dataclass
class Web:
    url: str
    settings: Settings
    child: processes.Child

    def post(self, path: str, json: object | None = None, **kw: object) -> requests.Response:
        kw.setdefault("timeout", 60)
        return requests.post(self.url + path, json=json, **kw)  # type: ignore[arg-type]

    def get(self, path: str, **kw: object) -> requests.Response:
        kw.setdefault("timeout", 30)
        return requests.get(self.url + path, **kw)  # type: ignore[arg-type]


@dataclass
class Stack:
    redis_url: str
    settings: Settings
    model_dir: Path
    workdir: Path
    workers: dict[str, processes.Child] = field(default_factory=dict)

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)

    def procs(self) -> list[status.ProcStatus]:
        """Processes that serve: live, with a live worker parent (as the web sees them)."""
        client = self.redis()
        try:
            return status.read_serving(client)
        finally:
            client.close()


def _log(workdir: Path, name: str) -> Path:
    path = workdir / f"{name}.log"
    LOGS.append(path)
    return path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and LOGS:
        for path in LOGS:
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-40:]
                report.sections.append((f"log {path.name}", "\n".join(tail)))


class Slow(torch.nn.Module):
    """ImageToImage model whose compute time grows with the image width (~10 ms per pixel)."""

    SIZE = 384

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = torch.nn.Parameter(torch.randn(self.SIZE, self.SIZE, generator=g) / 20)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ones(self.w.shape[0], self.w.shape[1]) * x.mean()
        for _ in range(int(x.shape[3]) * 10):
            y = torch.tanh(y @ self.w)
        return x + 0.0 * y.mean()


def write_test_models(model_dir: Path) -> None:
    from autodep_celery.worker.examples import write_example_models

    write_example_models(model_dir)
    torch.jit.script(Slow().eval()).save(str(model_dir / "slow.pt"))
    (model_dir / "tiny_labels.txt").write_text("\n".join(f"thing-{i}" for i in range(10)) + "\n")


def make_settings(model_dir: Path, redis_url: str, **web: object) -> Settings:
    def m(name: str, path: str, **kw: object) -> ModelSettings:
        return ModelSettings(name=name, path=str(model_dir / path), **kw)  # type: ignore[arg-type]

    models = (
        m("resnet18", "resnet18.pt", task="ImageClassification", max_batch_size=8),
        m("tiny", "tiny.pt", task="ImageClassification"),
        m(
            "labelled",
            "tiny.pt",
            task="ImageClassification",
            labels=str(model_dir / "tiny_labels.txt"),
        ),
        m("segmenter", "segmenter.pt", task="ImageToImage"),
        m("enhancer", "enhancer.pt"),
        m("textgen", "textgen.pt", task="TextToText"),
        m("echo", "echo.pt"),
        m("slow", "slow.pt", task="ImageToImage", max_batch_size=1),
        m("ghost", "tiny.pt"),  # configured, but no worker ever serves it
        # for the autoscaler's tests, which start their own workers and autoscaler
        m(
            "elastic",
            "slow.pt",
            task="ImageToImage",
            max_batch_size=1,
            max_workers=3,
            resize=(8, 12),  # ~0.25 s per request, and a quick warm-up of new processes
        ),
        m("sleepy", "tiny.pt", task="ImageClassification", min_workers=0),
        m("multi", "multi.pt", task="Tensor"),  # torch-serving's example signature
    )
    base = Settings(
        broker=config.BrokerSettings(url=redis_url),
        worker=config.WorkerSettings(heartbeat_interval_s=0.5, max_attempts=3),
        log=config.LogSettings(access=True),  # the tests follow requests through access lines
        models=models,
        # POST /management/models registers the example models (README examples)
        management=config.ManagementSettings(model_store=str(model_dir)),
    )
    return dataclasses.replace(
        base,
        web=dataclasses.replace(base.web, port=processes.free_port(), **web),  # type: ignore[arg-type]
    )


WORKER_GROUPS = {
    # one worker for the big model, one for the slow one, one serving all the small models
    "resnet18": (["resnet18"], 2),
    "slow": (["slow"], 2),
    "small": (["tiny", "labelled", "segmenter", "enhancer", "textgen", "echo", "multi"], 1),
}


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("autodep")


@pytest.fixture(scope="session")
def redis_url(workdir: Path) -> Iterator[str]:
    try:
        child, url = embedded_redis.start(workdir / "redis", log_path=_log(workdir, "redis"))
    except RuntimeError as exc:
        if IN_CI:
            raise
        pytest.skip(f"no redis-server: {exc}")
    yield url
    child.stop()


@pytest.fixture(scope="session")
def model_dir(workdir: Path) -> Path:
    d = workdir / "models"
    write_test_models(d)
    return d


def wait_for_workers(
    stack: Stack, expected: dict[str, int], children: list[processes.Child], timeout_s: float = 180
) -> None:
    """Until each model has `expected[model]` ready processes."""

    def ready() -> bool:
        counts: dict[str, int] = {}
        for p in stack.procs():
            if p.ready:
                for model in p.models:
                    counts[model] = counts.get(model, 0) + 1
        return all(counts.get(m, 0) >= n for m, n in expected.items())

    def alive() -> bool:
        return all(c.alive() for c in children)

    processes.wait_until(ready, timeout_s, f"workers for {sorted(expected)}", 0.25, alive)


def start_worker(stack: Stack, name: str, models: list[str], concurrency: int) -> processes.Child:
    argv = launch.worker_argv(
        stack.settings, models, concurrency=concurrency, hostname=f"{name}@test"
    )
    child = processes.start(
        f"worker {name}",
        argv,
        env=launch.child_env(stack.settings),
        log_path=_log(stack.workdir, f"worker-{name}"),
    )
    stack.workers[name] = child
    return child


@pytest.fixture(scope="session")
def stack(workdir: Path, redis_url: str, model_dir: Path) -> Iterator[Stack]:
    settings = make_settings(model_dir, redis_url)
    s = Stack(redis_url, settings, model_dir, workdir)
    try:
        children = [start_worker(s, n, ms, c) for n, (ms, c) in WORKER_GROUPS.items()]
        expected = {m: c for ms, c in WORKER_GROUPS.values() for m in ms}
        wait_for_workers(s, expected, children)
        yield s
    finally:
        processes.stop_all(list(s.workers.values()))


def start_web(stack: Stack, settings: Settings, name: str) -> Web:
    child = processes.start(
        name, launch.web_argv(), env=launch.child_env(settings), log_path=_log(stack.workdir, name)
    )
    url = f"http://127.0.0.1:{settings.web.port}"

    def healthy() -> bool:
        try:
            return requests.get(url + "/health", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    try:
        processes.wait_until(healthy, 60, name, alive=child.alive)
    except Exception:
        child.stop(2)
        raise
    return Web(url, settings, child)


@pytest.fixture(scope="session")
def web(stack: Stack) -> Iterator[Web]:
    w = start_web(stack, stack.settings, "web")
    yield w
    w.child.stop()


@pytest.fixture(scope="session")
def tight_web(stack: Stack) -> Iterator[Web]:
    """One process with a short deadline: for 504 and 429 (max_queue 2 on `slow`). It runs
    gunicorn's gthread workers, so the alternative to the default gevent stays tested."""
    models = tuple(
        dataclasses.replace(m, max_queue=2) if m.name == "slow" else m
        for m in stack.settings.models
    )
    settings = dataclasses.replace(
        stack.settings,
        models=models,
        web=dataclasses.replace(
            stack.settings.web,
            port=processes.free_port(),
            processes=1,
            request_timeout_s=1.5,
            worker_class="gthread",
        ),
    )
    w = start_web(stack, settings, "tight-web")
    yield w
    w.child.stop()
