"""EtcdDCS against a real 3-member etcd 3.5: Patroni's key layout, leases, CAS, watch, failover, no stale reads."""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from pyetcd import Etcd3Client

from appliance.core.model import ClusterStatus, Failover, HistoryEntry, Member
from appliance.core.tags import Tags
from appliance.dcs.base import DCSError
from appliance.dcs.etcd import EtcdDCS
from tests.support.etcd import EtcdCluster

pytestmark = pytest.mark.integration

MakeDCS = Callable[..., EtcdDCS]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    with EtcdCluster(3, tmp_path_factory.mktemp("etcd")) as etcd:
        yield etcd


@pytest.fixture
def fresh_cluster(tmp_path: Path) -> Iterator[EtcdCluster]:
    """A cluster of its own, for tests that stop, kill or freeze members."""
    with EtcdCluster(3, tmp_path / "etcd") as etcd:
        yield etcd


@pytest.fixture
def scope() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def _factory(etcd_hosts: Callable[[], list[str]], scope: str) -> Iterator[MakeDCS]:
    made: list[EtcdDCS] = []

    def make(name: str, ttl: int = 10, retry_timeout: float = 3.0, hosts: list[str] | None = None) -> EtcdDCS:
        dcs = EtcdDCS(hosts or etcd_hosts(), scope, "/service/", name, ttl, retry_timeout)
        made.append(dcs)
        return dcs

    yield make
    for dcs in made:
        dcs.close()


@pytest.fixture
def make_dcs(cluster: EtcdCluster, scope: str) -> Iterator[MakeDCS]:
    yield from _factory(lambda: cluster.endpoints, scope)


@pytest.fixture
def make_fresh_dcs(fresh_cluster: EtcdCluster, scope: str) -> Iterator[MakeDCS]:
    yield from _factory(lambda: fresh_cluster.endpoints, scope)


def raw_client(cluster: EtcdCluster, i: int = 0) -> Etcd3Client:
    host, port = cluster.endpoints[i].split(":")
    return Etcd3Client(host=host, port=int(port), timeout=5)


def raw_prefix(cluster: EtcdCluster, prefix: str) -> dict[str, tuple[str, int]]:
    client = raw_client(cluster)
    try:
        return {meta.key.decode(): (value.decode(), meta.lease_id) for value, meta in client.get_prefix(prefix)}
    finally:
        client.close()


def a_member(name: str) -> Member:
    return Member(
        name=name,
        conn_url=f"postgres://{name}:5432/postgres",
        api_url=f"http://{name}:8008/patroni",
        state="running",
        role="primary",
        version="4.1.4",
        xlog_location=50331808,
        timeline=2,
        tags=Tags({"clonefrom": True}),
    )


def test_keys_and_values_are_patronis(cluster: EtcdCluster, make_dcs: MakeDCS, scope: str) -> None:
    a = make_dcs("node1")
    a.keepalive()
    assert a.take_initialize()
    a.set_initialize("7268616322854375442")
    assert a.write_config({"ttl": 30, "loop_wait": 10, "postgresql": {"use_pg_rewind": True}}, None)
    assert a.acquire_leader()
    a.touch_member(a_member("node1"))
    assert a.write_sync("node1", ("node3", "node2"), None)
    assert a.write_failover(Failover(leader="node1", member="node2"), None)
    a.write_history((HistoryEntry(1, 25165984, "no recovery target specified", "2026-07-01T10:00:00+00:00", "node1"),))
    a.write_status(ClusterStatus(optime=50331808, slots={"node2": 50331808}, retain_slots=("node1", "node2")))
    a.write_failsafe({"node1": "http://node1:8008/patroni"})

    p = f"/service/{scope}/"
    lease = a.lease_id
    assert raw_prefix(cluster, p) == {
        p + "initialize": ("7268616322854375442", 0),
        p + "config": ('{"ttl":30,"loop_wait":10,"postgresql":{"use_pg_rewind":true}}', 0),
        p + "leader": ("node1", lease),
        p + "members/node1": (
            '{"conn_url":"postgres://node1:5432/postgres","api_url":"http://node1:8008/patroni",'
            '"state":"running","role":"primary","version":"4.1.4","tags":{"clonefrom":true},'
            '"xlog_location":50331808,"timeline":2}',
            lease,
        ),
        p + "sync": ('{"leader":"node1","quorum":0,"sync_standby":"node2,node3"}', 0),
        p + "failover": ('{"leader":"node1","member":"node2"}', 0),
        p + "history": ('[[1,25165984,"no recovery target specified","2026-07-01T10:00:00+00:00","node1"]]', 0),
        p + "status": ('{"optime":50331808,"slots":{"node2":50331808},"retain_slots":["node1","node2"]}', 0),
        p + "failsafe": ('{"node1":"http://node1:8008/patroni"}', 0),
    }
    view = make_dcs("node2").read()
    assert view.leader is not None and view.leader.name == "node1" and view.leader.lease == lease
    assert view.initialize == "7268616322854375442" and view.config_revision > 0
    assert view.sync is not None and view.sync.sync_standby == ("node2", "node3") and view.sync.mod_revision > 0
    assert view.failover is not None and view.failover.member == "node2" and view.failover.mod_revision > 0
    published = view.member("node1")
    assert published is not None and published == replace(a_member("node1"), mod_revision=published.mod_revision)

    a.delete_cluster()
    assert raw_prefix(cluster, p) == {}


