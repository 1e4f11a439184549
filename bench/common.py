"""Shared pieces of the benchmarks: a throw-away demo cluster and a write-gap probe."""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from appliance.demo.cluster import DemoCluster
from tests.support.cluster import KEEP_ENV, new_demo, teardown


@contextmanager
def fresh_cluster(up: bool = True, secure: bool = True) -> Iterator[DemoCluster]:
    """A demo for one benchmark, torn down at the end; after a failure its directory (logs, data)
    is kept and named on stderr, for the post-mortem."""
    cluster = new_demo(secure=secure)
    try:
        if up:
            cluster.up(wait=True, timeout=240)
        yield cluster
    except BaseException:
        os.environ[KEEP_ENV] = "1"
        print(f"the demo is kept for a post-mortem: {cluster.dir}", file=sys.stderr)
        raise
    finally:
        teardown_quiet(cluster)


def teardown_quiet(cluster: DemoCluster) -> None:
    saved = sys.stdout
    try:
        sys.stdout = open("/dev/null", "w")  # noqa: SIM115 - teardown prints every log tail
        teardown(cluster)
    finally:
        sys.stdout.close()
        sys.stdout = saved


def can_write(dsn: str) -> bool:
    try:
        with psycopg.connect(dsn, connect_timeout=1, autocommit=True) as conn:
            conn.execute("SET statement_timeout = '2s'")
            conn.execute("INSERT INTO bench_probe DEFAULT VALUES")
        return True
    except psycopg.Error:
        return False


def write_gap(dsn: str, limit: float = 120.0, interval: float = 0.05) -> float:
    """Seconds from now until a write through ``dsn`` succeeds again."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if can_write(dsn):
            return time.monotonic() - t0
        time.sleep(interval)
    raise TimeoutError(f"writes did not resume within {limit}s")


def report(name: str, samples: list[float], extra: dict[str, Any] | None = None) -> None:
    doc = {
        "benchmark": name,
        "runs": len(samples),
        "median_s": round(statistics.median(samples), 2),
        "min_s": round(min(samples), 2),
        "max_s": round(max(samples), 2),
        "samples_s": [round(s, 2) for s in samples],
        **(extra or {}),
    }
    print(json.dumps(doc))
