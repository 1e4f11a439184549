"""The HA core on real processes: three demo nodes (etcd, manager, API, PostgreSQL) plus HAProxy."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from appliance.demo.cluster import DemoCluster
from tests.integration.ha_helpers import (
    Ledger,
    api_get,
    fence_counts,
    healthy,
    ledger_cluster,
    lost_writes,
    patch_config,
    published_lease_expiry,
    read_view,
    sql,
    try_write,
    wait_until,
)
from tests.support.cluster import demo_cluster

pytestmark = pytest.mark.integration

TTL = 5


@pytest.fixture(scope="module")
def cluster() -> Iterator[DemoCluster]:
    with ledger_cluster() as c:
        yield c


def test_bootstrap_forms_one_primary_two_streaming_replicas(cluster: DemoCluster) -> None:
    primary = wait_until("a healthy cluster", lambda: healthy(cluster), 60)
    # The fencer is the last resort: a bootstrap must never have needed it.
    assert fence_counts(cluster) == dict.fromkeys(cluster.nodes, 0)
    view = read_view(cluster)
    assert view.leader_name == primary
    sysid = sql(cluster.node_dsn(primary), "SELECT system_identifier::text FROM pg_control_system()")[0][0]
    assert view.initialize == sysid
    assert {m.name for m in view.members} == set(cluster.nodes)
    assert view.config is not None and view.config["ttl"] == TTL
    slots = {r[0] for r in sql(cluster.node_dsn(primary), "SELECT slot_name FROM pg_replication_slots WHERE active")}
    assert slots == set(cluster.nodes) - {primary}
    sql(cluster.dsn("primary"), "INSERT INTO ledger VALUES (0)")
    wait_until("the row on a replica through 5001",
               lambda: sql(cluster.dsn("replicas"), "SELECT count(*) FROM ledger WHERE id = 0")[0][0] == 1, 10)
    assert sql(cluster.dsn("replicas"), "SELECT pg_is_in_recovery()")[0][0] is True


def test_kill_primary_fails_over_and_old_primary_rejoins(cluster: DemoCluster) -> None:
    old = wait_until("a healthy cluster", lambda: healthy(cluster), 60)
    old_tl = read_view(cluster).member(old).timeline  # type: ignore[union-attr]
    cluster.kill(old)
    t0 = time.monotonic()
    wait_until("writes through 5000", lambda: try_write(cluster.dsn("primary"), 1_000_000 + int(time.time())), 60)
    gap = time.monotonic() - t0
    new = read_view(cluster).leader_name
    assert new is not None and new != old
    print(f"write gap after kill -9 of the primary node: {gap:.1f}s")
    cluster.start(old)
    wait_until("the old primary back as a replica", lambda: healthy(cluster) == new, 90)
    view = read_view(cluster)
    member = view.member(old)
    assert member is not None and member.role == "replica" and member.timeline == view.member(new).timeline  # type: ignore[union-attr]
    assert member.timeline is not None and old_tl is not None and member.timeline > old_tl
    assert view.history and view.history[-1].new_leader == new


def test_two_failovers_in_a_row_never_wipe_a_replica(cluster: DemoCluster) -> None:
    """Regression: a replica that followed the first new primary saw a stale timeline once that one
    died too, took itself for diverged and re-cloned (wiping its data) from an unreachable leader."""
    fences = fence_counts(cluster)
    for _ in range(2):
        primary = wait_until("a healthy cluster", lambda: healthy(cluster), 120)
        cluster.kill(primary)
        wait_until("writes through 5000", lambda: try_write(cluster.dsn("primary"), 3_000_000 + int(time.time() * 10)),
                   60)
        cluster.start(primary)
    wait_until("a healthy cluster", lambda: healthy(cluster), 120)
    for node in cluster.nodes:
        kinds = {e.get("action") for e in api_get(cluster, node, "/events")}
        assert "Reinitialize" not in kinds, f"{node} re-cloned its data directory"
    # A crash is the HA loop's business: the fencer never had to act (not even on the restarted
    # node, whose rewind runs a single-user postgres).
    assert fence_counts(cluster) == fences


def test_primary_cut_off_from_etcd_stops_writes_before_lease_expiry(cluster: DemoCluster) -> None:
    primary = wait_until("a healthy cluster", lambda: healthy(cluster), 60)
    others = [n for n in cluster.nodes if n != primary]
    assert try_write(cluster.node_dsn(primary), 2_000_000)
    for node in others:  # the primary's own etcd member loses quorum: no DCS for it
        res = cluster.supervisorctl(node, "stop", "etcd")
        assert res.returncode == 0, res.stdout + res.stderr
    t0 = time.monotonic()
    latest_expiry = 0.0
    n = 2_000_001
    while time.monotonic() - t0 < 3 * TTL:
        latest_expiry = max(latest_expiry, published_lease_expiry(cluster, primary))
        if not try_write(cluster.node_dsn(primary), n):
            break
        n += 1
        time.sleep(0.05)
    rejected_at = time.monotonic()
    print(f"primary stopped accepting writes {rejected_at - t0:.2f}s after losing etcd, "
          f"{latest_expiry - rejected_at:.2f}s before its lease could expire")
    # Clocks: CLOCK_MONOTONIC is shared by every process on this host. The lease cannot expire on
    # the etcd side before the manager's last successful renewal + ttl, which is what it publishes.
    assert latest_expiry > 0, "the primary never published a lease"
    assert rejected_at < latest_expiry, f"writes accepted {rejected_at - latest_expiry:.2f}s past the lease"
    for node in others:
        cluster.supervisorctl(node, "start", "etcd")
    wait_until("the cluster to heal", lambda: healthy(cluster), 120)


def test_sync_strict_loses_no_acknowledged_commit_across_failover(cluster: DemoCluster) -> None:
    wait_until("a healthy cluster", lambda: healthy(cluster), 60)
    patch_config(cluster, {"synchronous_mode": True, "synchronous_mode_strict": True})
    wait_until("a synchronous standby in the sync key",
               lambda: (v := read_view(cluster)).sync is not None and len(v.sync.sync_standby) == 1, 30)
    with Ledger(cluster.dsn("primary")) as ledger:
        wait_until("some acknowledged writes", lambda: len(ledger.acked) > 50, 30)
        old = read_view(cluster).leader_name
        assert old is not None
        sync_standby = read_view(cluster).sync.sync_standby  # type: ignore[union-attr]
        cluster.kill(old)
        before = len(ledger.acked)
        wait_until("writes resuming on the new primary", lambda: ledger.acked_since(before) > 20, 90)
    new = read_view(cluster).leader_name
    assert new in sync_standby, f"{new} promoted but the sync key named {sync_standby}"
    lost = lost_writes(cluster, ledger)
    assert not lost, f"{len(lost)} acknowledged commits lost: {lost[:10]}"
    cluster.start(old)
    wait_until("the old primary back", lambda: healthy(cluster), 120)
    patch_config(cluster, {"synchronous_mode": False, "synchronous_mode_strict": False})


def test_lagging_replica_never_wins() -> None:
    with demo_cluster(timeout=240) as c:
        primary = wait_until("a healthy cluster", lambda: healthy(c), 60)
        ok_replica, lagging = [n for n in c.nodes if n != primary]
        c.stop(lagging)
        sql(c.dsn("primary"),
            "CREATE TABLE filler AS SELECT g, repeat('x', 100) AS pad FROM generate_series(1, 60000) g")
        optime = sql(c.node_dsn(primary), "SELECT pg_current_wal_flush_lsn() - '0/0'::pg_lsn")[0][0]
        wait_until("status optime published", lambda: (read_view(c).status.optime or 0) >= optime, 15)
        for node in (ok_replica, primary):  # the healthy candidates leave; the primary releases the key
            res = c.supervisorctl(node, "stop", "manager")
            assert res.returncode == 0, res.stdout + res.stderr
        c.start(lagging)
        wait_until(f"{lagging} running read-only",
                   lambda: any(m["name"] == lagging and m["state"] == "running" for m in c.status()["members"]), 60)
        deadline = time.monotonic() + 3 * TTL
        while time.monotonic() < deadline:
            view = read_view(c)
            assert view.leader is None, f"{view.leader_name} took the leader key"
            time.sleep(0.5)
        events = api_get(c, lagging, "/events")
        assert any("maximum_lag_on_failover" in e.get("reason", "") for e in events), events[-5:]
        c.supervisorctl(primary, "start", "manager")
        wait_until("the up-to-date node to lead again", lambda: read_view(c).leader_name == primary, 60)