def test_leader_race_has_one_winner(make_dcs: MakeDCS) -> None:
    nodes = [make_dcs(f"n{i}") for i in range(3)]
    for n in nodes:
        n.keepalive()
    for _ in range(3):
        winners = _race(nodes)
        assert len(winners) == 1
        assert nodes[0].read().leader_name == winners[0]
        assert all(n.update_leader() == (n.name == winners[0]) for n in nodes)
        assert next(n for n in nodes if n.name == winners[0]).release_leader()


def _race(nodes: list[EtcdDCS]) -> list[str]:
    """Every node calls acquire_leader at the same moment; returns the names of the winners."""
    barrier = threading.Barrier(len(nodes))
    results: dict[str, bool] = {}

    def race(dcs: EtcdDCS) -> None:
        barrier.wait()
        results[dcs.name] = dcs.acquire_leader()

    threads = [threading.Thread(target=race, args=(n,)) for n in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [name for name, won in results.items() if won]


def test_lease_expiry_frees_leader_and_member(cluster: EtcdCluster, make_dcs: MakeDCS, scope: str) -> None:
    a, b = make_dcs("a", ttl=2), make_dcs("b", ttl=2)
    a.keepalive()
    assert a.acquire_leader()
    a.touch_member(a_member("a"))
    b.keepalive()
    assert not b.acquire_leader()
    started = time.monotonic()
    while b.read().leader is not None:
        assert time.monotonic() - started < 6, "the leader key outlived its 2 s lease"
        time.sleep(0.1)
    assert time.monotonic() - started > 1.0
    assert b.read().member("a") is None
    assert b.acquire_leader()
    old = a.lease_id
    a.keepalive()  # the old lease is gone: a new one
    assert a.lease_id != old
    assert not a.update_leader()
    assert raw_prefix(cluster, f"/service/{scope}/")[f"/service/{scope}/leader"] == ("b", b.lease_id)


def test_update_leader_after_lease_regrant(cluster: EtcdCluster, make_dcs: MakeDCS, scope: str) -> None:
    a, b = make_dcs("a", ttl=5), make_dcs("b", ttl=5)
    a.keepalive()
    assert a.acquire_leader()
    first = a.lease_id
    a.set_ttl(6)
    a.keepalive()
    assert a.lease_id != first
    assert a.update_leader()
    key = f"/service/{scope}/leader"
    assert raw_prefix(cluster, key)[key] == ("a", a.lease_id)
    assert a.update_leader()  # no change needed now
    b.keepalive()
    assert not b.update_leader()


def test_cas_conflicts_on_config_and_sync(make_dcs: MakeDCS) -> None:
    a, b = make_dcs("a"), make_dcs("b")
    assert a.write_config({"ttl": 30}, None)
    assert not b.write_config({"ttl": 10}, None)
    rev = b.read().config_revision
    assert a.write_config({"ttl": 40}, rev)
    assert not b.write_config({"ttl": 50}, rev)
    assert b.write_config({"ttl": 50}, b.read().config_revision)
    assert a.read().config == {"ttl": 50}

    assert a.write_sync("a", ("b",), None)
    assert not b.write_sync("b", (), None)
    sync = b.read().sync
    assert sync is not None
    assert a.write_sync("a", (), sync.mod_revision)
    assert not b.write_sync("b", ("a",), sync.mod_revision)
    assert a.write_failover(Failover(member="b"), None)
    failover = b.read().failover
    assert failover is not None
    fo_rev = failover.mod_revision
    assert not b.clear_failover(fo_rev + 1000) and b.clear_failover(fo_rev)


def test_wait_wakes_on_a_leader_change_by_another_client(make_dcs: MakeDCS) -> None:
    a, b = make_dcs("a"), make_dcs("b")
    a.keepalive()
    b.keepalive()
    a.read()
    assert not a.wait(0.3)
    b.touch_member(a_member("b"))
    assert not a.wait(0.5)  # member puts do not wake
    a.write_status(ClusterStatus(optime=1))
    assert not a.wait(0.5)  # nor do our own writes
    timer = threading.Timer(0.3, b.acquire_leader)
    timer.start()
    started = time.monotonic()
    assert a.wait(5)
    assert time.monotonic() - started < 2
    timer.join()
    assert not a.wait(0.2)
    a.read()
    b.write_config({"ttl": 30}, None)  # between read and wait: not lost
    assert a.wait(2)


def test_failover_to_the_next_member(fresh_cluster: EtcdCluster, make_fresh_dcs: MakeDCS) -> None:
    fresh_cluster.kill(0)
    a = make_fresh_dcs("a", retry_timeout=3.0)  # hosts start with the dead member
    b = make_fresh_dcs("b", retry_timeout=3.0, hosts=fresh_cluster.endpoints[1:])
    started = time.monotonic()
    a.keepalive()
    assert a.acquire_leader()
    a.touch_member(a_member("a"))
    assert a.read().leader_name == "a"
    assert time.monotonic() - started < 3.0
    b.keepalive()
    a.read()
    assert not a.wait(0.2)
    timer = threading.Timer(0.3, lambda: b.write_config({"ttl": 30}, None))
    timer.start()
    assert a.wait(5)
    timer.join()


def test_watch_moves_off_a_killed_member(fresh_cluster: EtcdCluster, make_fresh_dcs: MakeDCS) -> None:
    a = make_fresh_dcs("a", retry_timeout=3.0)
    b = make_fresh_dcs("b", retry_timeout=3.0, hosts=fresh_cluster.endpoints[1:])
    a.read()
    assert not a.wait(0.2)  # the watch runs, on member 0 (the first host)
    fresh_cluster.kill(0)
    # If member 0 led, the other two elect a new leader first (slow on a loaded machine); the point
    # here is that the watch follows, not how fast etcd elects.
    fresh_cluster.wait_healthy([1, 2], timeout=30)
    assert b.write_config({"ttl": 30}, None)
    started = time.monotonic()
    assert a.wait(5)
    assert time.monotonic() - started < 5
    assert a.read().config == {"ttl": 30}


def test_frozen_member_costs_one_request_timeout(fresh_cluster: EtcdCluster, make_fresh_dcs: MakeDCS) -> None:
    a = make_fresh_dcs("a", retry_timeout=3.0)
    b = make_fresh_dcs("b", retry_timeout=3.0, hosts=fresh_cluster.endpoints[1:])
    a.keepalive()
    a.read()
    assert not a.wait(0.2)  # the watch runs on member 0, which is about to freeze
    fresh_cluster.pause(0)
    try:
        started = time.monotonic()
        assert a.acquire_leader()
        assert a.read().leader_name == "a"
        # One request timeout on the frozen member (plus an election if it led), not one per call.
        assert time.monotonic() - started < 2 * 3.0 + 2
        # The failed request moved the watch off the frozen member too.
        assert b.write_config({"ttl": 30}, None)
        assert a.wait(3)
    finally:
        fresh_cluster.resume(0)


def test_no_stale_read_without_quorum(fresh_cluster: EtcdCluster, make_fresh_dcs: MakeDCS) -> None:
    lonely = make_fresh_dcs("a", retry_timeout=2.0, hosts=[fresh_cluster.endpoints[2]])
    every = make_fresh_dcs("b", retry_timeout=2.0)
    lonely.keepalive()
    assert lonely.acquire_leader()
    assert every.read().leader_name == "a"
    fresh_cluster.stop(0)
    fresh_cluster.stop(1)
    for dcs in (lonely, every):
        started = time.monotonic()
        with pytest.raises(DCSError, match="majority"):
            dcs.read()
        assert time.monotonic() - started < 2.0 + 1.5
    with pytest.raises(DCSError):
        lonely.keepalive()
    fresh_cluster.start(0, wait=False)
    fresh_cluster.wait_healthy([0, 2])
    assert every.read().leader_name == "a"


def test_password_auth(tmp_path: Path, scope: str) -> None:
    with EtcdCluster(1, tmp_path / "etcd") as etcd:
        hosts = etcd.endpoints
        a = EtcdDCS(hosts, scope, "service", "a", 5, 2.0, username="root", password="s3cret")
        b = EtcdDCS(hosts, scope, "service", "b", 5, 2.0, username="root", password="s3cret")
        anonymous = EtcdDCS(hosts, scope, "service", "x", 5, 2.0)
        wrong = EtcdDCS(hosts, scope, "service", "y", 5, 2.0, username="root", password="nope")
        try:
            a.keepalive()  # auth is still off: the credentials are not needed yet
            for args in (["user", "add", "root:s3cret"], ["auth", "enable"]):
                subprocess.run(["etcdctl", f"--endpoints={hosts[0]}", *args], check=True, capture_output=True)
            a.keepalive()
            assert a.acquire_leader() and b.read().leader_name == "a"
            timer = threading.Timer(0.2, a.release_leader)
            timer.start()
            assert b.wait(3)  # the watch authenticates too
            timer.join()
            with pytest.raises(DCSError, match=r"set etcd3\.username"):
                anonymous.read()
            with pytest.raises(DCSError, match=r"check etcd3\.username and etcd3\.password"):
                wrong.read()
        finally:
            for dcs in (a, b, anonymous, wrong):
                dcs.close()


def test_tls_client_certificates_and_the_auth_bootstrap(tmp_path: Path, scope: str) -> None:
    """etcd with client-cert-auth: our client with the CA's certificate works; one without a
    certificate, with another CA's or through plain HTTP does not. Then etcd_auth turns auth on
    (as the appliance does) while a manager is connected: it logs in and carries on, and the
    appliance user is limited to its prefix."""
    from appliance.config.schema import LocalConfig
    from appliance.dcs.etcd_transport import EtcdTls, EtcdTransport
    from appliance.runtime.etcd_auth import ROOT, AuthPlan, ensure_auth
    from appliance.tls import identity

    with EtcdCluster(1, tmp_path / "etcd", tls=True) as etcd:
        hosts, good = etcd.endpoints, etcd.client_tls()
        assert good is not None
        manager = EtcdDCS(hosts, scope, "service", "a", 5, 2.0, username="appliance", password="pw", tls=good)
        identity.init_ca(tmp_path / "foreign")
        stranger, _ = identity.issue_node(str(tmp_path / "foreign" / "ca.crt"), str(tmp_path / "foreign" / "ca.key"),
                                          tmp_path / "stranger", dns_names=["localhost"], ip_addresses=[])
        refused = [
            EtcdDCS(hosts, scope, "service", "n", 5, 1.0, tls=EtcdTls(ca=good.ca)),  # no client certificate
            EtcdDCS(hosts, scope, "service", "f", 5, 1.0,  # a certificate from another CA
                    tls=EtcdTls.from_files(good_ca_path(etcd), stranger.cert_file, stranger.key_file)),
            EtcdDCS(hosts, scope, "service", "p", 5, 1.0),  # plaintext to the TLS port
        ]
        try:
            manager.keepalive()
            assert manager.acquire_leader()
            for client in refused:
                with pytest.raises(DCSError):
                    client.read()
            local = LocalConfig.model_validate({"scope": scope, "namespace": "service",
                                                "etcd3": {"username": "appliance", "password": "pw"},
                                                "etcd": {"root_password": "r00t"}})
            root = EtcdTransport(hosts, 3.0, username=ROOT, password="r00t", tls=good)
            try:
                ensure_auth(root, AuthPlan.from_config(local))
                ensure_auth(root, AuthPlan.from_config(local))  # idempotent: a second node does the same
            finally:
                root.close()
            manager.keepalive()  # auth came on under it: it logs in and keeps its lease and key
            assert manager.read().leader_name == "a"
            tokenless = EtcdDCS(hosts, scope, "service", "t", 5, 1.0, tls=good)  # certificate, no credentials
            with pytest.raises(DCSError):
                tokenless.read()
            tokenless.close()
            outside = EtcdDCS(hosts, f"{scope}-other", "service", "o", 5, 1.0, username="appliance", password="pw",
                              tls=good)
            with pytest.raises(DCSError, match="permission denied"):
                outside.read()
            outside.close()
        finally:
            for client in (manager, *refused):
                client.close()


def good_ca_path(etcd: EtcdCluster) -> str:
    assert etcd.tls is not None
    return etcd.tls.ca_file
