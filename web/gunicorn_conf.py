"""gunicorn settings for the web tier, from autodep's settings: ``gunicorn -c
python:web.gunicorn_conf web.wsgi:app`` (or ``-c path/to/web/gunicorn_conf.py``).

gthread workers, because batches form only among the threads of one process (DESIGN §2.1): few
processes, many threads. The app is not preloaded, so each worker builds its Celery app and Redis
clients after fork. Must not import torch.
"""

# Aliased: a module-level name `config` would be read as gunicorn's own `config` setting.
from autodep_celery import config as _config

_settings = _config.load()
_web = _settings.web

bind = [f"{_web.host}:{_web.port}"]
worker_class = "gthread"
workers = _web.processes
threads = _web.threads
worker_connections = max(1000, _web.threads * 4)
keepalive = 5
# A request may wait request_timeout_s for a model; the worker must not be killed before that.
timeout = int(_web.request_timeout_s) + 30
graceful_timeout = int(_web.request_timeout_s) + 5
preload_app = False
errorlog = "-"
accesslog = None
loglevel = "info"
proc_name = "autodep-web"
# gunicorn >= 25 opens a control socket at one fixed path per user; two servers on one host
# (tests, several deployments) would fight over it, and nothing here uses gunicornc.
control_socket_disable = True
