"""The autoscaler: worker pools that follow the load.

Every ``[autoscaler] interval_s`` it reads each model's whole backlog (:mod:`.backlog`), decides
a pool size with a pure function (:mod:`.policy`), spreads it over the workers that consume the
model's queue (:mod:`.allocate`) and acts through Celery's remote control, and on its own host by
starting and stopping whole worker processes (:mod:`.actuators`). :mod:`.loop` ties these
together; :mod:`.state` is what it publishes for GET /autoscaler, /ready and /metrics. The design
and its measured reasons are in docs/architecture.md. Imports neither torch nor Flask.
"""
