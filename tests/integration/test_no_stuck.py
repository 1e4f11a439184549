"""No stuck states on real processes: a primary that cannot run PostgreSQL gives the lock away within
primary_start_timeout (with back-off, not a tight loop), a killed postmaster restarts in place at the
first try, strict synchronous mode has no 10-s stall after the sync standby changes, and whole-cluster
stops and starts after switchovers and failovers leave every replica on the leader's timeline. Every
fault runs under a ledger writer and the two-primaries poller."""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from appliance.demo.cluster import DemoCluster
from appliance.net.http import request
from appliance.postgres.process import read_pid_file
from tests.integration.ha_helpers import (
    EventCollector,
    Ledger,
    api_get,
    fence_counts,
    haproxy_chkdown,
    healthy,
    ledger_cluster,
    lost_writes,
    patch_config,
    program_pid,
    read_view,
    replication_report,
    sql,
    wait_until,
    writable_poller,
)

pytestmark = pytest.mark.integration

START_TIMEOUT = 10  # primary_start_timeout for these tests


@pytest.fixture(scope="module")
def cluster() -> Iterator[DemoCluster]:
    with ledger_cluster() as c:
        yield c


def kill_postmaster(cluster: DemoCluster, node: str) -> int:
    found = read_pid_file(str(cluster.layout.data_dir(node)))
    assert found is not None, f"no postmaster.pid on {node}"
    os.kill(found.pid, signal.SIGKILL)
    return found.pid


def api(cluster: DemoCluster, node: str, method: str, path: str, body: Any = None) -> tuple[int, str]:
    answer = request(f"https://{cluster.layout.host(node)}:8008{path}", cluster.api_client(), method=method,
                     body=body, timeout=60)
    return answer.status, answer.body.decode()


def test_killed_postmaster_restarts_in_place_at_the_first_try(cluster: DemoCluster) -> None:
    old = wait_until("a healthy cluster", lambda: healthy(cluster), 120)
    with writable_poller(cluster) as poll, EventCollector(cluster) as events, \
            Ledger(cluster.dsn("primary"), start=1) as ledger:
        wait_until("acknowledged writes", lambda: len(ledger.acked) > 20, 30)
        killed_at = time.time()
        kill_postmaster(cluster, old)
        before = len(ledger.acked)
        wait_until("writes again", lambda: ledger.acked_since(before) > 20, 60)
        wait_until("a healthy cluster", lambda: healthy(cluster), 60)
    assert read_view(cluster).leader_name == old, "a killed postmaster alone must not cause a failover"
    starts = [e for e in events.of(old, "action", "StartPostgres") if e["ts"] >= killed_at]
    assert starts and starts[0]["ok"], f"the first start after the kill failed: {starts}"
    assert not [e for e in events.of(old, "retry") if e["ts"] >= killed_at], "a start job failed"
    assert not poll.overlaps()
    assert not lost_writes(cluster, ledger)  # the postmaster's crash recovery keeps every committed write


def test_a_killed_api_on_the_primary_is_not_marked_down(cluster: DemoCluster) -> None:
    """supervisord holds the API's socket: health checks wait for the restarted API instead of
    being refused, so HAProxy keeps routing writes to the primary (it used to cut 7 writes)."""
    old = wait_until("a healthy cluster", lambda: healthy(cluster), 120)
    before = haproxy_chkdown(cluster)
    with writable_poller(cluster) as poll, Ledger(cluster.dsn("primary"), start=400_000) as ledger:
        wait_until("acknowledged writes", lambda: len(ledger.acked) > 20, 30)
        failed = ledger.failed
        api_pid = program_pid(cluster, old, "api")
        assert api_pid is not None
        os.kill(api_pid, signal.SIGKILL)
        killed_at = time.monotonic()
        wait_until("the API answering again", lambda: api_get(cluster, old, "/patroni").get("role") == "primary", 30)
        back_after = time.monotonic() - killed_at
        time.sleep(3)
    print(f"API killed on the primary: answering again after {back_after:.1f}s; "
          f"longest write gap {ledger.longest_gap(killed_at):.2f}s")
    assert haproxy_chkdown(cluster) == before, "HAProxy marked the primary down while its API restarted"
    assert ledger.failed == failed, f"{ledger.failed - failed} writes failed"
    assert read_view(cluster).leader_name == old
    assert not poll.overlaps()


