"""Patroni's DCS value formats: literal values as Patroni 4.1 writes them round-trip exactly."""

from __future__ import annotations

import pytest

from appliance.core.model import ClusterStatus, Failover, HistoryEntry, Member, PgState, ReplicationState, Role
from appliance.core.tags import Tags
from appliance.dcs import formats as f
from appliance.dcs.etcd_transport import parse_host

PRIMARY = (
    '{"conn_url":"postgres://10.0.0.1:5432/postgres","api_url":"http://10.0.0.1:8008/patroni",'
    '"state":"running","role":"primary","version":"4.1.4","xlog_location":67393896,"timeline":3}'
)
REPLICA = (
    '{"conn_url":"postgres://10.0.0.2:5432/postgres","api_url":"http://10.0.0.2:8008/patroni",'
    '"state":"running","role":"replica","version":"4.1.4","xlog_location":67393896,'
    '"replay_lsn":67393896,"receive_lsn":67393960,"replication_state":"streaming","timeline":3}'
)
TAGGED = (
    '{"conn_url":"postgres://10.0.0.3:5432/postgres","api_url":"http://10.0.0.3:8008/patroni",'
    '"state":"running","role":"replica","version":"4.1.4","tags":{"nofailover":true,"clonefrom":true},'
    '"pending_restart":true,"pending_restart_reason":{"max_connections":{"old_value":"100","new_value":"200"}},'
    '"xlog_location":50331808,"timeline":2}'
)
WITH_EXTRAS = (
    '{"conn_url":"postgres://10.0.0.1:5432/postgres","api_url":"http://10.0.0.1:8008/patroni",'
    '"state":"running","role":"primary","version":"4.1.4","proxy_url":"postgres://10.0.0.9:5432/postgres",'
    '"checkpoint_after_promote":false,"xlog_location":83886240,"timeline":4,'
    '"scheduled_restart":{"schedule":"2026-07-01T10:00:00+00:00","postmaster_start_time":"2026-06-30 09:00:00"},'
    '"pause":true}'
)
STOPPED = (
    '{"conn_url":"postgres://10.0.0.2:5432/postgres","api_url":"http://10.0.0.2:8008/patroni",'
    '"state":"stopped","role":"replica","version":"4.1.4"}'
)


@pytest.mark.parametrize("value", [PRIMARY, REPLICA, TAGGED, WITH_EXTRAS, STOPPED])
def test_member_round_trips_exactly(value: str) -> None:
    assert f.encode_member(f.decode_member("n", value)) == value


def test_member_fields_are_typed() -> None:
    m = f.decode_member("node3", TAGGED, mod_revision=17)
    assert (m.name, m.role, m.state, m.version, m.timeline) == ("node3", "replica", "running", "4.1.4", 2)
    assert m.xlog_location == 50331808 and m.mod_revision == 17
    assert m.tags.nofailover and m.tags.clonefrom and m.tags.values["clonefrom"] is True
    assert m.pending_restart and m.pending_restart_reason == {
        "max_connections": {"old_value": "100", "new_value": "200"}
    }
    r = f.decode_member("node2", REPLICA)
    assert (r.replication_state, r.receive_lsn, r.replay_lsn) == ("streaming", 67393960, 67393896)
    e = f.decode_member("node1", WITH_EXTRAS)
    assert e.extra == {
        "proxy_url": "postgres://10.0.0.9:5432/postgres",
        "checkpoint_after_promote": False,
        "scheduled_restart": {"schedule": "2026-07-01T10:00:00+00:00", "postmaster_start_time": "2026-06-30 09:00:00"},
        "pause": True,
    }


def test_member_encoding_from_the_model() -> None:
    member = Member(
        name="node1",
        conn_url="postgres://h:5432/postgres",
        api_url="http://h:8008/patroni",
        state=PgState.RUNNING,
        role=Role.REPLICA,
        version="4.1.4",
        xlog_location=10,
        timeline=1,
        replication_state=ReplicationState.STREAMING,
        tags=Tags({"nosync": True}),
    )
    assert f.encode_member(member) == (
        '{"conn_url":"postgres://h:5432/postgres","api_url":"http://h:8008/patroni","state":"running",'
        '"role":"replica","version":"4.1.4","tags":{"nosync":true},"xlog_location":10,"replication_state":"streaming",'
        '"timeline":1}'
    )
    assert f.decode_member("node1", f.encode_member(member)) == member  # the enums are their strings


def test_member_tolerates_garbage_and_legacy_values() -> None:
    for garbage in ("", "{", "[]", "null", "42", '"text"', '{"xlog_location":"abc","tags":[1]}'):
        m = f.decode_member("x", garbage)
        assert m.name == "x" and m.state == "unknown" and m.tags == Tags() and m.xlog_location is None
    assert f.decode_member("x", '{"xlog_location":"123"}').xlog_location == 123
    legacy = f.decode_member("x", "postgres://u@h:5432/postgres?application_name=http://h:8008/patroni")
    assert (legacy.conn_url, legacy.api_url) == ("postgres://u@h:5432/postgres", "http://h:8008/patroni")


