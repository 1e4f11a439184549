"""A primary whose pg_wal filesystem fills up (a real small tmpfs): PostgreSQL PANICs, the manager
restarts it in place with back-off, hands the key over after primary_start_timeout, and once space
is freed the node rejoins as a replica without re-running pg_rewind. Under a ledger writer and the
two-primaries poller, in strict synchronous mode: no acknowledged write is lost."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import psycopg
import pytest

from appliance.demo.cluster import DemoCluster
from appliance.net.http import request
from tests.integration.ha_helpers import (
    EventCollector,
    Ledger,
    healthy,
    lost_writes,
    patch_config,
    read_view,
    sql,
    wait_until,
    writable_poller,
)
from tests.support.cluster import demo_cluster
from tests.support.walfs import fill, move_wal_to_tmpfs, wal_mounts, wal_on

pytestmark = pytest.mark.integration

START_TIMEOUT = 10


class WalFlood:
    """Big inserts through HAProxy 5000 until stopped: WAL far faster than the ledger alone."""

    def __init__(self, dsn: str) -> None:
        self.dsn, self.errors = dsn, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                sql(self.dsn, "INSERT INTO junk SELECT g, repeat('x', 1800) FROM generate_series(1, 4000) g",
                    timeout=2)
            except psycopg.Error:
                self.errors += 1
                time.sleep(0.2)

    def __enter__(self) -> WalFlood:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def test_a_full_pg_wal_hands_the_primary_over_and_the_node_rejoins() -> None:
    with wal_mounts(["full"]) as mounts, demo_cluster(timeout=240) as cluster:
        _scenario(cluster, mounts["full"])


def _scenario(cluster: DemoCluster, mount: Path) -> None:
    sql(cluster.dsn("primary"), "CREATE TABLE ledger(id bigint PRIMARY KEY)")
    sql(cluster.dsn("primary"), "CREATE TABLE junk(id int, pad text)")
    patch_config(cluster, {"primary_start_timeout": START_TIMEOUT})
    first = wait_until("a healthy cluster", lambda: healthy(cluster), 120)
    full = next(n for n in cluster.nodes if n != first)
    move_wal_to_tmpfs(cluster, {full: mount})
    wait_until(f"{full} streaming again", lambda: healthy(cluster), 120)
    assert wal_on(cluster, full, mount)
    # Make the node with the small pg_wal the primary.
    dcs_leader = read_view(cluster).leader_name
    answer = wait_until(f"the switchover to {full} accepted", lambda: (r := request(
        f"https://{cluster.layout.host(dcs_leader or first)}:8008/switchover", cluster.api_client(), method="POST",
        body={"leader": dcs_leader, "candidate": full}, timeout=60)).status == 200 and r, 30, interval=1)
    assert answer.status == 200, answer.body
    wait_until(f"{full} as primary with two replicas", lambda: healthy(cluster) == full, 120)
    patch_config(cluster, {"synchronous_mode": True, "synchronous_mode_strict": True})
    wait_until("a synchronous standby", lambda: (v := read_view(cluster)).sync is not None
               and v.sync.leader == full and v.sync.sync_standby, 60)
    with writable_poller(cluster) as poll, EventCollector(cluster) as events, \
            Ledger(cluster.dsn("primary"), start=1) as ledger:
        wait_until("acknowledged writes", lambda: len(ledger.acked) > 20, 30)
        filler = fill(mount, leave_mb=40)
        filled_at = time.time()
        with WalFlood(cluster.dsn("primary")):
            new = wait_until("another leader", lambda: (v := read_view(cluster).leader_name) != full and v,
                             START_TIMEOUT + 60)
            handed_after = time.time() - filled_at
            before = len(ledger.acked)
            wait_until("writes on the new primary", lambda: ledger.acked_since(before) > 20, 60)
        time.sleep(3)  # the full node keeps failing meanwhile, backing off
        filler.unlink()
        wait_until(f"{full} back as a replica", lambda: healthy(cluster) == new, 180)
        rejoined_at = time.time()
        time.sleep(8)
    starts = [e["ts"] for e in events.of(full) if e.get("action") in ("StartPostgres", "Rewind")
              and filled_at <= e["ts"] < rejoined_at]
    gaps = [round(b - a, 1) for a, b in itertools.pairwise(starts)]
    print(f"key handed over {handed_after:.1f}s after the disk filled; {len(starts)} start/rewind attempts, "
          f"gaps {gaps}")
    assert not poll.overlaps(), poll.overlaps()[:3]
    assert lost_writes(cluster, ledger) == []
    assert len(starts) <= 12, f"{len(starts)} attempts: no back-off"
    assert [e for e in events.of(full, "retry")], "no back-off event from the full node"
    after = [e for e in events.of(full, "action", "Rewind") if e["ts"] >= rejoined_at]
    assert not after, f"the rejoined node keeps rewinding: {after}"
