"""The HTTP tier: Flask under gunicorn (gevent by default), batching requests into Celery tasks.

Entry points: ``web.wsgi:app`` (gunicorn, config in ``web.gunicorn_conf``) and
:func:`web.app.create_app` (tests, `autodep serve`). Imports flow ``web -> autodep_celery``; this
package must never import torch or ``worker``.
"""
