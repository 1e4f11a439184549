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
        print(f"manager of {old} frozen {thawed_at - frozen_at:.1f}s across the resume; {primary} primary "
              f"{healed:.1f}s after the thaw")
        assert poll.rounds() > 50
        assert not poll.overlaps(), f"two read-write nodes at once: {poll.overlaps()[:5]}"
        assert taken is None, f"{taken} took the key beside a writable primary"
        # What the racers heard from the old primary's API: its manager's state is stale, its server writable.
        assert answer.get("state") == "unknown" and answer.get("postgres_writable") is True, answer
        assert primary == old  # it never stopped accepting writes: it takes the key again
    finally:
        patch_config(cluster, {"pause": False})
