"""gunicorn settings for the web tier, from autodep's settings: ``gunicorn -c
python:autodep_celery.web.gunicorn_conf autodep_celery.web.wsgi:app``.

Few processes, many concurrent requests each, because batches form only among the requests of one
process. gevent by default: a greenlet per connection costs less than gthread's hand-offs
between its poller and pool threads (docs/architecture.md §2.1). gevent's worker monkey-patches the
process before the app is imported, so the dispatcher's threads, locks and Redis sockets become
cooperative. The app is not preloaded, so each worker builds its Redis clients after fork.

Metrics: prometheus_client runs in multiprocess mode, which needs PROMETHEUS_MULTIPROC_DIR set
before any worker imports it, and emptied at each server start (stale files of an earlier run
would count again); ``on_starting`` does both in the master (a private temporary directory
unless the variable is set), ``child_exit`` marks a dead worker's live gauges dead, ``on_exit``
removes the temporary directory. Logs: gunicorn's own messages go through the same one-line
format as the app's ([log], autodep_celery.logs). Must not import torch, nor prometheus_client
at import (it reads the variable once, on first import).
"""

import glob as _glob
import os as _os
import shutil as _shutil
import tempfile as _tempfile
from typing import Any as _Any

from gunicorn.glogging import Logger as _GunicornLogger

# Aliased: a module-level name `config` would be read as gunicorn's own `config` setting.
from autodep_celery import config as _config
from autodep_celery import logs as _logs
from autodep_celery.web import auth as _auth
from autodep_celery.web import http_workers as _http_workers

_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_settings = _config.load()
_web = _settings.web
# a server beyond loopback without any key refuses to start (web.auth), also when gunicorn is
# started by hand with this file
_auth.check_listen(_settings, _auth.load_keys(_settings))
_owned_dir: list[str] = []
"""The metrics directory this master created (and removes on exit)."""

_http_workers.READ_TIMEOUT_S = _web.read_timeout_s
_http_workers.REQUEST_LIMIT_S = _web.request_timeout_s + _web.read_timeout_s

bind = [f"{_web.host}:{_web.port}"]
# gunicorn's own, with read timeouts and JSON error pages (web.http_workers)
worker_class = {
    "gevent": "autodep_celery.web.http_workers.GeventWorker",
    "gthread": "autodep_celery.web.http_workers.ThreadWorker",
}.get(_web.worker_class, _web.worker_class)
workers = _web.processes
threads = _web.threads  # gthread only; gevent ignores it
worker_connections = _web.connections
keepalive = 5
# A request may wait request_timeout_s for a model; the worker must not be killed before that.
timeout = int(_web.request_timeout_s) + 30
graceful_timeout = int(_web.request_timeout_s) + 5
preload_app = False
errorlog = "-"
accesslog = None  # the app logs one line per request itself (autodep.access), with its id
loglevel = _settings.log.level.lower()


class _Logger(_GunicornLogger):  # type: ignore[misc]  # gunicorn is untyped
    """gunicorn's own messages through the app's one-line format ([log]). Not logconfig_dict:
    that would switch on gunicorn's access log, which formats a line per request for nothing."""

    def setup(self, cfg: _Any) -> None:
        super().setup(cfg)
        _logs.setup(_settings.log, "web")
        for log in (self.error_log, self.access_log):
            for handler in list(log.handlers):
                log.removeHandler(handler)
            log.propagate = True


logger_class = _Logger
proc_name = "autodep-web"
# gunicorn >= 25 opens a control socket at one fixed path per user; two servers on one host
# (tests, several deployments) would fight over it, and nothing here uses gunicornc.
control_socket_disable = True


def on_starting(server: _Any) -> None:
    path = _os.environ.get(_MULTIPROC_ENV)
    if path:
        _os.makedirs(path, exist_ok=True)
        for stale in _glob.glob(_os.path.join(path, "*.db")):
            _os.remove(stale)
    else:
        path = _tempfile.mkdtemp(prefix="autodep-metrics-")
        _owned_dir.append(path)
        _os.environ[_MULTIPROC_ENV] = path


def child_exit(server: _Any, worker: _Any) -> None:
    from prometheus_client import multiprocess  # in the master, only once a worker died

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]  # untyped API


def on_exit(server: _Any) -> None:
    for path in _owned_dir:
        _shutil.rmtree(path, ignore_errors=True)
