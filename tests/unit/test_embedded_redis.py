"""The embedded Redis's config and URL handling (autodep_celery.embedded_redis) without a server:
the password goes into the config file, dangerous commands are renamed away, logs see no
password, and the bench finds the URL through the file the log names."""

from __future__ import annotations

from pathlib import Path

from autodep_celery import embedded_redis
from autodep_celery.bench import floor


def test_redact_hides_only_the_password() -> None:
    assert (
        embedded_redis.redact("redis://:s3cret@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    )
    assert embedded_redis.redact("rediss://u:p@h:1/2") == "rediss://u:***@h:1/2"
    assert embedded_redis.redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert embedded_redis.redact("redis+socket:///tmp/r.sock") == "redis+socket:///tmp/r.sock"


def test_config_requires_the_password_and_renames_dangerous_commands() -> None:
    text = embedded_redis.config_text(1234, Path('/tmp/a "b"'), "pw-_x")
    lines = text.splitlines()
    assert "port 1234" in lines and "bind 127.0.0.1" in lines
    assert 'requirepass "pw-_x"' in lines
    assert 'dir "/tmp/a \\"b\\""' in lines
    for name in ("CONFIG", "SHUTDOWN", "DEBUG", "MODULE", "SAVE", "BGSAVE", "REPLICAOF"):
        assert f'rename-command {name} ""' in lines
    for needed in ("CLIENT", "INFO", "EVAL", "PUBLISH", "SUBSCRIBE", "SCAN", "FLUSHDB"):
        assert needed not in embedded_redis.DISABLED_COMMANDS


def test_bench_reads_the_url_from_the_file_the_log_names(tmp_path: Path) -> None:
    url_file = tmp_path / "url"
    url_file.write_text("redis://:pw@127.0.0.1:5555/0\n")
    log = tmp_path / "served.log"
    log.write_text(
        "... embedded Redis at redis://:***@127.0.0.1:5555/0 (no broker configured; "
        f"the URL with its password is in {url_file})\n"
    )
    assert floor.broker_url_from_log(log) == "redis://:pw@127.0.0.1:5555/0"
    url_file.unlink()
    assert floor.broker_url_from_log(log) is None
    assert floor.broker_url_from_log(tmp_path / "missing.log") is None
