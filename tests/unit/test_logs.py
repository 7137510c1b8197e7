"""[log] settings and autodep_celery.logs: one line per event (text or JSON), the request id on
every line logged while it is set, files in [log] dir, gunicorn's loggers routed through ours."""

from __future__ import annotations

import json
import logging

import pytest

from autodep_celery import config, logs
from autodep_celery.config import ConfigError, LogSettings

pytestmark = pytest.mark.unit


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    yield
    for h in root.handlers[:]:
        root.removeHandler(h)
        h.close()
    root.handlers[:], root.level = saved
    logging.captureWarnings(False)


def test_log_section_defaults_env_and_errors(tmp_path):
    assert config.from_dict({}).log == LogSettings("text", "INFO", "", False)
    s = config.load(environ={"AUTODEP_LOG__FORMAT": "json", "AUTODEP_LOG__DIR": "/var/log/x"})
    assert (s.log.format, s.log.dir) == ("json", "/var/log/x")
    cfg = tmp_path / "config.toml"
    cfg.write_text('[log]\ndir = "logs"\nlevel = "debug"\naccess = false\n')
    s = config.load(cfg, environ={})
    assert s.log.dir == str(tmp_path / "logs") and s.log.level == "debug" and not s.log.access
    assert config.from_dict(json.loads(s.to_json())).log == s.log
    with pytest.raises(
        ConfigError, match="log.format 'jsn' is not text or json; did you mean json"
    ):
        config.from_dict({"log": {"format": "jsn"}})
    with pytest.raises(ConfigError, match="log.level 'LOUD'"):
        config.from_dict({"log": {"level": "LOUD"}})
    with pytest.raises(ConfigError, match=r"unknown key in \[log\]: fromat; did you mean format"):
        config.from_dict({"log": {"fromat": "json"}})


def test_json_lines_carry_request_id_extras_and_traceback(tmp_path, restore_logging, capfd):
    logs.setup(LogSettings(format="json", dir=str(tmp_path)), "web")
    token = logs.REQUEST_ID.set("rid-1")
    try:
        logging.getLogger("x").info("hello %s", "you", extra={"model": "m"})
        try:
            raise ValueError("bad\nthing")
        except ValueError:
            logging.getLogger("x").exception("failed")
    finally:
        logs.REQUEST_ID.reset(token)
    logging.getLogger("x").warning("no id")
    err = capfd.readouterr().err.splitlines()
    in_file = (tmp_path / "autodep-web.log").read_text().splitlines()
    assert err == in_file and len(err) == 3  # one line per event, the traceback included
    first, second, third = (json.loads(line) for line in err)
    assert first["msg"] == "hello you" and first["model"] == "m" and first["request_id"] == "rid-1"
    assert first["role"] == "web" and first["level"] == "INFO" and first["ts"].endswith("Z")
    assert "ValueError: bad\nthing" in second["exc"] and second["request_id"] == "rid-1"
    assert "request_id" not in third


def test_text_lines_stay_on_one_line(restore_logging, capfd):
    logs.setup(LogSettings(access=True), "worker")
    token = logs.REQUEST_ID.set("a,b")
    try:
        logging.getLogger("autodep.access").info("batch", extra={"failed": {"a": "x y"}})
        try:
            raise ZeroDivisionError("division by zero")
        except ZeroDivisionError:
            logging.getLogger("w").exception("two\nlines")
    finally:
        logs.REQUEST_ID.reset(token)
    err = capfd.readouterr().err.splitlines()
    assert len(err) == 2
    assert " INFO worker[" in err[0] and "autodep.access: batch" in err[0]
    assert "request_id=a,b" in err[0] and 'failed="{\\"a\\": \\"x y\\"}"' in err[0]
    assert "two\\nlines" in err[1] and "ZeroDivisionError" in err[1]


def test_access_false_drops_request_lines_only(restore_logging, capfd):
    logs.setup(LogSettings(access=False), "web")
    logging.getLogger(logs.ACCESS_LOGGER).info("GET /health 200")
    logging.getLogger("web.errors").info("kept")
    err = capfd.readouterr().err
    assert "kept" in err and "/health" not in err


def test_gunicorn_loggers_propagate_to_ours(tmp_path, restore_logging, capfd):
    cfg = logs.dict_config(LogSettings(format="json", dir="/d"), "web")
    assert cfg["loggers"]["gunicorn.error"] == {"level": "INFO", "handlers": [], "propagate": True}
    assert cfg["handlers"]["file"]["path"] == "/d/autodep-web.log"
    assert cfg["root"]["handlers"] == ["stderr", "file"]
    # and applied: gunicorn's messages come out as our lines, on stderr and in the file
    logs.setup(LogSettings(format="json", dir=str(tmp_path)), "web")
    logging.getLogger("gunicorn.error").info("Booting worker with pid: %s", 7)
    logging.getLogger("gunicorn.error").debug("not at INFO")
    (line,) = capfd.readouterr().err.splitlines()
    assert (tmp_path / "autodep-web.log").read_text().splitlines() == [line]
    record = json.loads(line)
    assert record["logger"] == "gunicorn.error" and record["role"] == "web"
    assert record["msg"] == "Booting worker with pid: 7"


def test_warnings_become_log_lines(restore_logging, capfd):
    import warnings

    logs.setup(LogSettings(format="json"), "worker")
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # pytest turns warnings into errors
        warnings.warn("careful", UserWarning, stacklevel=1)
    (line,) = capfd.readouterr().err.splitlines()
    assert json.loads(line)["logger"] == "py.warnings" and "careful" in json.loads(line)["msg"]
