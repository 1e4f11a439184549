"""etcd member start plan: static bootstrap, restart from data, wiped-member rejoin, refusal without quorum."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from appliance.runtime.etcd_join import (
    EtcdGateway,
    EtcdMember,
    GatewayError,
    JoinRefused,
    JoinRequest,
    cluster_string,
    plan_start,
)

PEERS = ("http://node2:2379", "http://node3:2379")


def member(mid: str, name: str, started: bool = True) -> EtcdMember:
    host = name or mid
    return EtcdMember(mid, name, (f"http://{host}:2380",), (f"http://{host}:2379",) if started else ())


class FakeGateway:
    """An etcd cluster as seen through the v3 gateway; ``down`` URLs do not answer."""

    def __init__(self, members: list[EtcdMember], leader: bool = True, down: Sequence[str] = ()) -> None:
        self.members = members
        self.leader = leader
        self.down = set(down)
        self.calls: list[str] = []
        self.next_id = 100

    def _reach(self, url: str) -> None:
        if url in self.down:
            raise GatewayError(f"{url}: connection refused")

    def member_list(self, url: str) -> list[EtcdMember]:
        self._reach(url)
        return list(self.members)

    def has_leader(self, url: str) -> bool:
        self._reach(url)
        return self.leader

    def member_remove(self, url: str, member_id: str) -> None:
        self._reach(url)
        self.calls.append(f"remove {member_id}")
        self.members = [m for m in self.members if m.id != member_id]

    def member_add(self, url: str, peer_urls: Sequence[str]) -> list[EtcdMember]:
        self._reach(url)
        self.calls.append(f"add {','.join(peer_urls)}")
        self.next_id += 1
        self.members.append(EtcdMember(str(self.next_id), "", tuple(peer_urls), ()))
        return list(self.members)


def request(tmp_path: Path, *, initialised: bool = False, peers: Sequence[str] = PEERS) -> JoinRequest:
    return JoinRequest("node1", "http://node1:2380", str(tmp_path / "etcd"), tuple(peers), initialised)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def plan(req: JoinRequest, gateway: FakeGateway, wait: float = 10.0) -> Any:
    clock = Clock()
    return plan_start(req, gateway, wait=wait, clock=clock, sleep=clock.sleep, log=lambda _m: None)


def test_a_member_with_data_restarts_from_it(tmp_path: Path) -> None:
    (tmp_path / "etcd" / "member").mkdir(parents=True)
    gateway = FakeGateway([], down=PEERS)
    result = plan(request(tmp_path, initialised=True), gateway)
    assert (result.state, result.cluster) == ("new", None)
    assert "restarting" in result.reason and gateway.calls == []


def test_single_member_bootstraps(tmp_path: Path) -> None:
    assert plan(request(tmp_path, peers=()), FakeGateway([])).state == "new"


def test_fresh_cluster_where_nobody_answers_bootstraps_statically(tmp_path: Path) -> None:
    result = plan(request(tmp_path), FakeGateway([], down=PEERS))
    assert (result.state, result.cluster) == ("new", None)


def test_a_forming_cluster_without_leader_is_joined_statically(tmp_path: Path) -> None:
    # The others started "new" and wait for us: no member has published its client URLs yet.
    members = [member("1", "node1", False), member("2", "node2", False), member("3", "node3", False)]
    result = plan(request(tmp_path), FakeGateway(members, leader=False))
    assert result.state == "new"


def test_wiped_member_is_removed_and_added_again_while_quorum_exists(tmp_path: Path) -> None:
    gateway = FakeGateway([member("1", "node1"), member("2", "node2"), member("3", "node3")])
    result = plan(request(tmp_path, initialised=True), gateway)
    assert gateway.calls == ["remove 1", "add http://node1:2380"]
    assert result.state == "existing"
    assert result.cluster == "node2=http://node2:2380,node3=http://node3:2380,node1=http://node1:2380"


def test_an_unstarted_member_of_ours_is_joined_without_removal(tmp_path: Path) -> None:
    # A late starter of the static bootstrap, or an earlier attempt that added us then crashed.
    gateway = FakeGateway([member("1", "", False), member("2", "node2"), member("3", "node3")])
    gateway.members[0] = EtcdMember("1", "", ("http://node1:2380",), ())
    result = plan(request(tmp_path), gateway)
    assert gateway.calls == []
    assert result.state == "existing"
    assert result.cluster == "node1=http://node1:2380,node2=http://node2:2380,node3=http://node3:2380"


def test_second_peer_is_asked_when_the_first_is_down(tmp_path: Path) -> None:
    gateway = FakeGateway([member("1", "node1"), member("2", "node2"), member("3", "node3")], down=[PEERS[0]])
    assert plan(request(tmp_path), gateway).state == "existing"


def test_no_quorum_is_refused_and_nothing_is_removed(tmp_path: Path) -> None:
    gateway = FakeGateway([member("1", "node1"), member("2", "node2"), member("3", "node3")], leader=False)
    with pytest.raises(JoinRefused, match="no leader"):
        plan(request(tmp_path, initialised=True), gateway)
    assert gateway.calls == []


def test_a_former_member_with_nobody_answering_is_refused(tmp_path: Path) -> None:
    with pytest.raises(JoinRefused, match="was a member"):
        plan(request(tmp_path, initialised=True), FakeGateway([], down=PEERS))


def test_a_failed_member_add_is_refused_with_the_reason(tmp_path: Path) -> None:
    class Refusing(FakeGateway):
        def member_add(self, url: str, peer_urls: Sequence[str]) -> list[EtcdMember]:
            raise GatewayError("etcdserver: re-configuration failed due to not enough started members")

    gateway = Refusing([member("1", "node1"), member("2", "node2"), member("3", "node3")])
    with pytest.raises(JoinRefused, match=r"member add failed: .*not enough started members"):
        plan(request(tmp_path), gateway)


def test_cluster_string_needs_every_name() -> None:
    members = [member("1", "node2"), EtcdMember("9", "", ("http://nodeX:2380",), ())]
    with pytest.raises(JoinRefused, match="has no name yet"):
        cluster_string(members, "node1", "http://node1:2380")


# -- the gRPC gateway: errors name the member (tests/integration/test_etcd_dcs.py asks a real etcd) ------


def test_etcd_gateway_reports_an_unreachable_member_quickly() -> None:
    gw = EtcdGateway(probe_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(GatewayError, match=r"http://127\.0\.0\.1:1 member list"):
        gw.member_list("http://127.0.0.1:1")
    assert time.monotonic() - started < 3.0


def test_etcd_gateway_refuses_https_without_tls_material() -> None:
    with pytest.raises(GatewayError, match=r"etcd3\.protocol is http"):
        EtcdGateway().has_leader("https://127.0.0.1:1")
