"""Property-based fuzzing of the whole HTTP API against its own OpenAPI document (schemathesis),
on a real stack: gunicorn (gevent, two processes), redis-server and a Celery worker serving five
small models, with /management enabled.

Every operation of GET /openapi.json gets schemathesis's examples, coverage (boundary and
invalid values of every parameter and body field) and fuzzing phases, with positive and negative
data. Every answer must: not be a 5xx; have a documented status code, media type and headers;
have a JSON body that fits the documented schema; refuse what the schema refuses (negative
data); and take what it accepts, but for what a schema cannot say (an image that does not
decode, a model's own task, an unknown model or job: 404/413/422). The requests sent and the
statuses seen are printed. /management changes are undone after each call (the registry key is
deleted), so every operation meets config's five models.

``AUTODEP_FUZZ_EXAMPLES`` sets the fuzzing phase's examples per operation: the default 25 sends
~3,700 requests (20-80 s on 2 cores, by load); 300 sent 13,026 in 174 s. ``AUTODEP_FUZZ_SEED``
sets the seed (fixed: CI runs the same cases).
"""

from __future__ import annotations

import base64
import collections
import io
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import requests
import schemathesis
import schemathesis.engine
from hypothesis import strategies as st
from PIL import Image
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import events

from autodep_celery import contract, embedded_redis, processes
from autodep_celery.config import (
    BrokerSettings,
    ManagementSettings,
    ModelSettings,
    Settings,
    WebSettings,
    WorkerSettings,
)
from tests.integration.conftest import (
    IN_CI,
    Stack,
    Web,
    start_web,
    start_worker,
    wait_for_workers,
    write_test_models,
)

EXAMPLES = int(os.environ.get("AUTODEP_FUZZ_EXAMPLES", "25"))
SEED = int(os.environ.get("AUTODEP_FUZZ_SEED", "1107"))
MODELS = {
    "tiny": "ImageClassification",
    "segmenter": "ImageToImage",
    "textgen": "TextToText",
    "echo": None,
    "multi": "Tensor",
}
"""One model of each task type, and one without a task (it takes any)."""
ACCEPTED = ["2XX", "404", "409", "413", "422", "429"]
"""What a request the document accepts may get: success, or what no schema can say (unknown
model, job or file; image or input too large; a model's own task; a full queue)."""
REJECTED = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]
"""What a request the document refuses may get: schemathesis's default list plus 413 (a
multipart form of more parts than a route reads is refused as too large), and without its 5xx
(not_a_server_error fails those anyway)."""
CONFIG = f"""
seed = {SEED}
suppress-health-check = ["too_slow", "filter_too_much", "data_too_large"]
[generation]
mode = "all"
max-examples = {EXAMPLES}
database = "none"
[phases.examples]
enabled = true
[phases.coverage]
enabled = true
[phases.fuzzing]
enabled = true
[phases.stateful]
enabled = false
[checks]
not_a_server_error.enabled = true
status_code_conformance.enabled = true
content_type_conformance.enabled = true
response_headers_conformance.enabled = true
response_schema_conformance.enabled = true
negative_data_rejection.enabled = true
negative_data_rejection.expected-statuses = {REJECTED!r}
positive_data_acceptance.enabled = true
positive_data_acceptance.expected-statuses = {ACCEPTED!r}
missing_required_header.enabled = true
unsupported_method.enabled = true
use_after_free.enabled = false
ensure_resource_availability.enabled = false
ignored_auth.enabled = false
object_level_authorization.enabled = false
"""
BAD_REQUEST_EXPECTED = {
    "PUT /management/models/{model_name}": "max_worker >= min_worker",
    "PUT /management/models/{model_name}/{version}": "max_worker >= min_worker",
    "POST /v2/models/{model}/infer": "OIP answers 400 to any bad input (Triton does): data "
    "that does not fit its shape or datatype, binary data sizes, a missing data",
    "POST /v2/models/{model}/versions/{version}/infer": "as above",
    "POST /serve": "typed values nest (a generic_dict's values, a list argument's items) and "
    "this OpenAPI has no recursion, so the document cannot say what goes inside them",
    "POST /management/models": "url must be a path inside the model store: NUL characters, "
    "'..', absolute paths and URLs are refused, which a string schema cannot say",
}
"""Operations whose parameters or fields constrain each other in ways OpenAPI cannot say: a 400
for a combination the document allows is expected there (and only there)."""


