"""FakeDCS: etcd's semantics in memory, three nodes on one FakeStore, time driven by a fake clock."""

from __future__ import annotations

import threading
import time

import pytest

from appliance.core.model import ClusterStatus, Failover, HistoryEntry, Member
from appliance.dcs.base import DCS, DCSError
from appliance.dcs.fake import FakeDCS, FakeStore

P = "/service/demo/"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> FakeStore:
    return FakeStore(clock)


def node(store: FakeStore, name: str, ttl: int = 10) -> FakeDCS:
    dcs = FakeDCS(store, name, ttl=ttl, scope="demo", namespace="service")
    dcs.keepalive()
    return dcs


def member(name: str, **kw: object) -> Member:
    return Member(name=name, conn_url=f"postgres://{name}:5432/postgres", api_url=f"http://{name}:8008/patroni", **kw)  # type: ignore[arg-type]


def test_fake_satisfies_the_protocol(store: FakeStore) -> None:
    dcs: DCS = node(store, "n1")
    assert dcs.name == "n1"


def test_only_one_of_three_nodes_gets_the_leader_key(store: FakeStore) -> None:
    nodes = [node(store, f"n{i}") for i in range(3)]
    assert [n.acquire_leader() for n in nodes] == [True, False, False]
    assert store.raw(P) == {P + "leader": "n0"}
    view = nodes[2].read()
    assert view.leader is not None and view.leader.name == "n0" and view.leader.lease == nodes[0].lease_id
    assert nodes[0].update_leader() and not nodes[1].update_leader()
    assert not nodes[1].release_leader() and nodes[0].release_leader()
    assert nodes[1].acquire_leader()


def test_lease_expiry_frees_leader_and_member(store: FakeStore, clock: Clock) -> None:
    a, b = node(store, "a", ttl=10), node(store, "b", ttl=10)
    assert a.acquire_leader()
    a.touch_member(member("a"))
    clock.now += 9
    a.keepalive()  # refreshed: lives until now + 10
    clock.now += 9
    assert b.read().leader is not None
    clock.now += 1.5
    view = b.read()
    assert view.leader is None and view.member("a") is None
    assert b.acquire_leader()
    old = a.lease_id
    a.keepalive()  # expired: a new lease is granted
    assert a.lease_id != old
    assert not a.update_leader()


def test_keepalive_returns_send_time(store: FakeStore, clock: Clock) -> None:
    a = node(store, "a")
    clock.now = 2000.0
    assert a.keepalive() == 2000.0


def test_set_ttl_regrants_and_update_leader_moves_the_key(store: FakeStore, clock: Clock) -> None:
    a = node(store, "a", ttl=10)
    assert a.acquire_leader()
    first = a.lease_id
    a.set_ttl(20)
    a.keepalive()
    assert a.lease_id != first
    assert a.update_leader()
    entry = store.entry(P + "leader")
    assert entry is not None and entry.lease == a.lease_id
    clock.now += 15  # the old 10 s lease is gone, the key lives on the new one
    assert store.raw(P) == {P + "leader": "a"}


def test_update_leader_is_false_when_absent_or_foreign(store: FakeStore) -> None:
    a, b = node(store, "a"), node(store, "b")
    assert not a.update_leader()
    assert b.acquire_leader()
    assert not a.update_leader()
    assert store.raw(P)[P + "leader"] == "b"


def test_update_leader_without_lease_change_writes_nothing(store: FakeStore) -> None:
    a = node(store, "a")
    assert a.acquire_leader()
    revision = store.revision
    assert a.update_leader()
    assert store.revision == revision


def test_initialize_race_and_cancel(store: FakeStore) -> None:
    a, b = node(store, "a"), node(store, "b")
    assert a.take_initialize() and not b.take_initialize("x")
    assert store.raw(P) == {P + "initialize": ""}
    a.set_initialize("7268616322854375442")
    view = b.read()
    assert view.initialize == "7268616322854375442"
    assert not b.cancel_initialize(view.initialize_revision - 1)
    assert b.cancel_initialize(view.initialize_revision)
    assert b.read().initialize is None
    assert a.cancel_initialize()