def test_config_is_compact_json() -> None:
    value = (
        '{"ttl":30,"loop_wait":10,"retry_timeout":10,"maximum_lag_on_failover":1048576,'
        '"postgresql":{"use_pg_rewind":true,"parameters":{"max_connections":100}}}'
    )
    assert f.encode_config(f.decode_config(value)) == value
    assert f.decode_config("{") == {} and f.decode_config("[1]") == {}


@pytest.mark.parametrize(
    "value, leader, standbys, quorum",
    [
        ('{"leader":"node1","quorum":0,"sync_standby":"node2,node3"}', "node1", ("node2", "node3"), 0),
        ('{"leader":"node1","quorum":0,"sync_standby":null}', "node1", (), 0),
        ('{"leader":"node1","quorum":1,"sync_standby":"node2,node3"}', "node1", ("node2", "node3"), 1),
    ],
)
def test_sync_round_trips(value: str, leader: str, standbys: tuple[str, ...], quorum: int) -> None:
    state = f.decode_sync(value, mod_revision=9)
    assert (state.leader, state.sync_standby, state.quorum, state.mod_revision) == (leader, standbys, quorum, 9)
    assert f.encode_sync(state.leader, state.sync_standby, state.quorum) == value


def test_sync_sorts_names_and_tolerates_old_and_bad_values() -> None:
    assert f.encode_sync("a", ("c", "b")) == '{"leader":"a","quorum":0,"sync_standby":"b,c"}'
    old = f.decode_sync('{"leader":"node1","sync_standby":"node2"}')
    assert (old.leader, old.sync_standby, old.quorum) == ("node1", ("node2",), None)
    for garbage in ("", "{", "[]", "{}", '{"leader":5}'):
        empty = f.decode_sync(garbage, mod_revision=3)
        assert empty.leader is None and empty.sync_standby == () and empty.mod_revision == 3


@pytest.mark.parametrize(
    "value, leader, member, scheduled",
    [
        (
            '{"leader":"node1","member":"node2","scheduled_at":"2026-07-01T10:00:00+00:00"}',
            "node1",
            "node2",
            "2026-07-01T10:00:00+00:00",
        ),
        ('{"leader":"node1"}', "node1", None, None),
        ('{"member":"node2"}', None, "node2", None),
        ("{}", None, None, None),
    ],
)
def test_failover_round_trips(value: str, leader: str | None, member: str | None, scheduled: str | None) -> None:
    fo = f.decode_failover(value, mod_revision=4)
    assert (fo.leader, fo.member, fo.scheduled_at, fo.mod_revision) == (leader, member, scheduled, 4)
    assert f.encode_failover(fo) == value


def test_failover_legacy_and_garbage() -> None:
    legacy = f.decode_failover("node1:node2")
    assert (legacy.leader, legacy.member) == ("node1", "node2")
    assert f.decode_failover(":node2").leader is None and f.decode_failover(":node2").member == "node2"
    for garbage in ("", "null", "[]", '"x"'):
        assert f.decode_failover(garbage).empty
    assert f.encode_failover(Failover()) == "{}"


def test_history_round_trips_with_old_short_rows() -> None:
    value = (
        '[[1,25165984,"no recovery target specified"],'
        '[2,50331808,"no recovery target specified","2026-07-01T10:00:00.123456+00:00"],'
        '[3,67108992,"no recovery target specified","2026-07-01T10:05:00.654321+00:00","node2"]]'
    )
    history = f.decode_history(value)
    assert history == (
        HistoryEntry(1, 25165984, "no recovery target specified"),
        HistoryEntry(2, 50331808, "no recovery target specified", "2026-07-01T10:00:00.123456+00:00"),
        HistoryEntry(3, 67108992, "no recovery target specified", "2026-07-01T10:05:00.654321+00:00", "node2"),
    )
    assert f.encode_history(history) == value
    assert f.encode_history(()) == "[]"


def test_history_skips_bad_rows() -> None:
    assert f.decode_history('[[1,2],"x",[null,2,"r"],[2,"100","r"]]') == (HistoryEntry(2, 100, "r"),)
    assert f.decode_history("{") == () and f.decode_history("{}") == ()


@pytest.mark.parametrize(
    "value",
    [
        '{"optime":67393896,"slots":{"node2":67393896,"node3":67393896},"retain_slots":["node1","node2","node3"]}',
        '{"optime":50331808}',
        '{"optime":50331808,"retain_slots":["node1"]}',
    ],
)
def test_status_round_trips(value: str) -> None:
    assert f.encode_status(f.decode_status(value)) == value