@st.composite
def image_files(draw: st.DrawFn) -> bytes:
    """A small real image in one of the formats the web reads (so valid requests reach the
    models), or now and then arbitrary bytes."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(min_size=1, max_size=64))
    fmt = draw(st.sampled_from(["PNG", "JPEG", "GIF", "BMP", "WEBP"]))
    size = (draw(st.integers(1, 40)), draw(st.integers(1, 40)))
    colour = draw(st.tuples(*[st.integers(0, 255)] * 3))
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format=fmt)
    return buf.getvalue()


schemathesis.openapi.format("byte", image_files().map(lambda b: base64.b64encode(b).decode()))
for _media in ("image/*", "application/octet-stream"):
    schemathesis.openapi.media_type(_media, image_files())


@pytest.fixture(scope="module")
def fuzz_web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Web, str]]:
    tmp = tmp_path_factory.mktemp("fuzz")
    try:
        redis_child, url = embedded_redis.start(tmp / "redis", log_path=tmp / "redis.log")
    except RuntimeError as exc:
        if IN_CI:
            raise
        pytest.skip(f"no redis-server: {exc}")
    model_dir = tmp / "models"
    write_test_models(model_dir)
    settings = Settings(
        broker=BrokerSettings(url=url),
        worker=WorkerSettings(heartbeat_interval_s=0.5),
        web=WebSettings(port=processes.free_port(), processes=2, request_timeout_s=10),
        models=tuple(
            ModelSettings(name=name, path=str(model_dir / f"{name}.pt"), task=task)
            for name, task in MODELS.items()
        ),
        management=ManagementSettings(model_store=str(model_dir)),
    )
    stack = Stack(url, settings, model_dir, tmp)
    web = None
    try:
        worker = start_worker(stack, "fuzz", list(MODELS), 2)
        wait_for_workers(stack, dict.fromkeys(MODELS, 2), [worker])
        web = start_web(stack, settings, "web-fuzz")
        yield web, url
    finally:
        if web is not None:
            web.child.stop()
        processes.stop_all(list(stack.workers.values()))
        redis_child.stop()


def served(web: Web) -> collections.Counter[int]:
    """Requests the web processes answered, by status (their Prometheus counters)."""
    text = requests.get(web.url + "/metrics", timeout=10).text
    counts: collections.Counter[int] = collections.Counter()
    for line in text.splitlines():
        if line.startswith("autodep_http_requests_total{"):
            labels, value = line.rsplit(" ", 1)
            status = labels.split('status="', 1)[1].split('"', 1)[0]
            counts[int(status)] += int(float(value))
    return counts


def failures_of(recorder: Any, phase: str) -> list[str]:
    """Each failed check of a scenario: operation, check, what failed, how to reproduce."""
    found = []
    for nodes in recorder.checks.values():
        for node in nodes:
            if node.failure_info is None:
                continue
            failure = node.failure_info.failure
            if (
                node.name == "positive_data_acceptance"
                and recorder.label in BAD_REQUEST_EXPECTED
                and getattr(failure, "status_code", None) == 400
            ):
                continue
            found.append(
                f"{recorder.label} [{phase}: {node.name}] {failure.title}: {failure.message}\n"
                f"    {node.failure_info.code_sample}"
            )
    return found


@pytest.mark.timeout(300 + 20 * EXAMPLES)  # a large AUTODEP_FUZZ_EXAMPLES runs for long
def test_every_answer_fits_the_document(
    fuzz_web: tuple[Web, str], capsys: pytest.CaptureFixture[str]
) -> None:
    web, url = fuzz_web
    api = schemathesis.openapi.from_url(
        web.url + "/openapi.json", config=SchemathesisConfig.from_str(CONFIG)
    )
    registry = redis.Redis.from_url(url)

    @api.hook
    def after_call(context: Any, case: Any, response: Any) -> None:
        if case.path.startswith("/management/") and case.method != "GET":
            # registrations, bounds and unregistrations: back to config's models every time
            registry.delete(contract.REGISTRY_KEY)

    before = served(web)
    started = time.monotonic()
    failures: list[str] = []
    cases = 0
    operations: set[str] = set()
    for event in schemathesis.engine.from_schema(api).execute():
        if isinstance(event, events.ScenarioFinished):
            operations.add(event.recorder.label)
            cases += sum(1 for i in event.recorder.interactions.values() if i.response)
            failures += failures_of(event.recorder, event.phase.value)
        elif isinstance(event, events.NonFatalError):
            failures.append(f"{event.label}: {event.info.message}")
        elif isinstance(event, events.FatalError):
            raise event.exception
    elapsed = time.monotonic() - started
    registry.close()
    answered = served(web) - before
    statuses = ", ".join(f"{code}: {n}" for code, n in sorted(answered.items()))
    line = (
        f"fuzz (seed {SEED}, {EXAMPLES} examples/operation): {cases} test cases, "
        f"{answered.total()} requests answered by the server, {len(operations)} operations, "
        f"{elapsed:.0f} s; statuses {statuses}; {len(failures)} failures"
    )
    with capsys.disabled():  # shown without -s too
        print("\n" + line)
    assert not failures, "\n".join(failures)
    assert not [code for code in answered if code >= 500], answered
    assert cases >= 1000 and len(operations) >= 35, line
