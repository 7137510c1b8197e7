"""The HTTP tier: Flask under gunicorn (gevent by default), batching requests into Celery tasks.

Installed as ``autodep_celery.web`` (the folder stays web/). Entry points:
``autodep_celery.web.wsgi:app`` (gunicorn, config in ``web.gunicorn_conf``) and
:func:`web.app.create_app` (tests). Imports flow ``web -> autodep_celery core``; this package
must never import torch or ``worker``.
"""
