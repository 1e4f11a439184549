"""Three minutes of the chaos run (bench/chaos.py) in strict synchronous mode: random faults of
every kind under pgbench and the ledger writer. Never an acknowledged write lost, never two
writable nodes, no failover that no fault asked for, and the cluster healthy at the end."""

from __future__ import annotations

import json
import os

import pytest

from bench.chaos import chaos
from tests.integration.ha_helpers import healthy, wait_until
from tests.support.cluster import demo_cluster

pytestmark = pytest.mark.integration


def test_three_minutes_of_chaos_in_strict_mode() -> None:
    seed = int(os.environ.get("APPLIANCE_CHAOS_SEED", "20261203"))
    with demo_cluster(timeout=240) as cluster:
        doc = chaos(cluster, 180, "strict", seed, (5.0, 15.0))
        print(json.dumps(doc))
        assert doc["faults"] >= 4
        assert doc["lost"] == 0, doc
        assert doc["two_writable_seconds"] == 0, doc
        assert doc["false_failovers"] == [], doc
        wait_until("a healthy cluster at the end", lambda: healthy(cluster), 120)
