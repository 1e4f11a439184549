"""Fencing on real processes: a primary whose manager freezes or dies stops accepting writes before
its lease can expire and another node can promote. A ledger records every acknowledged write and a
poller asks every node pg_is_in_recovery() every 200 ms: never two read-write nodes at once."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from appliance.demo.cluster import DemoCluster
from tests.integration.ha_helpers import (
    Ledger,
    WritablePoller,
    healthy,
    ledger_cluster,
    lost_writes,
    patch_config,
    program_pid,
    read_view,
    wait_until,
    writable_poller,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster() -> Iterator[DemoCluster]:
    with ledger_cluster() as c:
        yield c


def manager_pid(cluster: DemoCluster, node: str) -> int:
    pid = program_pid(cluster, node, "manager")
    assert pid is not None, f"no manager running on {node}"
    return pid


@dataclass
class Freeze:
    old: str
    new: str
    frozen_at: float
    poll: WritablePoller
    ledger: Ledger

    def first(self, node: str, writable: bool) -> float:
        """Seconds from the freeze to ``node``'s first sample answering ``writable``."""
        return next(at for at, w in self.poll.samples[node] if at >= self.frozen_at and w is writable) \
            - self.frozen_at


def freeze_manager(cluster: DemoCluster, seconds: float, start: int) -> Freeze:
    """SIGSTOP the primary's manager for ``seconds`` under a writer and the poller."""
    old = wait_until("a healthy cluster", lambda: healthy(cluster), 120)
    pid = manager_pid(cluster, old)
    with writable_poller(cluster) as poll, Ledger(cluster.dsn("primary"), start=start) as ledger:
        wait_until("acknowledged writes", lambda: len(ledger.acked) > 20, 30)
        os.kill(pid, signal.SIGSTOP)
        frozen_at = time.monotonic()
        try:
            new = wait_until("another leader", lambda: (v := read_view(cluster).leader_name) != old and v, 30)
            time.sleep(max(0.0, seconds - (time.monotonic() - frozen_at)))
        finally:
            os.kill(pid, signal.SIGCONT)
        before = len(ledger.acked)
        wait_until("writes on the new primary", lambda: ledger.acked_since(before) > 20, 60)
        wait_until("the old primary back as a replica", lambda: healthy(cluster) == new, 120)
    freeze = Freeze(old, str(new), frozen_at, poll, ledger)
    print(f"manager of {old} frozen {seconds}s: fenced after {freeze.first(old, False):.2f}s, "
          f"{new} read-write after {freeze.first(str(new), True):.2f}s")
    return freeze


def test_frozen_manager_is_fenced_before_another_node_promotes(cluster: DemoCluster) -> None:
    f = freeze_manager(cluster, 20, start=1)
    assert f.poll.rounds() > 50
    assert not f.poll.overlaps(), f"two read-write nodes at once: {f.poll.overlaps()[:5]}"
    assert f.first(f.old, False) < f.first(f.new, True)
    events = [e for e in read_events(cluster, f.old) if e.get("kind") == "fenced"]
    assert events, "the old primary's fencing left no event"


def test_frozen_manager_in_strict_sync_mode_loses_nothing(cluster: DemoCluster) -> None:
    wait_until("a healthy cluster", lambda: healthy(cluster), 120)
    patch_config(cluster, {"synchronous_mode": True, "synchronous_mode_strict": True})
    try:
        wait_until("a sync standby", lambda: (v := read_view(cluster)).sync is not None
                   and len(v.sync.sync_standby) == 1, 30)
        f = freeze_manager(cluster, 20, start=1_000_000)
        assert not f.poll.overlaps(), f"two read-write nodes at once: {f.poll.overlaps()[:5]}"
        missing = lost_writes(cluster, f.ledger)
        assert not missing, f"{len(missing)} acknowledged commits lost: {missing[:10]}"
    finally:
        patch_config(cluster, {"synchronous_mode": False, "synchronous_mode_strict": False})


def test_killed_manager_comes_back_without_a_failover(cluster: DemoCluster) -> None:
    old = wait_until("a healthy cluster", lambda: healthy(cluster), 120)
    with writable_poller(cluster) as poll, Ledger(cluster.dsn("primary"), start=2_000_000) as ledger:
        wait_until("acknowledged writes", lambda: len(ledger.acked) > 20, 30)
        os.kill(manager_pid(cluster, old), signal.SIGKILL)
        before = len(ledger.acked)
        wait_until("writes again", lambda: ledger.acked_since(before) > 50, 60)
    assert not poll.overlaps(), f"two read-write nodes at once: {poll.overlaps()[:5]}"
    assert read_view(cluster).leader_name == old
    assert not lost_writes(cluster, ledger)


def read_events(cluster: DemoCluster, node: str) -> list[dict[str, object]]:
    from tests.integration.ha_helpers import api_get

    return list(wait_until(f"{node}'s events", lambda: api_get(cluster, node, "/events"), 30))
