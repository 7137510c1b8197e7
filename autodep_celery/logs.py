"""Logging for every process: one line per event, text or JSON, to stderr and optionally a file.

Each process entry point calls :func:`setup` (the Celery worker through its ``setup_logging``
signal, the autoscaler and `autodep serve` from the CLI); gunicorn takes :func:`dict_config` as
its ``logconfig_dict`` so its own messages share the format. A request id travels in a context
variable (:data:`REQUEST_ID`, set by the web per request and by the worker per batch) and is
added to every line logged while it is set. Each record is written with one ``write()`` so lines
from processes appending to the same file never interleave. Imports the stdlib only.
"""

from __future__ import annotations

import contextvars
import json
import logging
import logging.config
import os
import sys
import time
from pathlib import Path
from typing import Any

from autodep_celery.config import LogSettings

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "autodep_request_id", default=None
)
"""The request id (or, in a worker, the comma-joined ids of the batch) of the current work."""

ACCESS_LOGGER = "autodep.access"
"""One line per HTTP request (web) and per batch (worker) at INFO, when ``[log] access``."""

# LogRecord attributes that are not extras (`logging.LogRecord.__dict__` of a plain record).
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def _timestamp(created: float) -> str:
    ms = int((created % 1) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{ms:03d}Z"


class Formatter(logging.Formatter):
    """One line per record. Extras given with ``extra={...}`` become fields (JSON) or
    ``key=value`` pairs (text); a traceback stays on the line (JSON string, or escaped)."""

    def __init__(self, json_lines: bool = False, role: str = "") -> None:
        super().__init__()
        self.json_lines = json_lines
        self.role = role

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname,
            "role": self.role,
            "pid": record.process,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            out["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = record.stack_info
        return out

    def format(self, record: logging.LogRecord) -> str:
        f = self.fields(record)
        if self.json_lines:
            return json.dumps(f, default=str, ensure_ascii=False)
        head = f"{f.pop('ts')} {f.pop('level')} {f.pop('role')}[{f.pop('pid')}] {f.pop('logger')}:"
        msg = str(f.pop("msg")).replace("\n", "\\n")
        extras = " ".join(f"{k}={_text_value(v)}" for k, v in f.items())
        return f"{head} {msg} {extras}" if extras else f"{head} {msg}"


def _text_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = text.replace("\n", "\\n")
    return json.dumps(text) if (" " in text or not text) else text


class LineHandler(logging.Handler):
    """Writes each formatted record plus a newline with one ``os.write``: stderr when `path` is
    None, else the file opened for appending (O_APPEND: lines from many processes stay whole)."""

    def __init__(self, path: str | None = None) -> None:
        super().__init__()
        self.path = path
        self._fd: int | None = None
        self._pid = 0

    def _target(self) -> int:
        if self.path is None:
            return sys.stderr.fileno()
        if self._fd is None:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        return self._fd

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = (self.format(record) + "\n").encode("utf-8", "replace")
            fd = self._target()
            while data:  # a pipe may take a long line in parts
                data = data[os.write(fd, data) :]
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None
        super().close()


def log_path(settings: LogSettings, role: str) -> str | None:
    return str(Path(settings.dir) / f"autodep-{role}.log") if settings.dir else None


def dict_config(settings: LogSettings, role: str, level: str | None = None) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` mapping: root to stderr (and the role's file), gunicorn's
    and Celery's loggers propagating to it."""
    level = (level or settings.level).upper()
    handlers: dict[str, Any] = {"stderr": {"()": LineHandler, "formatter": "autodep"}}
    path = log_path(settings, role)
    if path:
        handlers["file"] = {"()": LineHandler, "path": path, "formatter": "autodep"}
    propagate = {"level": level, "handlers": [], "propagate": True}
    # `access = false` drops the per-request lines; a level above INFO drops them anyway.
    numeric = max(logging.getLevelName(level), 0 if settings.access else logging.WARNING)
    access_level = logging.getLevelName(numeric)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "autodep": {"()": Formatter, "json_lines": settings.format == "json", "role": role}
        },
        "handlers": handlers,
        "root": {"level": level, "handlers": list(handlers)},
        "loggers": {
            "gunicorn.error": propagate,
            "gunicorn.access": propagate,
            "celery": {"level": level, "handlers": [], "propagate": True},
            ACCESS_LOGGER: {"level": access_level, "handlers": [], "propagate": True},
        },
    }


def setup(settings: LogSettings, role: str, level: str | int | None = None) -> None:
    """Configure this process's logging (replaces any handlers on the root logger)."""
    if isinstance(level, int):
        level = logging.getLevelName(level)
    logging.config.dictConfig(dict_config(settings, role, level))
    logging.captureWarnings(True)  # warnings become one line too (logger py.warnings)