def test_config_create_only_and_cas(store: FakeStore) -> None:
    a, b = node(store, "a"), node(store, "b")
    assert a.write_config({"ttl": 30, "loop_wait": 10}, None)
    assert not b.write_config({"ttl": 20}, None)
    assert store.raw(P)[P + "config"] == '{"ttl":30,"loop_wait":10}'
    rev = b.read().config_revision
    assert a.write_config({"ttl": 40}, rev)
    assert not b.write_config({"ttl": 50}, rev)  # stale revision
    assert b.write_config({"ttl": 50}, b.read().config_revision)
    assert a.read().config == {"ttl": 50}


def test_sync_cas(store: FakeStore) -> None:
    a = node(store, "a")
    assert a.write_sync("a", ("c", "b"), None)
    assert store.raw(P)[P + "sync"] == '{"leader":"a","quorum":0,"sync_standby":"b,c"}'
    sync = a.read().sync
    assert sync is not None and sync.sync_standby == ("b", "c")
    assert not a.write_sync("a", (), None)
    assert not a.write_sync("a", (), sync.mod_revision + 100)
    assert a.write_sync("a", (), sync.mod_revision)
    assert store.raw(P)[P + "sync"] == '{"leader":"a","quorum":0,"sync_standby":null}'


def test_failover_write_and_clear(store: FakeStore) -> None:
    a = node(store, "a")
    assert a.write_failover(Failover(leader="a", member="b"), None)
    assert store.raw(P)[P + "failover"] == '{"leader":"a","member":"b"}'
    fo = a.read().failover
    assert fo is not None and not fo.empty
    assert not a.clear_failover(fo.mod_revision + 1)
    assert not a.write_failover(Failover(member="c"), fo.mod_revision + 1)
    assert a.clear_failover(fo.mod_revision)
    assert a.read().failover is None
    assert a.clear_failover(None)


def test_touch_member_skips_unchanged_and_follows_the_lease(store: FakeStore) -> None:
    a = node(store, "a", ttl=10)
    a.touch_member(member("a", state="running", role="replica", version="4.1.4"))
    raw = store.raw(P)[P + "members/a"]
    assert raw == (
        '{"conn_url":"postgres://a:5432/postgres","api_url":"http://a:8008/patroni","state":"running",'
        '"role":"replica","version":"4.1.4"}'
    )
    revision = store.revision
    a.touch_member(member("a", state="running", role="replica", version="4.1.4"))
    assert store.revision == revision
    a.set_ttl(5)
    a.keepalive()
    a.touch_member(member("a", state="running", role="replica", version="4.1.4"))
    entry = store.entry(P + "members/a")
    assert store.revision == revision + 1 and entry is not None and entry.lease == a.lease_id
    with pytest.raises(ValueError, match="publish only yourself"):
        a.touch_member(member("b"))


def test_touch_member_rewrites_after_someone_deleted_it(store: FakeStore) -> None:
    a = node(store, "a")
    a.touch_member(member("a"))
    a.delete_cluster()
    a.read()
    a.touch_member(member("a"))
    assert P + "members/a" in store.raw(P)


def test_status_history_failsafe(store: FakeStore) -> None:
    a = node(store, "a")
    a.write_status(ClusterStatus(optime=100, slots={"b": 90}))
    revision = store.revision
    a.write_status(ClusterStatus(optime=100, slots={"b": 90}))
    assert store.revision == revision
    a.write_history((HistoryEntry(1, 100, "no recovery target specified", "2026-01-01T00:00:00+00:00", "a"),))
    a.write_failsafe({"a": "http://a:8008/patroni"})
    raw = store.raw(P)
    assert raw[P + "status"] == '{"optime":100,"slots":{"b":90}}'
    assert raw[P + "history"] == '[[1,100,"no recovery target specified","2026-01-01T00:00:00+00:00","a"]]'
    assert raw[P + "failsafe"] == '{"a":"http://a:8008/patroni"}'
    view = a.read()
    assert view.status.optime == 100 and view.history[0].new_leader == "a" and view.failsafe is not None


