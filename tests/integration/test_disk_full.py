"""A primary whose pg_wal filesystem fills up (a real small tmpfs): PostgreSQL PANICs, the manager
restarts it in place with back-off, hands the key over after primary_start_timeout, and once space
is freed the node rejoins as a replica without re-running pg_rewind. Under a ledger writer and the
two-primaries poller, in strict synchronous mode: no acknowledged write is lost."""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
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
    api_get,
    healthy,
    lost_writes,
    patch_config,
    read_view,
    sql,
    wait_until,
    writable_poller,
)
from tests.support.cluster import demo_cluster

pytestmark = pytest.mark.integration

START_TIMEOUT = 10
WAL_FS_MB = 320  # room for wal_keep_size (128MB) and max_wal_size's recycled segments
PG_BIN = "/usr/lib/postgresql/15/bin"


def _as_postgres(*argv: str) -> None:
    subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True, capture_output=True, timeout=120)


def _move_wal_to_tmpfs(cluster: DemoCluster, node: str, mount: Path) -> None:
    """With the cluster paused, stop the node's PostgreSQL, put pg_wal on the tmpfs, and let it start again."""
    patch_config(cluster, {"pause": True})
    wait_until("every node paused", lambda: all(api_get(cluster, n, "/patroni").get("pause") for n in cluster.nodes),
               30)
    data = cluster.layout.data_dir(node)
    _as_postgres(f"{PG_BIN}/pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={WAL_FS_MB}m,mode=0700", "tmpfs", str(mount)], check=True)
    shutil.chown(mount, "postgres", "postgres")
    subprocess.run(["cp", "-a", f"{data / 'pg_wal'}/.", str(mount)], check=True)
    shutil.rmtree(data / "pg_wal")
    os.symlink(mount, data / "pg_wal")
    owner = pwd.getpwnam("postgres")
    os.lchown(data / "pg_wal", owner.pw_uid, owner.pw_gid)
    patch_config(cluster, {"pause": False})


def _fill(mount: Path, leave_mb: int) -> Path:
    """A filler file that leaves ``leave_mb`` MB free on the tmpfs."""
    free = shutil.disk_usage(mount).free
    filler = mount / "filler"
    size = max(0, free - leave_mb * 1024 * 1024)
    with open(filler, "wb") as fh:
        chunk = b"\0" * (1 << 20)
        for _ in range(size >> 20):
            fh.write(chunk)
    return filler


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
    mount = Path(tempfile.mkdtemp(prefix="pgwal-", dir="/var/tmp"))
    try:
        with demo_cluster(timeout=240) as cluster:
            _scenario(cluster, mount)
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            subprocess.run(["umount", str(mount)], check=True, capture_output=True)
        shutil.rmtree(mount, ignore_errors=True)


def _scenario(cluster: DemoCluster, mount: Path) -> None:
    sql(cluster.dsn("primary"), "CREATE TABLE ledger(id bigint PRIMARY KEY)")
    sql(cluster.dsn("primary"), "CREATE TABLE junk(id int, pad text)")
    patch_config(cluster, {"primary_start_timeout": START_TIMEOUT})
    first = wait_until("a healthy cluster", lambda: healthy(cluster), 120)
    full = next(n for n in cluster.nodes if n != first)
    _move_wal_to_tmpfs(cluster, full, mount)
    wait_until(f"{full} streaming again", lambda: healthy(cluster), 120)
    assert (cluster.layout.data_dir(full) / "pg_wal").is_symlink()
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
        filler = _fill(mount, leave_mb=40)
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
