"""The CLI's pure formatting: member rows, the patronictl-style table, json/yaml/tsv, history, topology."""

from __future__ import annotations

import json

import yaml

from appliance.cli.ctl.formatting import (
    history_rows,
    member_rows,
    pretty_table,
    render,
    render_members,
    topology_order,
)
from appliance.core.model import (
    ClusterStatus,
    ClusterView,
    Failover,
    HistoryEntry,
    Leader,
    Member,
    PgState,
    Role,
    SyncState,
)
from appliance.core.tags import Tags
from appliance.core.wal import format_lsn

MIB = 1024 * 1024


def _member(name: str, host: str, role: str = Role.REPLICA, **kw: object) -> Member:
    return Member(name=name, conn_url=f"postgres://{host}:5432/postgres", api_url=f"http://{host}:8008/patroni",
                  state=PgState.RUNNING, role=role, timeline=2, **kw)  # type: ignore[arg-type]


def view(**over: object) -> ClusterView:
    members = (
        _member("n1", "10.0.0.1", Role.PRIMARY, xlog_location=0x5000000 + 3 * MIB),
        _member("n2", "10.0.0.2", replication_state="streaming", receive_lsn=0x5000000 + 3 * MIB,
                replay_lsn=0x5000000 + MIB),
        _member("n3", "10.0.0.3", replication_state="streaming", receive_lsn=0x5000000, replay_lsn=0x5000000,
                tags=Tags({"nofailover": True})),
    )
    fields: dict[str, object] = {
        "initialize": "7300000000000000001",
        "config": {"ttl": 30, "synchronous_mode": True},
        "leader": Leader("n1"),
        "members": members,
        "sync": SyncState(leader="n1", sync_standby=("n2",)),
        "status": ClusterStatus(optime=0x5000000 + 3 * MIB),
        "history": (HistoryEntry(1, 83886296, "no recovery target specified", "2024-01-01T00:00:00+00:00", "n1"),),
    }
    fields.update(over)
    return ClusterView(**fields)  # type: ignore[arg-type]


def test_member_rows_roles_states_lsns_and_lag_in_mb() -> None:
    columns, rows = member_rows(view())
    assert columns == ["Member", "Host", "Role", "State", "TL", "Receive LSN", "Receive Lag", "Replay LSN",
                       "Replay Lag", "Tags"]
    by_name = {r[0]: dict(zip(columns, r, strict=True)) for r in rows}
    assert by_name["n1"]["Role"] == "Leader"
    assert by_name["n1"]["Receive LSN"] == ""
    assert by_name["n2"]["Role"] == "Sync Standby"
    assert by_name["n2"]["State"] == "streaming"
    assert (by_name["n2"]["Receive Lag"], by_name["n2"]["Replay Lag"]) == (0, 2)
    assert by_name["n2"]["Replay LSN"] == format_lsn(0x5000000 + MIB)
    assert by_name["n3"]["Role"] == "Replica"
    assert by_name["n3"]["Receive Lag"] == 3
    assert by_name["n3"]["Tags"] == '{"nofailover": true}'


def test_sync_standby_only_in_synchronous_mode() -> None:
    _, rows = member_rows(view(config={"synchronous_mode": False}))
    assert [r[2] for r in rows] == ["Leader", "Replica", "Replica"]


def test_port_shown_when_nodes_share_a_host() -> None:
    members = (Member("a", conn_url="postgres://127.0.0.1:5432/postgres"),
               Member("b", conn_url="postgres://127.0.0.1:5433/postgres"))
    _, rows = member_rows(ClusterView(members=members))
    assert [r[1] for r in rows] == ["127.0.0.1:5432", "127.0.0.1:5433"]
    assert [r[5] for r in rows] == ["unknown", "unknown"]


def test_pretty_table_has_title_in_border_and_footer_lines() -> None:
    text = render_members("demo", view(config={"pause": True, "synchronous_mode": True},
                                       failover=Failover("n1", "n2", "2030-01-01T00:00:00+00:00")))
    lines = text.splitlines()
    assert lines[0].startswith("+ Cluster: demo (7300000000000000001) -")
    assert lines[1].split("|")[1:-1] == [" Member ", " Host     ", " Role         ", " State     ", " TL ",
                                         " Receive LSN ", " Lag ", " Replay LSN ", " Lag ", " Tags                 "]
    assert len({len(line) for line in lines[:7]}) == 1  # a rectangle
    assert " Maintenance mode: on" in lines
    assert " Switchover scheduled at: 2030-01-01T00:00:00+00:00" in lines
    assert " " * 20 + "from: n1" in lines
    assert " " * 22 + "to: n2" in lines


