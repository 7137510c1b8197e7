"""gunicorn settings for the web tier, from autodep's settings: ``gunicorn -c
python:web.gunicorn_conf web.wsgi:app`` (or ``-c path/to/web/gunicorn_conf.py``).

Few processes, many concurrent requests each, because batches form only among the requests of one
process (DESIGN §2.1). gevent by default: a greenlet per connection costs less than gthread's
hand-offs between its poller and pool threads, which were ~half of the web tier's CPU per request
(tiny model at c=64: 2.4-2.8k req/s with gevent against 1.9-2.1k with gthread, alternating
runs by hand on one machine). gevent's worker monkey-patches the process before the app is
imported, so the dispatcher's threads, locks and Redis sockets become cooperative. The app is
not preloaded, so each worker builds its Redis clients after fork. Must not import torch.
"""

# Aliased: a module-level name `config` would be read as gunicorn's own `config` setting.
from autodep_celery import config as _config

_settings = _config.load()
_web = _settings.web

bind = [f"{_web.host}:{_web.port}"]
worker_class = _web.worker_class
workers = _web.processes
threads = _web.threads  # gthread only; gevent ignores it
worker_connections = _web.connections
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
