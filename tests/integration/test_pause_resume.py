"""Maintenance mode on real processes: a resume that the primary's manager never saw (issue 11).

While paused the fencer obeys a paused lease order (pause: never touch PostgreSQL). The primary's
manager is frozen (SIGSTOP) while paused, the cluster is resumed through the DCS behind its back, and
its leader lease runs out. The other nodes race for the key; they must not promote beside a server that
still accepts writes, and once the manager thaws the cluster heals by itself. A poller asks every node
pg_is_in_recovery() every 200 ms: never two read-write nodes at once.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator

import pytest

from appliance.demo.cluster import DemoCluster
from tests.integration.ha_helpers import (
    Ledger,
    api_get,
    healthy,
    patch_config,
    program_pid,
    read_view,
    sql,
    try_write,
    wait_until,
    writable_poller,
)
from tests.support.cluster import demo_cluster

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster() -> Iterator[DemoCluster]:
    with demo_cluster(timeout=240) as c:
        sql(c.dsn("primary"), "CREATE TABLE ledger(id bigint PRIMARY KEY)")
        yield c


def _order_paused(cluster: DemoCluster, node: str) -> bool:
    try:
        order = json.loads((cluster.layout.run_dir(node) / "lease-order.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(order.get("paused"))


def test_a_resume_the_primarys_frozen_manager_never_saw(cluster: DemoCluster) -> None:
    old = wait_until("a healthy cluster", lambda: healthy(cluster), 120)
    view = read_view(cluster)
    ttl = float((view.config or {}).get("ttl", 5))
    pid = program_pid(cluster, old, "manager")
    assert pid is not None, f"no manager running on {old}"
    patch_config(cluster, {"pause": True})
    try:
        wait_until(f"{old}'s fencer disarmed by the pause", lambda: _order_paused(cluster, old), 30)
        with writable_poller(cluster) as poll, Ledger(cluster.dsn("primary")) as ledger:
            wait_until("acknowledged writes", lambda: len(ledger.acked) > 20, 30)
            os.kill(pid, signal.SIGSTOP)
            frozen_at = time.monotonic()
            try:
                patch_config(cluster, {"pause": False})  # behind the frozen manager's back
                wait_until(f"{old}'s leader key gone", lambda: read_view(cluster).leader_name != old, 3 * ttl)
                time.sleep(3 * ttl)  # the others race, again and again
                taken = read_view(cluster).leader_name
                answer = api_get(cluster, old, "/patroni")
            finally:
                os.kill(pid, signal.SIGCONT)
            thawed_at = time.monotonic()
            primary = wait_until("one primary and two streaming replicas", lambda: healthy(cluster), 120)
            before = len(ledger.acked)
            wait_until("writes through HAProxy again", lambda: ledger.acked_since(before) > 20, 60)
        healed = time.monotonic() - thawed_at
        # The thawed manager finds the key free and its server still running as primary: it takes the
        # key again, or, if a replica already received more WAL than it read of its own, hands over.
        print(f"manager of {old} frozen {thawed_at - frozen_at:.1f}s across the resume; {primary} primary "
              f"{healed:.1f}s after the thaw")
        assert poll.rounds() > 50
        assert not poll.overlaps(), f"two read-write nodes at once: {poll.overlaps()[:5]}"
        assert taken is None, f"{taken} took the key beside a writable primary"
        # What the racers heard from the old primary's API: its manager's state is stale, its server writable.
        assert answer.get("state") == "unknown" and answer.get("postgres_writable") is True, answer
    finally:
        patch_config(cluster, {"pause": False})


def _crash_takeover(cluster: DemoCluster, resume: bool, start: int) -> float:
    """Freeze the primary's manager (its lease starts to run out), resume the cluster behind its back
    when ``resume`` (else no pause at all), and crash the node: seconds from the freeze until another
    node answers read-write. The racers ask the crashed node (gone from the DCS) in every race: on
    loopback its API refuses at once."""
    old = wait_until("a healthy cluster", lambda: healthy(cluster), 120)
    pid = program_pid(cluster, old, "manager")
    assert pid is not None
    if resume:
        patch_config(cluster, {"pause": True})
        wait_until(f"{old}'s fencer disarmed by the pause", lambda: _order_paused(cluster, old), 30)
    try:
        with writable_poller(cluster) as poll, Ledger(cluster.dsn("primary"), start=start) as ledger:
            wait_until("acknowledged writes", lambda: len(ledger.acked) > 20, 30)
            os.kill(pid, signal.SIGSTOP)
            frozen_at = time.monotonic()
            if resume:
                patch_config(cluster, {"pause": False})
            cluster.kill(old)
            new = wait_until("another node read-write", lambda: next(
                (n for n in cluster.nodes if n != old and poll.writable_at(n, time.monotonic())), None), 60)
            took = next(at for at, w in poll.samples[new] if at >= frozen_at and w) - frozen_at
        assert not poll.overlaps(), f"two read-write nodes at once: {poll.overlaps()[:5]}"
    finally:
        patch_config(cluster, {"pause": False})
        cluster.start(old)
    wait_until("one primary and two streaming replicas", lambda: healthy(cluster), 180)
    return took


def test_a_crash_right_after_a_resume_fails_over(cluster: DemoCluster) -> None:
    """A crash with and without a resume just before: another node takes over, never two writable
    (asserted inside). The two durations are printed, not compared: on this shared machine they
    ranged over 4.4-8.0 s either way, the loop's phase and the load outweighing any difference."""
    plain = _crash_takeover(cluster, resume=False, start=1_000_000)
    resumed = _crash_takeover(cluster, resume=True, start=2_000_000)
    print(f"read-write elsewhere after the freeze and crash: {plain:.2f}s without a pause, "
          f"{resumed:.2f}s right after a resume")


def test_an_etcd_outage_during_maintenance_touches_nothing(cluster: DemoCluster) -> None:
    """Paused, a primary cut off from the DCS keeps running while the other members answer it (it
    demotes only when none does: then it cannot know whether the pause still holds)."""
    old = wait_until("a healthy cluster", lambda: healthy(cluster), 120)
    ttl = float((read_view(cluster).config or {}).get("ttl", 5))
    patch_config(cluster, {"pause": True})
    try:
        wait_until(f"{old}'s fencer disarmed by the pause", lambda: _order_paused(cluster, old), 30)
        for node in cluster.nodes:
            res = cluster.supervisorctl(node, "stop", "etcd")
            assert res.returncode == 0, res.stdout + res.stderr
        try:
            t0, n, failed = time.monotonic(), 3_000_000, []
            while time.monotonic() - t0 < 4 * ttl:
                if not try_write(cluster.node_dsn(old), n):
                    failed.append(round(time.monotonic() - t0, 1))
                n += 1
                time.sleep(0.2)
            assert not failed, f"writes to the paused primary failed during the etcd outage at {failed[:5]}s"
        finally:
            for node in cluster.nodes:
                cluster.supervisorctl(node, "start", "etcd")
        assert wait_until("the DCS back", lambda: read_view(cluster).config is not None, 60)
    finally:
        patch_config(cluster, {"pause": False})
    assert wait_until("one primary and two streaming replicas", lambda: healthy(cluster), 120) == old
