"""synchronous_mode: quorum on real processes: three demo nodes (etcd, manager, API, PostgreSQL,
HAProxy). PATCH /config turns it on; the primary runs ANY 1 of both standbys and the sync key lists
them as voters with quorum 1; every node answers /quorum, /read-only-quorum (and /sync, /async) as
Patroni does and exports patroni_quorum_standby; then the primary's whole node is killed -9 under a
writer: one of the voters takes over, no acknowledged commit is lost, never two writable nodes."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from appliance.demo.cluster import DemoCluster
from appliance.net.http import Answer, request
from tests.integration.ha_helpers import (
    Ledger,
    api_get,
    healthy,
    lost_writes,
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


def _api(cluster: DemoCluster, node: str, path: str, method: str = "GET", body: object = None) -> Answer:
    return request(f"https://{cluster.layout.host(node)}:8008{path}", cluster.api_client(), method=method,
                   body=body, timeout=3)


def _settled(cluster: DemoCluster, primary: str, standbys: list[str], quorum: int) -> bool:
    view = read_view(cluster)
    ssn = sql(cluster.node_dsn(primary), "SHOW synchronous_standby_names")[0][0]
    names = ",".join(f'"{n}"' for n in standbys)
    return (view.sync is not None and view.sync.leader == primary and list(view.sync.sync_standby) == standbys
            and view.sync.quorum == quorum and ssn == f"ANY 1 ({names})")


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{name}\{{[^}}]*\}} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not exported"
    return float(match.group(1))


def test_quorum_mode_answers_and_survives_a_primary_kill(cluster: DemoCluster) -> None:
    primary = wait_until("a healthy cluster", lambda: healthy(cluster), 60)
    standbys = sorted(n for n in cluster.nodes if n != primary)
    patched = _api(cluster, primary, "/config", "PATCH", {"synchronous_mode": "quorum",
                                                         "synchronous_mode_strict": True})
    assert patched.status == 200, patched.body
    wait_until("ANY 1 of both standbys, both voters with quorum 1", lambda: _settled(cluster, primary, standbys, 1), 30)
    states = sql(cluster.node_dsn(primary), "SELECT application_name, sync_state FROM pg_stat_replication")
    assert sorted(states) == [(n, "quorum") for n in standbys]

    wait_until("every node's API has seen the sync key",
               lambda: all(api_get(cluster, n, "/patroni").get("quorum_standby") for n in standbys), 15)
    expected = {  # path: (code on the primary, code on a standby)
        "/quorum": (503, 200), "/read-only-quorum": (200, 200), "/sync": (503, 503),
        "/read-only-sync": (200, 503), "/async": (503, 503), "/replica": (503, 200),
    }
    for node in cluster.nodes:
        role = 0 if node == primary else 1
        for path, codes in expected.items():
            got = _api(cluster, node, path)
            assert got.status == codes[role], f"{path} on {node}: {got.status} {got.body!r}"
            if got.status == 503:
                assert got.json().get("reason"), f"{path} on {node}: a 503 without a reason"
            head = _api(cluster, node, path, "HEAD")
            assert head.status == codes[role] and head.body == b""
        metrics = _api(cluster, node, "/metrics").body.decode()
        assert _metric(metrics, "patroni_quorum_standby") == role
        assert _metric(metrics, "patroni_sync_standby") == 0
    assert "synchronous_mode is quorum" in _api(cluster, standbys[0], "/sync").json()["reason"]
    # The primary publishes the view it read at the start of a loop: the one that wrote the voters
    # shows them in its next loop's /cluster (seconds later on this loaded machine).
    want = {primary: "leader", **dict.fromkeys(standbys, "quorum_standby")}
    wait_until("the primary's /cluster showing both quorum standbys",
               lambda: {m["name"]: m["role"] for m in api_get(cluster, primary, "/cluster")["members"]} == want, 15)

    with writable_poller(cluster) as poll, Ledger(cluster.dsn("primary")) as ledger:
        wait_until("some acknowledged writes", lambda: len(ledger.acked) > 50, 30)
        cluster.kill(primary)
        before = len(ledger.acked)
        wait_until("writes resuming on the new primary", lambda: ledger.acked_since(before) > 20, 90)
    new = read_view(cluster).leader_name
    assert new in standbys, f"{new} took over; the voters were {standbys}"
    lost = lost_writes(cluster, ledger)
    assert not lost, f"{len(lost)} acknowledged commits lost: {lost[:10]}"
    assert not poll.overlaps(), f"two writable nodes: {poll.overlaps()[:3]}"
    survivor = next(n for n in standbys if n != new)
    wait_until("the new primary's quorum: ANY 1 of the standby left, its only voter",
               lambda: _settled(cluster, new, [survivor], 0), 30)