def test_a_primary_that_cannot_start_gives_the_lock_away_with_back_off(cluster: DemoCluster) -> None:
    """pg_control unreadable (a corrupt or vanished data directory): the start fails every time."""
    old = wait_until("a healthy cluster", lambda: healthy(cluster), 120)
    patch_config(cluster, {"primary_start_timeout": START_TIMEOUT})
    pg_control = cluster.layout.data_dir(old) / "global" / "pg_control"
    fences = fence_counts(cluster)
    with writable_poller(cluster) as poll, EventCollector(cluster) as events, \
            Ledger(cluster.dsn("primary"), start=100_000) as ledger:
        wait_until("acknowledged writes", lambda: len(ledger.acked) > 20, 30)
        os.chmod(pg_control, 0)  # PostgreSQL runs as postgres: it cannot read it any more
        try:
            killed_at = time.time()
            kill_postmaster(cluster, old)
            new = wait_until("another leader", lambda: (v := read_view(cluster).leader_name) != old and v,
                             START_TIMEOUT + 30)
            released_after = time.time() - killed_at
            before = len(ledger.acked)
            wait_until("writes on the new primary", lambda: ledger.acked_since(before) > 20, 60)
            # The old primary keeps failing meanwhile: it backs off further, and says so in /patroni.
            retries = []
            for _ in range(40):
                retries.append(api_get(cluster, old, "/patroni").get("retry"))
                time.sleep(0.2)
        finally:
            os.chmod(pg_control, 0o600)
        wait_until("the old primary back as a replica", lambda: healthy(cluster) == new, 120)
        rejoined_at = time.time()
        time.sleep(6)
    starts = [e["ts"] for e in events.of(old) if e.get("action") in ("StartPostgres", "Rewind")
              and e["ts"] >= killed_at and e["ts"] < rejoined_at]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    print(f"lock released {released_after:.1f}s after the kill; {len(starts)} start/rewind attempts, "
          f"gaps {[round(g, 1) for g in gaps]}")
    assert released_after < START_TIMEOUT + 10
    assert len(starts) <= 12, f"{len(starts)} attempts: no back-off"
    assert gaps and max(gaps) >= 4, f"attempts never backed off: gaps {gaps}"
    shown = [r for r in retries if r]
    assert shown and all(r["failures"] >= 1 and r["retry_in"] >= 0 for r in shown), retries
    assert [e for e in events.of(old, "retry") if e.get("failures", 0) >= 3]
    after = [e for e in events.of(old, "action", "Rewind") if e["ts"] >= rejoined_at]
    assert not after, f"the rejoined former primary keeps rewinding: {after}"
    assert not poll.overlaps(), poll.overlaps()[:3]
    print("fences:", {n: c - fences[n] for n, c in fence_counts(cluster).items()})
    patch_config(cluster, {"primary_start_timeout": 30})


