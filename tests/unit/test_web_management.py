"""The management API and the web's live model set without Redis: routes over an in-memory
registry (the FakeRedis of test_model_registry), two apps sharing it as two web processes would,
the ModelTable's refresh rules with a fake clock, and the dispatcher taking and dropping models.
The same flows run against real processes in tests/integration/test_management.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import redis

from autodep_celery import contract, errors
from autodep_celery.config import ManagementSettings, ModelSettings, Settings
from autodep_celery.web import management
from autodep_celery.web.app import create_app
from autodep_celery.web.dispatcher import Dispatcher
from autodep_celery.web.model_table import FORCED_READ_MIN_S, ModelTable
from autodep_celery.web.testing import (
    FakeDispatcher,
    QueueReplySource,
    RecordingSender,
    StaticView,
    proc,
)
from tests.unit.conftest import make_settings
from tests.unit.test_model_registry import FakeRedis, torchscript_zip

pytestmark = pytest.mark.unit


class Source:
    """A RegistrySource over a FakeRedis; `down` makes reads fail like an outage."""

    def __init__(self, fake: FakeRedis) -> None:
        self.fake = fake
        self.reads = 0
        self.down = False

    def read(self) -> dict[str, bytes]:
        self.reads += 1
        if self.down:
            raise redis.ConnectionError("down")
        return dict(self.fake.hash)

    def client(self) -> Any:
        return self.fake


@dataclasses.dataclass
class Web:
    client: Any
    dispatcher: FakeDispatcher
    table: ModelTable


def web(settings: Settings, fake: FakeRedis, procs: list[Any] | None = None) -> Web:
    dispatcher = FakeDispatcher(procs if procs is not None else [proc("cfg")])
    app = create_app(settings, dispatcher)
    table = ModelTable(settings, Source(fake))
    table.on_change(app.extensions["autodep"]["metrics"].set_settings)
    app.extensions["autodep"]["models"] = table
    return Web(app.test_client(), dispatcher, table)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    torchscript_zip(root / "tiny.pt")
    torchscript_zip(tmp_path / "secret.pt")
    (root / "notes.txt").write_text("not a model")
    return root


@pytest.fixture
def settings(store: Path) -> Settings:
    base = make_settings([ModelSettings("cfg", "/elsewhere/cfg.pt", task="TextToText")])
    return dataclasses.replace(base, management=ManagementSettings(model_store=str(store)))


def text_body(model: str) -> dict[str, Any]:
    return {"data": {"Text": "hi"}, "inference_type": "TextToText", "model": model}


def test_register_list_describe_scale_unregister(settings: Settings) -> None:
    fake = FakeRedis()
    w = web(settings, fake, [proc("cfg"), proc("tiny", pid=7)])
    r = w.client.post("/management/models?url=tiny.pt&batch_size=4&max_batch_delay=5")
    assert r.status_code == 202, r.json
    assert r.json["status"].startswith(
        'Model "tiny" Version: 1.0 registered with 1 initial workers'
    )
    assert w.client.get("/management/models").json == {
        "models": [
            {"modelName": "cfg", "modelUrl": "cfg.pt"},
            {"modelName": "tiny", "modelUrl": "tiny.pt"},
        ]
    }
    [described] = w.client.get("/management/models/tiny").json
    assert {k: described[k] for k in list(described)[:9]} == {
        "modelName": "tiny",
        "modelVersion": "1.0",
        "modelUrl": "tiny.pt",
        "runtime": "python",
        "minWorkers": 1,
        "maxWorkers": described["maxWorkers"],
        "batchSize": 4,
        "maxBatchDelay": 5,
        "loadedAtStartup": False,
    }
    [worker] = described["workers"]
    assert worker["id"] == "host/7" and worker["status"] == "READY" and worker["gpu"] is False
    assert worker["startTime"].endswith("Z") and worker["pid"] == 7
    assert w.client.get("/management/models/tiny/all").json == [described]
    assert w.client.get("/management/models/tiny/1.0").json == [described]
    assert w.client.get("/management/models/tiny/1").json == [described]  # as /v2 names it
    assert w.client.get("/management/models/cfg").json[0]["loadedAtStartup"] is True
    # scale: TorchServe's defaults (max = min) and its 202
    r = w.client.put("/management/models/tiny?min_worker=2&max_worker=3")
    assert (r.status_code, r.json) == (202, {"status": "Processing worker updates..."})
    [described] = w.client.get("/management/models/tiny").json
    assert (described["minWorkers"], described["maxWorkers"]) == (2, 3)
    # unregister: gone from the list, 404 for describe and for inference
    r = w.client.delete("/management/models/tiny")
    assert (r.status_code, r.json) == (200, {"status": 'Model "tiny" unregistered'})
    assert [m["modelName"] for m in w.client.get("/management/models").json["models"]] == ["cfg"]
    assert w.client.get("/management/models/tiny").status_code == 404
    r = w.client.post("/inference", json=text_body("tiny"))
    assert r.status_code == 404 and r.json["error"]["code"] == "unknown_model"


def test_a_registration_through_one_process_is_served_by_another_at_once(
    settings: Settings,
) -> None:
    fake = FakeRedis()
    a = web(settings, fake, [proc("cfg")])
    b = web(settings, fake, [proc("cfg"), proc("tiny")])
    assert b.client.post("/inference", json=text_body("cfg")).status_code == 200  # b read it
    assert a.client.post("/management/models?url=tiny.pt").status_code == 202
    r = b.client.post("/inference", json=text_body("tiny"))  # within b's refresh interval
    assert r.status_code == 200, r.json
    assert [m for m, _ in b.dispatcher.submitted] == ["cfg", "tiny"]
    metrics = b.client.get("/metrics").get_data(as_text=True)
    assert 'model="tiny"' in metrics  # the per-model gauges follow the set


@pytest.mark.parametrize(
    ("url", "status", "code"),
    [
        ("../secret.pt", 400, "invalid_url"),
        ("%2E%2E/secret.pt", 400, "invalid_url"),
        ("{abs}", 403, "outside_model_store"),
        ("https://example.com/x.pt", 400, "invalid_url"),
        ("file:///etc/passwd", 400, "invalid_url"),
        ("missing.pt", 404, "model_file_not_found"),
        ("notes.txt", 400, "not_torchscript"),
        ("", 400, "missing_url"),
    ],
)
def test_bad_urls_get_a_4xx_json_error(
    settings: Settings, store: Path, url: str, status: int, code: str
) -> None:
    w = web(settings, FakeRedis())
    url = url.replace("{abs}", str(store.parent / "secret.pt"))
    r = w.client.post(f"/management/models?url={url}")
    assert (r.status_code, r.json["error"]["code"]) == (status, code), r.json
    assert r.json["error"]["message"]


def test_a_symlink_out_of_the_store_is_refused(settings: Settings, store: Path) -> None:
    (store / "link.pt").symlink_to(store.parent / "secret.pt")
    r = web(settings, FakeRedis()).client.post("/management/models?url=link.pt")
    assert (r.status_code, r.json["error"]["code"]) == (403, "outside_model_store")


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("url=tiny.pt&model_name=cfg", 409, "model_exists"),
        ("url=tiny.pt&model_name=bad%20name", 400, "invalid_model_name"),
        ("url=tiny.pt&batch_size=0", 400, "invalid_parameter"),
        ("url=tiny.pt&max_batch_delay=-1", 400, "invalid_parameter"),
        ("url=tiny.pt&max_batch_delay=18446744073709551616", 400, "invalid_parameter"),
        ("url=tiny.pt&max_batch_delay=60001", 400, "invalid_parameter"),
        ("url=tiny.pt&initial_workers=x", 400, "invalid_parameter"),
        ("url=tiny.pt&synchronous=maybe", 400, "invalid_parameter"),
        ("url=tiny.pt&task=Classify", 400, "invalid_parameter"),
        ("url=tiny.pt&handler=my_handler.py", 400, "unsupported_handler"),
        ("url=tiny.pt&batchsize=4", 400, "unknown_parameter"),
    ],
)
def test_bad_registrations(settings: Settings, query: str, status: int, code: str) -> None:
    r = web(settings, FakeRedis()).client.post(f"/management/models?{query}")
    assert (r.status_code, r.json["error"]["code"]) == (status, code), r.json


def test_a_second_registration_of_a_name_is_a_409_and_json_bodies_work(settings: Settings) -> None:
    w = web(settings, FakeRedis())
    body = {
        "url": "tiny.pt",
        "model_name": "t2",
        "initial_workers": 0,
        "handler": "image_classifier",
    }
    r = w.client.post("/management/models", json=body)
    assert r.status_code == 200 and "registered with 0 initial workers" in r.json["status"]
    assert w.client.post("/management/models", json=body).status_code == 409
    [described] = w.client.get("/management/models/t2").json
    assert described["minWorkers"] == 0


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 5000 + b"]" * 5000,  # the standard library's parser raised RecursionError
        b'{"url": "\\ud800.pt"}',  # a lone surrogate: UnicodeEncodeError in the path check
        b'{"url": "\xed\xa0\x80.pt"}',  # the same, as raw CESU-8 bytes
        b'{"url": "tiny.pt", "model_name": "p", "handler": ["x"]}',  # unhashable
        b'{"url": "tiny.pt", "model_name": "p", "handler": {"a": 1}}',
        b'{"url": "tiny.pt", "model_name": "p", "task": 0}',  # was taken as "no task"
        b'{"url": "tiny.pt", "model_name": "p", "task": []}',
    ],
)
def test_json_bodies_the_fuzz_helper_found_are_400_not_500(settings: Settings, body: bytes) -> None:
    w = web(settings, FakeRedis())
    for method, path in (("POST", "/management/models"), ("PUT", "/management/models/cfg")):
        r = w.client.open(path, method=method, data=body, content_type="application/json")
        assert r.status_code == 400, (path, r.status_code, r.json)
        assert r.json["error"]["code"] in (
            "invalid_json",
            "invalid_parameter",
            "invalid_url",
            "unknown_parameter",
        )


def test_a_lone_surrogate_url_is_refused_by_the_store_check(store: Path) -> None:
    from autodep_celery import errors, model_registry

    with pytest.raises(errors.ClientError) as exc:
        model_registry.resolve_in_store(str(store), "\ud800.pt")
    assert exc.value.code == "invalid_url"


def test_a_config_batch_delay_past_any_json_integer_is_described(settings: Settings) -> None:
    huge = ModelSettings("huge", "/elsewhere/h.pt", max_batch_delay_ms=1e30)
    settings = dataclasses.replace(settings, models=(*settings.models, huge))
    [described] = web(settings, FakeRedis()).client.get("/management/models/huge").json
    assert described["maxBatchDelay"] == 1e30


def test_a_config_model_is_unregistered_and_registered_again(settings: Settings) -> None:
    other = ModelSettings("other", "/elsewhere/other.pt")
    w = web(dataclasses.replace(settings, models=(*settings.models, other)), FakeRedis())
    assert w.client.post("/inference", json=text_body("cfg")).status_code == 200
    assert w.client.delete("/management/models/cfg").status_code == 200
    assert w.client.post("/inference", json=text_body("cfg")).status_code == 404
    assert w.client.delete("/management/models/cfg").status_code == 404
    r = w.client.post("/management/models?url=tiny.pt&model_name=cfg&task=TextToText")
    assert r.status_code == 202
    assert w.client.post("/inference", json=text_body("cfg")).status_code == 200


def test_scale_validation_and_versions(settings: Settings) -> None:
    w = web(settings, FakeRedis())
    r = w.client.put("/management/models/cfg?min_worker=3&max_worker=2")
    assert (r.status_code, r.json["error"]["code"]) == (400, "invalid_parameter")
    assert "max_worker" in r.json["error"]["message"]
    assert w.client.put("/management/models/nope?min_worker=1").status_code == 404
    r = w.client.get("/management/models/cfg/2.0")
    assert r.status_code == 404 and "version" in r.json["error"]["message"]
    assert w.client.put("/management/models/cfg/1.0?min_worker=0&max_worker=2").status_code == 202
    [described] = w.client.get("/management/models/cfg").json
    assert (described["minWorkers"], described["maxWorkers"]) == (0, 2)


def test_synchronous_scale_waits_for_the_autoscaler(settings: Settings) -> None:
    w = web(settings, FakeRedis())
    view = w.dispatcher.status_view
    r = w.client.put("/management/models/cfg?min_worker=1&max_worker=2&synchronous=true")
    assert r.status_code == 202 and "No autoscaler" in r.json["status"]
    view.scaler_state = {"models": {"cfg": {"min": 1, "max": 2, "ready": 1, "current": 1}}}
    r = w.client.put("/management/models/cfg?min_worker=1&max_worker=2&synchronous=true")
    assert (r.status_code, r.json) == (200, {"status": "Workers scaled to 1 for model: cfg"})


def test_paging(settings: Settings) -> None:
    w = web(settings, FakeRedis())
    for i in range(3):
        w.client.post(f"/management/models?url=tiny.pt&model_name=m{i}")
    first = w.client.get("/management/models?limit=2").json
    assert [m["modelName"] for m in first["models"]] == ["cfg", "m0"]
    token = first["nextPageToken"]
    second = w.client.get(f"/management/models?limit=2&next_page_token={token}").json
    assert [m["modelName"] for m in second["models"]] == ["m1", "m2"]
    assert "nextPageToken" not in second
    assert w.client.get("/management/models?limit=x").status_code == 400


def test_the_routes_are_in_the_openapi_document_and_off_when_disabled(settings: Settings) -> None:
    doc = web(settings, FakeRedis()).client.get("/openapi.json").json
    ops = {(p, m) for p, ms in doc["paths"].items() for m in ms if p.startswith("/management")}
    assert ops >= {
        ("/management/models", "get"),
        ("/management/models", "post"),
        ("/management/models/{model_name}", "get"),
        ("/management/models/{model_name}", "put"),
        ("/management/models/{model_name}", "delete"),
        ("/management/models/{model_name}/{version}", "get"),
    }
    post = doc["paths"]["/management/models"]["post"]
    assert {p.get("name") for p in post["parameters"]} >= {"url", "model_name", "initial_workers"}
    off = dataclasses.replace(settings, management=ManagementSettings(enabled=False))
    client = create_app(off, FakeDispatcher([proc("cfg")])).test_client()
    assert client.get("/management/models").status_code == 404


# ---- the table -------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def registered(fake: FakeRedis, name: str) -> None:
    fake.hash[name] = b'{"fields": {"path": "/s/%s.pt"}, "url": "%s.pt"}' % (
        name.encode(),
        name.encode(),
    )


def test_the_table_reads_at_most_every_interval_and_at_once_on_a_miss(settings: Settings) -> None:
    fake, clock = FakeRedis(), Clock()
    source = Source(fake)
    table = ModelTable(settings, source, refresh_s=1.0, clock=clock)
    seen: list[list[str]] = []
    table.on_change(lambda s: seen.append([m.name for m in s.models]))
    table.refresh()
    table.refresh()
    assert source.reads == 1 and seen == []  # nothing registered: no change to tell
    registered(fake, "new")
    clock.now += 0.5
    assert [m.name for m in table.refresh().models] == ["cfg"]  # still fresh enough
    assert table.settings().model("new") is not None  # a miss reads at once
    assert source.reads == 2 and seen == [["cfg", "new"]]
    clock.now += 0.0625  # > FORCED_READ_MIN_S, exact in binary
    assert table.settings().model("absent") is None and source.reads == 3
    del fake.hash["new"]
    clock.now += 1.0
    assert [m.name for m in table.refresh().models] == ["cfg"]
    assert seen[-1] == ["cfg"]


def test_misses_read_the_registry_at_most_every_forced_interval(settings: Settings) -> None:
    fake, clock = FakeRedis(), Clock()
    source = Source(fake)
    table = ModelTable(settings, source, refresh_s=1.0, clock=clock)
    table.refresh()
    assert FORCED_READ_MIN_S < 0.0625  # the steps below, exact in binary
    clock.now += 0.0625
    for n in range(100):  # a flood of made-up names
        assert table.settings().model(f"made-up-{n}") is None
    assert source.reads == 2, "one read for the whole flood"
    registered(fake, "new")
    assert table.settings().model("new") is None, "registered within the interval: not yet"
    assert table.refresh(force=True).model("new") is not None, "management reads are not held"
    registered(fake, "newer")
    clock.now += 0.0625
    assert table.settings().model("newer") is not None and source.reads == 4


def test_an_unreadable_registry_keeps_the_last_set(settings: Settings) -> None:
    fake, clock = FakeRedis(), Clock()
    source = Source(fake)
    registered(fake, "new")
    table = ModelTable(settings, source, refresh_s=1.0, clock=clock)
    table.refresh()
    source.down = True
    clock.now += 2
    assert [m.name for m in table.refresh().models] == ["cfg", "new"]
    reads = source.reads
    assert table.settings().model("other") is None
    assert source.reads == reads  # an outage is retried once per interval, not per miss
    source.down = False
    clock.now += 2
    assert table.settings().model("other") is None and source.reads == reads + 1


def test_a_disabled_registry_is_never_read(settings: Settings) -> None:
    off = dataclasses.replace(settings, management=ManagementSettings(enabled=False))
    source = Source(FakeRedis())
    table = ModelTable(off, source)
    assert table.refresh(force=True).model("x") is None and source.reads == 0


# ---- the dispatcher --------------------------------------------------------------------------


def dispatcher() -> tuple[Dispatcher, RecordingSender, QueueReplySource]:
    settings = make_settings(["m"], worker_check_interval_s=0.05)
    sender, replies = RecordingSender(), QueueReplySource()
    view = StaticView([proc("m"), proc("n", pid=2)])
    return Dispatcher(settings, sender, replies, view, threads=False), sender, replies


def item(text: str) -> Any:
    import time

    return contract.text_item(text, time.time() + 30)


def test_the_dispatcher_takes_a_new_model_and_drops_a_removed_one() -> None:
    d, sender, replies = dispatcher()
    try:
        with pytest.raises(errors.UnknownModel):
            d.submit("n", item("x"))
        d.set_models([ModelSettings("m", "/m.pt"), ModelSettings("n", "/n.pt", max_queue=1)])
        f = d.submit("n", item("a"))
        with pytest.raises(errors.Overloaded):  # n's own settings apply
            d.submit("n", item("b"))
        d.step()
        assert [b["model"] for b in sender.batches] == ["n"]
        inflight = d.submit("m", item("in flight"))
        d.step()
        waiting = d.submit("m", item("waiting"))  # m's batch is in flight: this one waits
        d.step()
        d.set_models([ModelSettings("n", "/n.pt")])
        d.step()
        with pytest.raises(errors.UnknownModel) as info:
            waiting.result(timeout=1)
        assert "unregistered" in info.value.message
        with pytest.raises(errors.UnknownModel):
            d.submit("m", item("late"))
        batch = sender.batches[1]
        replies.replies.put(
            contract.make_reply(batch["batch_id"], "w/1", [contract.ok_result({"Text": "ok"}, 5)])
        )
        d.step()
        assert inflight.result(timeout=1)["ok"]  # a batch in flight is still answered
        assert set(d.load()) == {"n"}  # and the removed model's state is gone
        assert not f.done()
    finally:
        d.close()


def test_parse_registration_defaults() -> None:
    reg = management.parse_registration({"url": "x.pt"})
    model = management.registered_model(reg, "x", "/s/x.pt")
    assert (model.max_batch_size, model.max_batch_delay_ms, model.min_workers) == (16, 2.0, None)
    assert management.parse_scale({}) == (1, 1, False)
    assert management.parse_scale({"min_worker": "0", "max_worker": "3"}) == (0, 3, False)
