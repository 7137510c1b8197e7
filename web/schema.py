"""The HTTP API's bodies, declared once (README, HTTP API): requests that :mod:`web.validation` and
:mod:`web.images` check field by field from these declarations, and responses that the routes
build. :mod:`web.openapi` renders both into GET /openapi.json. Must not import torch or Flask.

The task-type parts of /inference (the inference_type names and options, the data forms, the
output tags) are composed from the registry in :mod:`web.task_types`, so the document lists
exactly the registered types.
"""

from __future__ import annotations

from autodep_celery import jobs
from autodep_celery.web import task_types
from autodep_celery.web.spec import (
    AnyValue,
    ArrayOf,
    Boolean,
    Integer,
    MapOf,
    Number,
    Object,
    OneOf,
    Spec,
    String,
    Tagged,
)

# ---- POST /inference request ----------------------------------------------------------------
_PLAIN = tuple(name for name, t in task_types.TASKS.items() if t.options is None)
_DEFAULTS = "".join(
    f'; "{name}" alone uses the default {", ".join(t.defaults)}'
    for name, t in task_types.WITH_OPTIONS.items()
)
NAMED_TYPES = String(
    enum=_PLAIN + tuple(task_types.WITH_OPTIONS),  # plain names first, as messages list them
    description=f"A task name{_DEFAULTS}.",
)
TAGGED_TYPES = Tagged({name: t.options for name, t in task_types.WITH_OPTIONS.items() if t.options})
INFERENCE_TYPE = OneOf(
    (NAMED_TYPES, TAGGED_TYPES),
    description="Chooses the pre- and post-processing (Autodep's InferenceType).",
)
DATA = Tagged({tag: data.spec for tag, data in task_types.DATA_TAGS.items()})
MODEL = String(description="A served model's name; may be left out when one model is served.")
INFERENCE_REQUEST = Object(
    {"data": DATA, "inference_type": INFERENCE_TYPE, "model": MODEL},
    required=("data", "inference_type"),
    example={
        "data": {"B64Image": {"image": "<base64>", "height": None, "width": None}},
        "inference_type": {"ImageClassification": {"top_n": 3}},
        "model": "resnet18",
    },
)


def _paired(data: task_types.DataInput) -> Object:
    """The request body for one kind of data, with the task types that take it."""
    takers = [t for t in task_types.TASKS.values() if t.data is data]
    names = String(enum=tuple(t.name for t in takers))
    tagged: dict[str, Spec] = {t.name: t.options for t in takers if t.options is not None}
    return Object(
        {
            "data": Tagged({tag: data.spec for tag in data.tags}),
            "inference_type": OneOf((names, Tagged(tagged))) if tagged else names,
            "model": MODEL,
        },
        required=INFERENCE_REQUEST.required,
        description=f"{data.tags[0]} data",
    )


INFERENCE_BODY = OneOf(
    tuple(_paired(data) for data in task_types.INPUTS),
    description="One kind of data with a task type that takes it (web.validation: "
    "data_type_mismatch otherwise).",
    example=INFERENCE_REQUEST.example,
)
"""What /openapi.json shows of INFERENCE_REQUEST: the same fields, each data form paired with
the task types that take it, so a body the document accepts is one validation accepts."""

