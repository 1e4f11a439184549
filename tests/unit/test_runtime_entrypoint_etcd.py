"""etcd member start plan: static bootstrap, restart from data, wiped-member rejoin, refusal without quorum."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from appliance.runtime.etcd_join import (
    EtcdMember,
    GatewayError,
    HttpGateway,
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


# -- the HTTP gateway against a tiny stand-in for etcd's JSON gateway ------------------------------


class _Handler(BaseHTTPRequestHandler):
    routes: dict[str, Any] = {}
    seen: list[tuple[str, dict[str, Any], str | None]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
        self.seen.append((self.path, body, self.headers.get("Authorization")))
        status, doc = self.routes.get(self.path, (404, {"error": "not found", "code": 5}))
        payload = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def gateway_server() -> Iterator[str]:
    _Handler.seen = []
    server = HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_http_gateway_speaks_the_v3_json_api(gateway_server: str) -> None:
    listed = {"members": [{"ID": "11", "name": "node1", "peerURLs": ["http://node1:2380"],
                           "clientURLs": ["http://node1:2379"]}, {"ID": "12", "peerURLs": ["http://node2:2380"]}]}
    _Handler.routes = {
        "/v3/auth/authenticate": (200, {"token": "tok"}),
        "/v3/cluster/member/list": (200, listed),
        "/v3/maintenance/status": (200, {"leader": "11"}),
        "/v3/cluster/member/remove": (200, {}),
        "/v3/cluster/member/add": (200, {"member": {"ID": "13"}, **listed}),
    }
    gw = HttpGateway(username="root", password="pw")
    members = gw.member_list(gateway_server)
    assert members[0] == EtcdMember("11", "node1", ("http://node1:2380",), ("http://node1:2379",))
    assert members[0].started and not members[1].started
    assert gw.has_leader(gateway_server)
    gw.member_remove(gateway_server, "11")
    assert [m.id for m in gw.member_add(gateway_server, ["http://node1:2380"])] == ["11", "12"]
    paths = [(p, b, a) for p, b, a in _Handler.seen if p != "/v3/auth/authenticate"]
    assert ("/v3/cluster/member/remove", {"ID": "11"}, "tok") in paths
    assert ("/v3/cluster/member/add", {"peerURLs": ["http://node1:2380"]}, "tok") in paths


def test_http_gateway_reports_errors_and_no_leader(gateway_server: str) -> None:
    _Handler.routes = {
        "/v3/maintenance/status": (200, {}),
        "/v3/cluster/member/remove": (200, {"error": "etcdserver: member not found", "code": 5}),
    }
    gw = HttpGateway()
    assert not gw.has_leader(gateway_server)
    with pytest.raises(GatewayError, match="member not found"):
        gw.member_remove(gateway_server, "1")
    with pytest.raises(GatewayError, match="HTTP 404"):
        gw.member_list(gateway_server)
    with pytest.raises(GatewayError):
        HttpGateway(timeout=0.5).member_list("http://127.0.0.1:1")
