"""failsafe_mode on real processes: with every etcd member down, the primary keeps accepting writes
while every member confirms it over REST (POST /failsafe), and stops as soon as one cannot; never
two writable nodes, nothing acknowledged lost."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from appliance.demo.cluster import DemoCluster
from tests.integration.ha_helpers import (
    Ledger,
    api_get,
    healthy,
    ledger_cluster,
    lost_writes,
    patch_config,
    read_view,
    sql,
    wait_until,
    writable_poller,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster() -> Iterator[DemoCluster]:
    with ledger_cluster() as c:
        yield c


def writable(dsn: str) -> bool:
    try:
        return bool(sql(dsn, "SELECT NOT pg_is_in_recovery()", timeout=2)[0][0])
    except Exception:
        return False


def test_failsafe_keeps_the_primary_while_every_member_confirms_it(cluster: DemoCluster) -> None:
    primary = wait_until("a healthy cluster", lambda: healthy(cluster), 120)
    replica = next(n for n in cluster.nodes if n != primary)
    patch_config(cluster, {"failsafe_mode": True})
    wait_until("the failsafe key lists every member",
               lambda: len(read_view(cluster).failsafe or {}) == len(cluster.nodes), 30)
    with writable_poller(cluster) as poll, \
            Ledger(cluster.dsn("primary")) as ledger:
        wait_until("acknowledged writes", lambda: len(ledger.acked) > 20, 30)
        for node in cluster.nodes:
            cluster.supervisorctl(node, "stop", "etcd")
        cut_at = time.monotonic()
        try:
            time.sleep(20)  # four ttl: without failsafe the primary demotes after retry_timeout
            assert writable(cluster.node_dsn(primary)), "the primary stopped although every member confirmed it"
            assert ledger.longest_gap(since=cut_at + 1) < 3, "writes stalled during the failsafe episode"
            assert api_get(cluster, primary, "/patroni").get("failsafe_mode_is_active") is True
            # One member cannot confirm any more: the primary must stop accepting writes.
            cluster.supervisorctl(replica, "stop", "api")
            lost_api = time.monotonic()
            wait_until("the primary to stop accepting writes", lambda: not writable(cluster.node_dsn(primary)), 20)
            stopped_after = time.monotonic() - lost_api
        finally:
            cluster.supervisorctl(replica, "start", "api")
            for node in cluster.nodes:
                cluster.supervisorctl(node, "start", "etcd")
        print(f"failsafe: primary read-only {stopped_after:.1f}s after a member stopped confirming it")
        wait_until("a healthy cluster", lambda: healthy(cluster), 120)
        before = len(ledger.acked)
        wait_until("writes again", lambda: ledger.acked_since(before) > 20, 60)
    assert not poll.overlaps(), poll.overlaps()[:3]
    assert not lost_writes(cluster, ledger)
    patch_config(cluster, {"failsafe_mode": False})


def test_without_failsafe_a_dcs_outage_demotes_the_primary(cluster: DemoCluster) -> None:
    primary = wait_until("a healthy cluster", lambda: healthy(cluster), 120)
    for node in cluster.nodes:
        cluster.supervisorctl(node, "stop", "etcd")
    try:
        wait_until("the primary to stop accepting writes", lambda: not writable(cluster.node_dsn(primary)), 20)
    finally:
        for node in cluster.nodes:
            cluster.supervisorctl(node, "start", "etcd")
    wait_until("a healthy cluster", lambda: healthy(cluster), 120)