def test_status_decoding_is_tolerant() -> None:
    assert f.decode_status("12345") == ClusterStatus(optime=12345)  # legacy optime/leader value
    s = f.decode_status('{"optime":"77","slots":"{\\"s\\":5}","retain_slots":"[\\"a\\"]"}')
    assert s == ClusterStatus(optime=77, slots={"s": 5}, retain_slots=("a",))
    assert f.decode_status('{"optime":1,"slots":{"a":"x","b":2}}').slots == {"b": 2}
    for garbage in ("", "{", "[]", "true"):
        assert f.decode_status(garbage) == ClusterStatus()
    assert f.encode_status(ClusterStatus()) == "{}"


def test_failsafe_round_trips() -> None:
    value = '{"node1":"http://10.0.0.1:8008/patroni","node2":"http://10.0.0.2:8008/patroni"}'
    assert f.encode_failsafe(f.decode_failsafe(value) or {}) == value
    assert f.decode_failsafe("[]") is None and f.decode_failsafe("{") is None


def test_cluster_prefix_normalises_namespace() -> None:
    assert f.cluster_prefix("/service/", "demo") == "/service/demo/"
    assert f.cluster_prefix("service", "demo") == "/service/demo/"
    assert f.cluster_prefix("/a//b/", "demo") == "/a/b/demo/"
    with pytest.raises(ValueError):
        f.cluster_prefix("service", "")


def test_build_view_from_rows() -> None:
    p = "/service/demo/"
    rows = [
        (p + "config", '{"ttl":30}', 5, 2, 0),
        (p + "initialize", "7268616322854375442", 3, 3, 0),
        (p + "leader", "node1", 20, 10, 0x77),
        (p + "members/node2", REPLICA, 21, 11, 0x78),
        (p + "members/node1", PRIMARY, 22, 12, 0x77),
        (p + "members/node1/junk", "x", 23, 23, 0),
        (p + "sync", '{"leader":"node1","quorum":0,"sync_standby":"node2"}', 24, 6, 0),
        (p + "failover", "{}", 25, 25, 0),
        (p + "history", '[[1,25165984,"no recovery target specified"]]', 26, 26, 0),
        (p + "status", '{"optime":67393896}', 27, 7, 0),
        (p + "failsafe", '{"node1":"http://h1:8008/patroni"}', 28, 28, 0),
    ]
    view = f.build_view(rows, p)
    assert view.config == {"ttl": 30} and view.config_revision == 5
    assert view.initialize == "7268616322854375442" and view.initialize_revision == 3
    assert view.leader is not None and (view.leader.name, view.leader.mod_revision, view.leader.lease) == (
        "node1",
        20,
        0x77,
    )
    assert [m.name for m in view.members] == ["node1", "node2"]
    assert view.member("node2") is not None and view.member("node2").mod_revision == 21  # type: ignore[union-attr]
    assert view.sync is not None and view.sync.sync_standby == ("node2",) and view.sync.mod_revision == 24
    assert view.failover is not None and view.failover.empty and view.failover.mod_revision == 25
    assert view.history == (HistoryEntry(1, 25165984, "no recovery target specified"),)
    assert view.status.optime == 67393896
    assert view.failsafe == {"node1": "http://h1:8008/patroni"}


def test_build_view_of_garbage_never_raises() -> None:
    rows = [
        (k, "\x00{garbage", 1, 1, 0)
        for k in ("config", "leader", "members/a", "sync", "failover", "history", "status", "failsafe")
    ]
    view = f.build_view(rows)
    assert view.config == {} and view.config_revision == 1
    assert view.sync is not None and view.sync.leader is None
    assert view.history == () and view.status == ClusterStatus() and view.failsafe is None
    assert view.members[0].name == "a"
    empty = f.build_view([])
    assert empty.leader is None and empty.config is None and empty.initialize is None and empty.sync is None


def test_legacy_optime_key_feeds_status() -> None:
    view = f.build_view([("optime/leader", "4242", 1, 1, 0)])
    assert view.status.optime == 4242


def test_which_changes_wake_the_loop() -> None:
    for key in ("leader", "config", "status", "failover", "sync", "initialize"):
        assert f.wakes_watcher(key, deleted=False) and f.wakes_watcher(key, deleted=True)
    assert not f.wakes_watcher("members/node1", deleted=False)
    assert f.wakes_watcher("members/node1", deleted=True)
    assert not f.wakes_watcher("history", deleted=False) and not f.wakes_watcher("failsafe", deleted=False)


@pytest.mark.parametrize(
    "host, target",
    [
        ("10.0.0.1:2379", "10.0.0.1:2379"),
        ("http://node1:2379", "node1:2379"),
        ("node1", "node1:2379"),
        ("http://node1:22379/", "node1:22379"),
        ("[::1]:2379", "[::1]:2379"),
        ("[::1]", "[::1]:2379"),
        ("::1", "[::1]:2379"),
    ],
)
def test_etcd3_hosts_as_patroni_accepts_them(host: str, target: str) -> None:
    assert parse_host(host) == target


@pytest.mark.parametrize("host", ["", "https://node1:2379", "node1:abc", "node1:2379/v3"])
def test_bad_etcd3_hosts_are_refused(host: str) -> None:
    with pytest.raises(ValueError, match="etcd host"):
        parse_host(host)
