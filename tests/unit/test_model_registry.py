"""The model registry without Redis: which files the model store lets through, how config.toml's
models and the registry's entries merge, and the write rules (409 on a served name, tombstones
for config models) on an in-memory hash with Redis's WATCH/MULTI shape."""

from __future__ import annotations

import dataclasses
import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from autodep_celery import errors, model_registry
from autodep_celery.config import AutoscalerSettings, ManagementSettings, ModelSettings, Settings
from autodep_celery.contract import REGISTRY_KEY

pytestmark = pytest.mark.unit


def torchscript_zip(path: Path, top: str = "archive", code: bool = True) -> Path:
    """A zip with TorchScript's layout (what torch.jit.save writes), without torch."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{top}/data.pkl", b"x")
        z.writestr(f"{top}/constants.pkl", b"x")
        z.writestr(f"{top}/version", b"3")
        if code:
            z.writestr(f"{top}/code/__torch__/m.py", b"x")
    return path


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    torchscript_zip(root / "good.pt")
    torchscript_zip(root / "sub" / "nested.pt")
    torchscript_zip(tmp_path / "outside.pt")
    return root


# ---- the model store -----------------------------------------------------------------------


@pytest.mark.parametrize("url", ["good.pt", "sub/nested.pt", "./good.pt", "sub//nested.pt"])
def test_files_inside_the_store_are_accepted(store: Path, url: str) -> None:
    assert model_registry.resolve_in_store(str(store), url).parent in (store, store / "sub")


def test_an_absolute_path_inside_the_store_is_accepted(store: Path) -> None:
    path = str(store / "good.pt")
    assert model_registry.resolve_in_store(str(store), path) == store / "good.pt"


def test_a_symlink_inside_the_store_to_a_file_inside_is_followed(store: Path) -> None:
    (store / "latest.pt").symlink_to(store / "sub" / "nested.pt")
    assert model_registry.resolve_in_store(str(store), "latest.pt") == store / "sub" / "nested.pt"


def refused(store: Path, url: str) -> errors.AutodepError:
    with pytest.raises(errors.AutodepError) as info:
        model_registry.resolve_in_store(str(store), url)
    return info.value


@pytest.mark.parametrize(
    "url",
    ["../outside.pt", "sub/../../outside.pt", "sub/../good.pt", "..", "a/../../../etc/passwd"],
)
def test_dot_dot_segments_are_refused_even_when_they_stay_inside(store: Path, url: str) -> None:
    err = refused(store, url)
    assert (err.http_status, err.code) == (400, "invalid_url")
    assert "'..'" in err.message


def test_an_absolute_path_outside_the_store_is_refused(store: Path) -> None:
    err = refused(store, str(store.parent / "outside.pt"))
    assert (err.http_status, err.code) == (403, "outside_model_store")


@pytest.mark.parametrize("target", ["file", "dir"])
def test_a_symlink_out_of_the_store_is_refused(store: Path, target: str) -> None:
    (store / "escape.pt").symlink_to(store.parent / "outside.pt")
    (store / "escape_dir").symlink_to(store.parent, target_is_directory=True)
    url = "escape.pt" if target == "file" else "escape_dir/outside.pt"
    err = refused(store, url)
    assert (err.http_status, err.code) == (403, "outside_model_store")


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/m.pt",
        "http://127.0.0.1/m.pt",
        "file:///etc/passwd",
        "s3://bucket/m.pt",
        "//host/share/m.pt",
    ],
)
def test_urls_are_refused(store: Path, url: str) -> None:
    err = refused(store, url)
    assert (err.http_status, err.code) == (400, "invalid_url")
    assert "not supported" in err.message


def test_a_missing_file_is_a_404(store: Path) -> None:
    err = refused(store, "nope.pt")
    assert (err.http_status, err.code) == (404, "model_file_not_found")


@pytest.mark.parametrize("url", ["", "sub", "nul\0.pt"])
def test_empty_directories_and_nul_are_refused(store: Path, url: str) -> None:
    assert refused(store, url).http_status == 400


def test_a_file_that_is_not_a_zip_is_refused(store: Path) -> None:
    (store / "text.pt").write_text("hello")
    err = refused(store, "text.pt")
    assert (err.http_status, err.code) == (400, "not_torchscript")
    assert "torch.jit.script" in err.message


@pytest.mark.parametrize("kind", ["checkpoint", "two_tops", "plain_zip"])
def test_a_zip_without_torchscripts_layout_is_refused(store: Path, kind: str) -> None:
    path = store / f"{kind}.pt"
    if kind == "checkpoint":  # torch.save(): data.pkl, but no code/ nor constants.pkl
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("ckpt/data.pkl", b"x")
            z.writestr("ckpt/version", b"3")
    elif kind == "two_tops":
        torchscript_zip(path)
        with zipfile.ZipFile(path, "a") as z:
            z.writestr("other/data.pkl", b"x")
    else:
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("readme.txt", b"x")
    err = refused(store, f"{kind}.pt")
    assert (err.http_status, err.code) == (400, "not_torchscript")


def test_a_real_torchscript_file_passes(store: Path, model_dir: Path) -> None:
    (store / "tiny.pt").write_bytes((model_dir / "tiny.pt").read_bytes())
    assert model_registry.resolve_in_store(str(store), "tiny.pt") == store / "tiny.pt"


def test_a_missing_store_is_a_server_error_naming_the_setting(tmp_path: Path) -> None:
    err = refused(tmp_path / "absent", "x.pt")
    assert err.http_status == 500 and "model_store" in err.message


# ---- merging -------------------------------------------------------------------------------

STATIC = Settings(
    autoscaler=AutoscalerSettings(min_workers=0),
    models=(
        ModelSettings("a", "/models/a.pt", task="ImageClassification", max_workers=2),
        ModelSettings("b", "/models/b.pt"),
    ),
    management=ManagementSettings(model_store="/models"),
)


def raw(**entries: dict[str, Any]) -> dict[str, bytes]:
    return {name: json.dumps(value).encode() for name, value in entries.items()}


def names(settings: Settings) -> list[str]:
    return [m.name for m in settings.models]


def test_no_entries_leave_config_as_it_is() -> None:
    assert model_registry.merge(STATIC, {}) == STATIC


def test_registered_models_follow_configs_in_name_order() -> None:
    merged = model_registry.merge(
        STATIC,
        raw(
            z={"fields": {"path": "/models/z.pt", "max_batch_size": 4}, "url": "z.pt"},
            c={"fields": {"path": "/models/c.pt", "min_workers": 2}, "url": "c.pt"},
        ),
    )
    assert names(merged) == ["a", "b", "c", "z"]
    z = merged.model("z")
    assert z is not None and (z.path, z.max_batch_size, z.queue) == ("/models/z.pt", 4, "autodep.z")
    assert merged.pool_bounds(merged.model("c"), cores=4) == (2, 4)  # type: ignore[arg-type]


def test_a_tombstone_removes_a_config_model_and_a_registration_brings_it_back() -> None:
    gone = model_registry.merge(STATIC, raw(a={"deleted": True}))
    assert names(gone) == ["b"]
    back = model_registry.merge(
        STATIC, raw(a={"fields": {"path": "/models/a2.pt", "name": "a"}, "url": "a2.pt"})
    )
    a = back.model("a")
    assert a is not None and a.path == "/models/a2.pt"


def test_an_override_changes_only_its_fields_of_a_config_model() -> None:
    merged = model_registry.merge(STATIC, raw(a={"fields": {"min_workers": 1, "max_workers": 3}}))
    a = merged.model("a")
    assert a is not None
    assert (a.min_workers, a.max_workers, a.task, a.path) == (
        1,
        3,
        "ImageClassification",
        "/models/a.pt",
    )
    assert names(merged) == ["a", "b"]  # config's order kept


@pytest.mark.parametrize(
    "value",
    [
        b"not json",
        b"[1, 2]",
        json.dumps({"fields": {"name": "x"}}).encode(),  # a new model without a path
        json.dumps({"fields": {"path": "/p.pt", "max_batch_size": 0}}).encode(),
        json.dumps({"fields": {"path": "/p.pt", "bogus": 1}}).encode(),
        json.dumps({"fields": "nope"}).encode(),
    ],
)
def test_a_bad_entry_is_skipped_and_the_rest_served(value: bytes) -> None:
    merged = model_registry.merge(
        STATIC, {"x": value, "ok": raw(ok={"fields": {"path": "/ok.pt"}})["ok"]}
    )
    assert names(merged) == ["a", "b", "ok"]


def test_a_bad_override_keeps_the_config_model() -> None:
    merged = model_registry.merge(STATIC, raw(a={"fields": {"max_workers": -1}}))
    assert merged.model("a") == STATIC.model("a")


def test_origin_names_the_registration_url_or_the_store_path() -> None:
    entries = raw(c={"fields": {"path": "/models/sub/c.pt"}, "url": "sub/c.pt"})
    merged = model_registry.merge(STATIC, entries)
    assert model_registry.origin(STATIC, entries, merged.model("c")) == ("sub/c.pt", False)  # type: ignore[arg-type]
    assert model_registry.origin(STATIC, entries, merged.model("a")) == ("a.pt", True)  # type: ignore[arg-type]
    elsewhere = dataclasses.replace(STATIC.models[0], path="/else/where/a.pt")
    assert model_registry.origin(STATIC, entries, elsewhere) == ("a.pt", True)


def test_disabled_management_reads_nothing() -> None:
    off = dataclasses.replace(STATIC, management=ManagementSettings(enabled=False))

    class Boom:
        def hgetall(self, key: str) -> dict[bytes, bytes]:
            raise AssertionError("read the registry")

    assert model_registry.effective(off, Boom()) is off  # type: ignore[arg-type]


# ---- writing -------------------------------------------------------------------------------


class FakeRedis:
    """A hash and redis-py's transaction(): the function sees a pipe that reads at once and
    buffers writes after multi(), as with WATCH/MULTI/EXEC."""

    def __init__(self) -> None:
        self.hash: dict[str, bytes] = {}

    def hgetall(self, key: str) -> dict[bytes, bytes]:
        assert key == REGISTRY_KEY
        return {k.encode(): v for k, v in self.hash.items()}

    def transaction(self, func: Callable[[Any], None], *keys: str) -> None:
        pipe = FakePipe(self)
        func(pipe)
        for op in pipe.queued:
            op()


class FakePipe:
    def __init__(self, redis: FakeRedis) -> None:
        self.redis = redis
        self.queued: list[Callable[[], None]] = []
        self.in_multi = False

    def hget(self, key: str, name: str) -> bytes | None:
        assert not self.in_multi
        return self.redis.hash.get(name)

    def multi(self) -> None:
        self.in_multi = True

    def hset(self, key: str, name: str, value: str) -> None:
        assert self.in_multi
        self.queued.append(lambda: self.redis.hash.__setitem__(name, value.encode()))

    def hdel(self, key: str, name: str) -> None:
        assert self.in_multi
        self.queued.append(lambda: self.redis.hash.pop(name, None))


def served(client: FakeRedis) -> list[str]:
    return names(model_registry.merge(STATIC, client.hash))


def test_register_adds_and_a_second_time_is_a_409() -> None:
    client = FakeRedis()
    model = ModelSettings("c", "/models/c.pt", max_batch_size=4)
    model_registry.register(client, STATIC, model, "c.pt")  # type: ignore[arg-type]
    assert served(client) == ["a", "b", "c"]
    with pytest.raises(errors.ClientError) as info:
        model_registry.register(client, STATIC, model, "c.pt")  # type: ignore[arg-type]
    assert (info.value.http_status, info.value.code) == (409, "model_exists")


def test_a_config_model_cannot_be_registered_over_until_unregistered() -> None:
    client = FakeRedis()
    again = ModelSettings("a", "/models/a2.pt")
    with pytest.raises(errors.ClientError):
        model_registry.register(client, STATIC, again, "a2.pt")  # type: ignore[arg-type]
    model_registry.unregister(client, STATIC, "a")  # type: ignore[arg-type]
    assert served(client) == ["b"] and json.loads(client.hash["a"])["deleted"] is True
    model_registry.register(client, STATIC, again, "a2.pt")  # type: ignore[arg-type]
    merged = model_registry.merge(STATIC, client.hash)
    assert merged.model("a").path == "/models/a2.pt"  # type: ignore[union-attr]


def test_unregistering_a_registered_model_removes_its_entry() -> None:
    client = FakeRedis()
    model_registry.register(client, STATIC, ModelSettings("c", "/c.pt"), "c.pt")  # type: ignore[arg-type]
    model_registry.unregister(client, STATIC, "c")  # type: ignore[arg-type]
    assert client.hash == {}
    with pytest.raises(errors.UnknownModel):
        model_registry.unregister(client, STATIC, "c")  # type: ignore[arg-type]


def test_set_bounds_on_config_and_registered_models() -> None:
    client = FakeRedis()
    model_registry.register(client, STATIC, ModelSettings("c", "/c.pt"), "c.pt")  # type: ignore[arg-type]
    for name in ("a", "c"):
        merged = model_registry.merge(STATIC, client.hash)
        model = merged.model(name)
        assert model is not None
        model_registry.set_bounds(client, STATIC, model, 0, 5)  # type: ignore[arg-type]
        after = model_registry.merge(STATIC, client.hash).model(name)
        assert after is not None and (after.min_workers, after.max_workers) == (0, 5)
        assert after.path == model.path
    assert json.loads(client.hash["c"])["url"] == "c.pt"  # the registration is kept


def test_set_bounds_refuses_what_config_would() -> None:
    client = FakeRedis()
    a = STATIC.model("a")
    assert a is not None
    with pytest.raises(errors.ClientError) as info:
        model_registry.set_bounds(client, STATIC, a, 3, 2)  # type: ignore[arg-type]
    assert info.value.code == "invalid_workers" and "max_workers" in info.value.message
    assert client.hash == {}


def test_environment_does_not_matter(monkeypatch: pytest.MonkeyPatch, store: Path) -> None:
    monkeypatch.chdir(store.parent)  # a relative store resolves against the working directory
    assert model_registry.resolve_in_store("store", "good.pt") == store / "good.pt"
    assert os.getcwd() == str(store.parent)


# ---- [management] in config ------------------------------------------------------------------


def test_the_model_store_is_relative_to_the_config_file(tmp_path: Path) -> None:
    from autodep_celery import config

    toml = tmp_path / "conf" / "config.toml"
    toml.parent.mkdir()
    toml.write_text('[management]\nmodel_store = "store"\n')
    settings = config.load(toml, environ={})
    assert settings.management.model_store == str(tmp_path / "conf" / "store")
    assert settings.management.enabled is True
    off = config.load(toml, environ={"AUTODEP_MANAGEMENT__ENABLED": "false"})
    assert off.management.enabled is False
    again = config.load(environ={config.SETTINGS_ENV: settings.to_json()})
    assert again.management == settings.management  # children get it as resolved


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('[management]\nmodel_store = ""\n', "model_store"),
        ("[management]\nmodel_stor = 'x'\n", "did you mean model_store"),
        ("[management]\nenabled = 'yes'\n", "true or false"),
    ],
)
def test_bad_management_settings_are_named(tmp_path: Path, text: str, words: str) -> None:
    from autodep_celery import config

    toml = tmp_path / "config.toml"
    toml.write_text(text)
    with pytest.raises(config.ConfigError, match=words):
        config.load(toml, environ={})