def test_long_title_widens_the_table() -> None:
    text = pretty_table(["A"], [["x"]], " Cluster: a-very-long-cluster-name (uninitialized) ")
    first, *rest = text.splitlines()
    assert first.startswith("+ Cluster: a-very-long-cluster-name (uninitialized) ")
    assert all(len(line) == len(first) for line in rest)


def test_json_and_yaml_drop_empty_cells_like_patronictl() -> None:
    items = json.loads(render_members("demo", view(), "json"))
    assert len(items) == 3
    assert items[0] == {"Cluster": "demo", "Member": "n1", "Host": "10.0.0.1", "Role": "Leader", "State": "running",
                        "TL": 2}
    assert items[1]["Replay Lag"] == 2
    assert yaml.safe_load(render_members("demo", view(), "yaml")) == items  # the enum states as plain strings


def test_tsv_has_a_header_and_the_cluster_column() -> None:
    lines = render_members("demo", view(), "tsv").splitlines()
    assert lines[0].split("\t")[:3] == ["Cluster", "Member", "Host"]
    assert lines[1].split("\t")[:4] == ["demo", "n1", "10.0.0.1", "Leader"]


def test_history_rows() -> None:
    columns, rows = history_rows(view())
    assert columns == ["TL", "LSN", "Reason", "Timestamp", "New Leader"]
    assert rows == [[1, 83886296, "no recovery target specified", "2024-01-01T00:00:00+00:00", "n1"]]
    assert json.loads(render(columns, rows, "json"))[0]["New Leader"] == "n1"


def test_topology_follows_replicatefrom() -> None:
    v = view()
    cascaded = tuple(m if m.name != "n3" else Member(**{**m.__dict__, "tags": Tags({"replicatefrom": "n2"})})
                     for m in v.members)
    assert list(topology_order(ClusterView(leader=Leader("n1"), members=cascaded))) == [(0, "n1"), (1, "n2"),
                                                                                        (2, "n3")]
    text = render_members("demo", ClusterView(leader=Leader("n1"), members=cascaded), topology=True)
    assert "| + n2 " in text and "|   + n3 " in text


def test_a_replica_a_few_kilobytes_behind_never_shows_zero_lag() -> None:
    from appliance.cli.ctl.formatting import _lag_mb

    assert _lag_mb(10 * MIB, 10 * MIB) == 0
    assert _lag_mb(10 * MIB, 8 * MIB) == 2
    assert _lag_mb(10 * MIB, 10 * MIB - 160 * 1024) == 0.156  # 160 kB behind
    assert _lag_mb(10 * MIB, 10 * MIB - 8) == 0.001  # any lag at all shows


def test_a_member_whose_key_vanished_but_whose_slot_is_kept_shows_as_stopped() -> None:
    from dataclasses import replace as dc_replace

    from appliance.manager.publish import cluster_doc

    v = view()
    gone = dc_replace(v, status=dc_replace(v.status, retain_slots=(*(m.name for m in v.members), "n9")))
    columns, rows = member_rows(gone)
    by_name = {r[0]: dict(zip(columns, r, strict=True)) for r in rows}
    assert by_name["n9"]["State"] == "stopped" and by_name["n9"]["Role"] == "Replica"
    assert "State: stopped" in render_members("demo", gone, "yaml")
    doc = cluster_doc("demo", gone)
    assert [m for m in doc["members"] if m["name"] == "n9"] == [
        {"name": "n9", "role": "replica", "state": "stopped", "api_url": None, "host": None, "port": None,
         "timeline": None, "tags": {}}]
    assert json.loads(json.dumps(doc)) == doc


def test_quorum_standby_role_in_quorum_mode() -> None:
    """patronictl prints the quorum_standby role as "Quorum Standby" (role.replace('_', ' ').title())."""
    _, rows = member_rows(view(config={"synchronous_mode": "quorum"},
                               sync=SyncState(leader="n1", sync_standby=("n2", "n3"), quorum=1)))
    assert [r[2] for r in rows] == ["Leader", "Quorum Standby", "Quorum Standby"]