def test_strict_sync_commits_flow_soon_after_the_sync_standby_changes(cluster: DemoCluster) -> None:
    """The sync standby stops: commits wait until the primary names the other standby, then flow
    at once (its next status reply used to come only after wal_receiver_status_interval, 10 s)."""
    primary = wait_until("a healthy cluster", lambda: healthy(cluster), 120)
    patch_config(cluster, {"synchronous_mode": True, "synchronous_mode_strict": True})
    first = wait_until("a synchronous standby in the sync key",
                       lambda: (v := read_view(cluster)).sync is not None and len(v.sync.sync_standby) == 1
                       and v.sync.sync_standby[0], 30)
    try:
        with writable_poller(cluster) as poll, Ledger(cluster.dsn("primary"), start=200_000) as ledger:
            wait_until("acknowledged writes", lambda: len(ledger.acked) > 20, 30)
            stopped_at = time.monotonic()
            cluster.supervisorctl(first, "stop", "manager")  # stops its PostgreSQL too
            wait_until("the other standby in the sync key",
                       lambda: (s := read_view(cluster).sync) is not None and s.sync_standby
                       and s.sync_standby[0] != first, 60)
            before = len(ledger.acked)
            wait_until("commits after the change", lambda: ledger.acked_since(before) > 20, 30)
        gap = ledger.longest_gap(since=stopped_at)
        print(f"strict sync: longest write gap {gap:.2f}s after the sync standby stopped")
        assert gap < 6, f"commits waited {gap:.1f}s for the new synchronous standby (the 10-s stall)"
        assert read_view(cluster).leader_name == primary
        assert not lost_writes(cluster, ledger)
        assert not poll.overlaps()
    finally:
        cluster.supervisorctl(first, "start", "manager")
        patch_config(cluster, {"synchronous_mode": False, "synchronous_mode_strict": False})
        wait_until("a healthy cluster", lambda: healthy(cluster), 120)


def _every_node_has(cluster: DemoCluster, marker: int) -> bool:
    for node in cluster.nodes:
        try:
            if not sql(cluster.node_dsn(node), "SELECT 1 FROM ledger WHERE id = %s", (marker,)):
                return False
        except Exception:
            return False
    return True


def _restart_everything(cluster: DemoCluster, marker: int) -> None:
    """Whole-cluster stop and start, then one write that every node must replay."""
    cluster.down()
    cluster.up(wait=True, timeout=180)
    leader = wait_until("a healthy cluster", lambda: healthy(cluster), 120)
    sql(cluster.dsn("primary"), "INSERT INTO ledger(id) VALUES (%s)", (marker,))
    try:
        wait_until(f"every node replaying the write after the restart (leader {leader})",
                   lambda: _every_node_has(cluster, marker), 60)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{replication_report(cluster)}") from None
    view = read_view(cluster)
    timelines = [h.timeline for h in view.history]
    leader_tl = next(m.timeline for m in view.members if m.name == view.leader_name)
    # The leader's lineage: increasing, up to the leader's timeline. It may skip a timeline that a
    # node created while the cluster stopped (a replica still running when the primary released its
    # key promotes) and that nobody followed: the next promotion reserves its ID (never two
    # different histories under one timeline), and that node is rewound.
    assert timelines == sorted(set(timelines)) and timelines[:1] == [1] and timelines[-1:] < [leader_tl or 1], \
        f"history {timelines} on leader timeline {leader_tl}"
    print(f"after restart {marker - 300_000}: history {timelines}, leader timeline {leader_tl}")
    for member in view.members:
        assert member.timeline == leader_tl, f"{member.name} on timeline {member.timeline}, leader {leader_tl}"


def test_whole_cluster_restarts_after_switchovers_and_failovers_keep_every_replica(cluster: DemoCluster) -> None:
    marker = 300_000
    for round_ in range(2):
        primary = wait_until("a healthy cluster", lambda: healthy(cluster), 120)
        candidate = next(n for n in cluster.nodes if n != primary)
        code, text = api(cluster, primary, "POST", "/switchover", {"leader": primary, "candidate": candidate})
        assert code == 200, text
        wait_until("the switchover done", lambda c=candidate: healthy(cluster) == c, 60)  # type: ignore[misc]
        marker += 1
        _restart_everything(cluster, marker)
        primary = wait_until("a healthy cluster", lambda: healthy(cluster), 120)
        cluster.kill(primary)
        wait_until("a failover", lambda p=primary: (v := read_view(cluster).leader_name) not in (None, p) and v,  # type: ignore[misc]
                   60)
        cluster.start(primary)
        wait_until("the old primary back", lambda: healthy(cluster), 120)
        marker += 1
        _restart_everything(cluster, marker)
        print(f"round {round_}: history {[h.timeline for h in read_view(cluster).history]}")
