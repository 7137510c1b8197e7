"""Settings: precedence, validation messages that name the key, Autodep aliases."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from autodep_celery import config
from autodep_celery.config import ConfigError

pytestmark = pytest.mark.unit


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_defaults_without_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = config.load(environ={})
    assert s.web.port == 8000 and s.models == ()
    assert s.broker.url == "" and s.broker_url == config.DEFAULT_BROKER_URL
    assert s.result_url == config.DEFAULT_BROKER_URL


def test_precedence_file_env_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, "[web]\nport = 9000\nthreads = 8\n")
    s = config.load(path, environ={})
    assert (s.web.port, s.web.threads) == (9000, 8)
    s = config.load(path, environ={"AUTODEP_WEB__PORT": "9100"})
    assert (s.web.port, s.web.threads) == (9100, 8)
    s = config.load(path, environ={"AUTODEP_WEB__PORT": "9100"}, overrides={"web": {"port": 9200}})
    assert s.web.port == 9200


def test_env_strings_and_numbers(tmp_path: Path) -> None:
    s = config.load(
        write(tmp_path, ""),
        environ={
            "AUTODEP_BROKER__URL": "redis://h:1/0",
            "AUTODEP_WEB__REQUEST_TIMEOUT_S": "2.5",
            "AUTODEP_AUTOSCALER__ENABLED": "true",
        },
    )
    assert s.broker.url == "redis://h:1/0" and s.web.request_timeout_s == 2.5
    assert s.autoscaler.enabled is True
    assert s.result_url == "redis://h:1/0"


def test_models_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[[models]]\nname = "m"\npath = "models/m.pt"\nresize = [32, 48]\n'
        "mean = [0.5, 0.5, 0.5]\nstd = [0.25, 0.25, 0.25]\n",
    )
    (m,) = config.load(path, environ={}).models
    assert m.path == str(tmp_path / "models" / "m.pt")
    assert m.resize == (32, 48) and m.mean == (0.5, 0.5, 0.5) and m.queue == "autodep.m"


def test_model_from_command_line_is_named_after_its_stem(tmp_path: Path) -> None:
    pt = tmp_path / "resnet18.pt"
    pt.write_bytes(b"x")
    s = config.load(write(tmp_path, ""), environ={}, model_paths=[str(pt)])
    assert [m.name for m in s.models] == ["resnet18"] and s.models[0].task is None
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(write(tmp_path, ""), environ={}, model_paths=[str(tmp_path / "nope.pt")])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[worker]\ndevcie = "cpu"\n',
            "unknown key in \\[worker\\]: devcie; did you mean device\\?",
        ),
        ("[webb]\nport = 1\n", "unknown section \\[webb\\]; did you mean web\\?"),
        ('[web]\nport = "80"\n', "web.port must be a whole number"),
        ("[web]\nport = 0\n", "web.port \\(0\\) must be > 0"),
        ("[web]\nport = 70000\n", "web.port \\(70000\\) must be <= 65535"),
        (
            "[autoscaler]\nmin_workers = 4\nmax_workers = 2\n",
            "autoscaler.max_workers \\(2\\) must be >= autoscaler.min_workers \\(4\\)",
        ),
        ('[worker]\ndevice = "gpu"\n', "worker.device 'gpu' must be cpu, cuda"),
        ('[[models]]\nname = "m"\n', "needs path"),
        (
            '[[models]]\nname = "m"\npath = "m.pt"\ntask = "Clasification"\n',
            "did you mean ImageClassification",
        ),
        (
            '[[models]]\nname = "m"\npath = "m.pt"\n[[models]]\nname = "m"\npath = "n.pt"\n',
            "used twice",
        ),
        ('[[models]]\nname = "bad name"\npath = "m.pt"\n', "name must be"),
        (
            '[[models]]\nname = "m"\npath = "m.pt"\nresize = [0, 3]\n',
            "resize must be \\[height, width\\]",
        ),
        (
            '[[models]]\nname = "m"\npath = "m.pt"\nmax_batch_size = 0\n',
            "max_batch_size \\(0\\) must be >= 1",
        ),
        (
            '[[models]]\nname = "m"\npath = "m.pt"\nmean = [0.5]\n',
            "mean and .std must have 3 values",
        ),
        ('[broker]\nurl = "amqp://guest@localhost//"\n', "set broker.result_url"),
        ('[broker]\nresult_url = "http://x"\n', "must be a Redis URL"),
        ("[web\n", "not valid TOML"),
        ('[web]\nworker_class = "gevnet"\n', "not one of gevent, gthread.*did you mean"),
        ("[web]\nconnections = 0\n", "web.connections \\(0\\) must be > 0"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config.load(write(tmp_path, text), environ={})


def test_bad_env_section(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="AUTODEP_WBE__PORT"):
        config.load(write(tmp_path, ""), environ={"AUTODEP_WBE__PORT": "1"})


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(tmp_path / "nope.toml", environ={})
    with pytest.raises(ConfigError, match="no such file"):
        config.load(environ={config.CONFIG_ENV: str(tmp_path / "nope.toml")})


def test_autodep_aliases_are_accepted_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(
        tmp_path,
        "[http_server]\nport = 8080\n[manager]\nnum_init_workers = 2\n"
        "max_workers = 6\nauto_scale = true\n",
    )
    with caplog.at_level(logging.WARNING):
        s = config.load(path, environ={})
    assert s.web.port == 8080
    assert (s.autoscaler.min_workers, s.autoscaler.max_workers, s.autoscaler.enabled) == (
        2,
        6,
        True,
    )
    assert "Autodep's name" in caplog.text
    with pytest.raises(ConfigError, match="unknown key in \\[manager\\]"):
        config.load(write(tmp_path, "[manager]\nworkers = 1\n"), environ={})


def test_settings_round_trip_through_json_for_child_processes(tmp_path: Path) -> None:
    path = write(
        tmp_path, '[web]\nport = 9001\n[[models]]\nname = "m"\npath = "m.pt"\nresize = [4, 5]\n'
    )
    s = config.load(path, environ={})
    again = config.load(environ={config.SETTINGS_ENV: s.to_json()})
    assert again == s
    assert json.loads(s.to_json())["models"][0]["name"] == "m"


def test_redis_socket_broker_gives_redis_py_a_unix_url(tmp_path: Path) -> None:
    s = config.load(write(tmp_path, '[broker]\nurl = "redis+socket:///tmp/r.sock"\n'), environ={})
    assert s.broker_url == "redis+socket:///tmp/r.sock" and s.result_url == "unix:///tmp/r.sock"
    s = config.load(
        write(tmp_path, '[broker]\nurl = "amqp://h//"\nresult_url = "redis://r:1/0"\n'), environ={}
    )
    assert s.result_url == "redis://r:1/0"
