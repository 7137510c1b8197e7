"""`autodep bench --scenario soak`, short: a real `autodep serve`, its capacity measured, a
light open-loop load for 18 s, then the JSON (structure and plausibility) and the PNG. The
figures of a real soak come from a 10-minute run (bench/results/soak-*.json); this checks that
every metric is sampled from the processes and the Redis of the serve it started."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(240)

ROLES = {"serve", "redis", "web-master", "web-worker", "celery-parent", "pool-child"}


def test_short_soak_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "results"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTODEP_")}
    argv = [sys.executable, "-m", "autodep_celery.cli", "bench", "--scenario", "soak"]
    argv += ["--minutes", "0.3", "--quick", "--load-fraction", "0.2", "--sample-every-s", "2"]
    argv += ["--models", str(tmp_path / "models"), "--out", str(out), "--name", "soak"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=200)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Redis keys" in done.stdout and "RSS pool-child" in done.stdout
    assert (out / "soak.png").stat().st_size > 10_000
    r = json.loads((out / "soak.json").read_text())
    assert r["scenario"] == "soak" and r["options"]["workload"] == "tiny"
    capacity = r["capacity"]["req_per_s"]
    assert capacity > 10
    assert r["options"]["rate_rps"] == pytest.approx(0.2 * capacity)
    f = r["figures"]
    assert f["complete"] and f["measured_s"] == pytest.approx(18)
    (minute,) = f["minutes"]
    sent = f["outcomes"]["sent"]
    assert minute["sent"] == sent and sent == pytest.approx(18 * r["options"]["rate_rps"], abs=2)
    assert f["errors"] == 0 and f["outcomes"]["ok"] == sent
    assert 0 < minute["p50_ms"] <= minute["p99_ms"] <= minute["max_ms"]
    assert set(f["rss"]) == ROLES  # the whole tree, each process given its role
    for role, g in f["rss"].items():
        assert g["total"]["start"] > 0 and g["verdict"] in ("bounded", "growing"), role
        assert g["processes"]["start"] >= 1
    assert f["rss"]["web-worker"]["processes"]["start"] == 2  # [web] processes default
    assert set(f["redis"]) == {"redis_memory_mb", "redis_clients", "redis_keys"}
    assert f["redis"]["redis_clients"]["start"] >= 3  # web, workers, autoscaler, this probe
    assert f["redis"]["redis_keys"]["start"] >= 1
    assert set(f["verdicts"]) == {f"rss:{role}" for role in ROLES} | set(f["redis"])
    assert not f["fit_window_enough"]  # 9 s of fit: said to be too short to judge
    # samples from before the load (server ready) to after it (the idle tail)
    ts = [s["t_s"] for s in r["samples"]]
    assert ts[0] < 0 < 18 < ts[-1]
    assert all(s["redis"] is not None for s in r["samples"])
    patterns = r["redis_key_patterns"]
    assert "autodep:schema:tiny" in patterns["before"] and patterns["after"]
    assert r["machine"]["loadavg_at_end"]