def test_outages_raise_dcs_error(store: FakeStore) -> None:
    a, b = node(store, "a"), node(store, "b")
    store.available = False
    calls = [
        a.read,
        a.keepalive,
        a.acquire_leader,
        a.update_leader,
        a.release_leader,
        lambda: a.touch_member(member("a")),
        lambda: a.write_config({}, None),
        lambda: a.write_status(ClusterStatus(optime=1)),
    ]
    for call in calls:
        with pytest.raises(DCSError):
            call()
    store.available = True
    b.available = False
    with pytest.raises(DCSError):
        b.read()
    assert a.acquire_leader()


def test_garbage_in_the_store_never_breaks_read(store: FakeStore) -> None:
    for key in ("config", "sync", "failover", "history", "status", "failsafe", "members/x"):
        store.set_raw(P + key, "{not json")
    view = node(store, "a").read()
    assert view.config == {} and view.sync is not None and view.sync.leader is None
    assert view.member("x") is not None


def test_wait_wakes_on_leader_change_but_not_member_puts(store: FakeStore, clock: Clock) -> None:
    a, b = node(store, "a"), node(store, "b")
    a.read()
    assert not a.wait(0.01)
    b.touch_member(member("b"))
    assert not a.wait(0.01)
    assert b.acquire_leader()
    assert a.wait(0.01)
    assert not a.wait(0.01)  # consumed
    clock.now += 11  # b's lease expires: the leader key and b's member key vanish
    store.expire_leases()
    assert a.wait(0.01)


def test_wait_ignores_own_writes(store: FakeStore) -> None:
    a = node(store, "a")
    a.read()
    assert a.acquire_leader()
    a.write_status(ClusterStatus(optime=5))
    assert not a.wait(0.01)


def test_change_between_read_and_wait_is_not_lost(store: FakeStore) -> None:
    a, b = node(store, "a"), node(store, "b")
    a.read()
    b.write_config({"ttl": 30}, None)
    assert a.wait(0.01)


def test_wait_returns_early_from_another_thread(store: FakeStore) -> None:
    a, b = node(store, "a"), node(store, "b")
    a.read()
    timer = threading.Timer(0.1, b.acquire_leader)
    timer.start()
    started = time.monotonic()
    assert a.wait(5)
    assert time.monotonic() - started < 2
    timer.join()


def test_delete_cluster(store: FakeStore) -> None:
    a = node(store, "a")
    assert a.take_initialize() and a.acquire_leader()
    store.set_raw("/service/other/leader", "x")
    a.delete_cluster()
    assert store.raw(P) == {} and store.raw() == {"/service/other/leader": "x"}


def test_a_stale_member_saying_our_lease_expired_does_not_cost_the_leader_key(store: FakeStore) -> None:
    """An etcd leader frozen and thawed answers "expired" (TTL 0) for a lease granted meanwhile;
    the quorum still holds it: the key must stay where it is, on the same lease."""
    a = node(store, "n1")
    a.keepalive()
    a.touch_member(member("n1"))
    assert a.acquire_leader()
    lease = a.lease_id
    answers = iter([0])  # the stale member's answer, then the real ones
    real = a.backend.lease_keepalive
    distrusted = []

    def flaky(lease_id: int) -> tuple[int, float]:
        remaining, sent = real(lease_id)
        return next(answers, remaining), sent

    a.backend.lease_keepalive = flaky  # type: ignore[method-assign]
    a.backend.distrust_current = lambda: distrusted.append(True)  # type: ignore[attr-defined]
    a.keepalive()
    assert a.lease_id == lease and distrusted == [True]
    view = a.read()
    assert view.leader is not None and view.leader.name == "n1" and view.leader.lease == lease


def test_a_really_expired_lease_is_replaced(store: FakeStore, clock: Clock) -> None:
    a = node(store, "n1", ttl=5)
    a.keepalive()
    a.touch_member(member("n1"))
    lease = a.lease_id
    clock.now += 10
    store.expire_leases()
    a.keepalive()
    assert a.lease_id != lease