# ---- responses ------------------------------------------------------------------------------
ERROR = Object(
    {
        "error": Object(
            {
                "code": String(description="snake_case, stable", example="invalid_top_n"),
                "message": String(description="What is wrong and how to fix it."),
            },
            required=("code", "message"),
        )
    },
    required=("error",),
)
INFERENCE = Tagged({tag: spec for t in task_types.TASKS.values() for tag, spec in t.output.items()})
INFERENCE_DESCRIPTION = "; ".join(t.description for t in task_types.TASKS.values()) + "."
"""What each type computes, for the /inference operation."""
COMPUTE_TIME = Object(
    {"secs": Integer(minimum=0), "nanos": Integer(minimum=0)},
    required=("secs", "nanos"),
    description="Model compute time of the request's batch.",
)
INFERENCE_RESPONSE = ArrayOf(
    OneOf((INFERENCE, COMPUTE_TIME)),
    min_items=2,
    max_items=2,
    description="[inference, {secs, nanos}], as Autodep answers.",
    example=[
        {"Classification": [{"probability": 0.91, "label": "tabby"}]},
        {"secs": 0, "nanos": 21345678},
    ],
)
WORKER_STATES = MapOf(String(enum=("Working", "Idle")), description='"<worker>/<pid>" -> state')
WORKER_INFO = ArrayOf(
    ArrayOf(
        OneOf(
            (
                Object(
                    {
                        "worker": String(),
                        "pid": Integer(),
                        "models": ArrayOf(String()),
                        "cpu_percent": Number(minimum=0),
                        "rss_bytes": Integer(minimum=0),
                    },
                    required=("worker", "pid", "models", "cpu_percent", "rss_bytes"),
                ),
                Integer(minimum=0, description="requests served"),
            )
        ),
        min_items=2,
        max_items=2,
    ),
    description="[[process info, requests served], ...]",
)
HEALTH = Object({"status": String(enum=("ok",))}, required=("status",))
READY = Object(
    {
        "status": String(enum=("ready",)),
        "models": MapOf(Integer(minimum=0), description="model -> ready worker processes"),
    },
    required=("status", "models"),
)
_PROCESSES = Integer(minimum=0)
_DECISION = Object(
    {
        "action": String(enum=("up", "down")),
        "from": _PROCESSES,
        "to": _PROCESSES,
        "reason": String(),
        "backlog": Number(minimum=0),
        "at": Number(description="Unix time"),
    },
    closed=False,
    nullable=True,
)
AUTOSCALER_MODEL = Object(
    {
        "current": Integer(minimum=0, description="processes the pool has or is growing to"),
        "ready": Integer(minimum=0, description="processes with the model loaded"),
        "desired": _PROCESSES,
        "min": _PROCESSES,
        "max": _PROCESSES,
        "backlog": Number(minimum=0, description="requests waiting or computing"),
        "queue_wait_s": Number(minimum=0, description="the oldest waiting request's age"),
        "pending": _PROCESSES,
        "sent": _PROCESSES,
        "queued": _PROCESSES,
        "busy": _PROCESSES,
        "pinned": Integer(minimum=0, nullable=True, description="set by `autodep scale`"),
        "startable": Boolean(description="started on demand when scaled to zero"),
        "reason": String(),
        "decisions": MapOf(Integer(minimum=0), description="up/down/hold -> count"),
        "last_decision": _DECISION,
    },
    required=("current", "ready", "min", "max"),
    closed=False,
)
AUTOSCALER = Object(
    {
        "running": Boolean(description="false: no autoscaler runs; pools keep their size"),
        "ts": Number(description="Unix time of the state"),
        "host": String(),
        "pid": Integer(),
        "interval_s": Number(minimum=0),
        "models": MapOf(AUTOSCALER_MODEL),
    },
    required=("running", "models"),
    closed=False,
)
# ---- asynchronous jobs (POST /jobs, GET /jobs/<id>) ------------------------------------------
JOB_ACCEPTED = Object(
    {
        "job_id": String(description="32 hex digits"),
        "status_url": String(description="Where the job's state is read: /jobs/<job_id>."),
    },
    required=("job_id", "status_url"),
    description="Accepted: the job's input is in the broker; Location names its status URL.",
)
_UNIX_TIME = Number(description="Unix time")
JOB = Object(
    {
        "job_id": String(),
        "status": String(enum=jobs.STATES),
        "model": String(),
        "created": _UNIX_TIME,
        "updated": _UNIX_TIME,
        "deadline": Number(description="Unix time; a job not finished by then fails"),
        "result": ArrayOf(
            OneOf((INFERENCE, COMPUTE_TIME)),
            min_items=2,
            max_items=2,
            description="When done: exactly what POST /inference answers.",
        ),
        "error": Object(
            {"code": String(), "message": String()},
            required=("code", "message"),
            description="When failed: the error POST /inference would have answered.",
        ),
    },
    required=("job_id", "status", "model", "created", "updated"),
    example={
        "job_id": "0f8e4b1c2d3a4e5f8a9b0c1d2e3f4a5b",
        "status": "done",
        "model": "resnet18",
        "created": 1767225600.25,
        "updated": 1767225600.31,
        "deadline": 1767229200.25,
        "result": [
            {"Classification": [{"probability": 0.91, "label": "tabby"}]},
            {"secs": 0, "nanos": 21345678},
        ],
    },
)
ANY_JSON: Spec = AnyValue(description="JSON")
