"""Build what the node publishes: its members/<name> value and the API's state document."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from appliance import PATRONI_VERSION, __version__
from appliance.channel.state import ClusterDoc, ScheduledRestartDoc, StateDoc
from appliance.core.flags import synchronous_mode
from appliance.core.model import ClusterRole, ClusterView, Member, PgState, Role
from appliance.core.state import HaSettings
from appliance.core.tags import Tags
from appliance.net.address import conn_url_address
from appliance.postgres.status import PgStatus


def pg_state(status: PgStatus, job: str | None) -> PgState:
    """Patroni's ``state`` wording for this node."""
    if job in ("clone", "reinitialize"):
        return PgState.CREATING_REPLICA
    if job == "bootstrap":
        return PgState.INITDB
    if job == "rewind":
        return PgState.REWINDING
    if job == "start":
        return PgState.STARTING
    if job == "restart" and not status.running:
        return PgState.RESTARTING
    if status.running:
        return PgState.RUNNING if status.error is None else PgState.STARTING
    return PgState.STOPPED


def pg_role(status: PgStatus, starting_as: Role | None = None) -> Role | str:
    """Patroni's ``role`` for this node: PostgreSQL's own while it runs, else the role a start or
    restart job in flight brings it up in (as Patroni says "primary" while it starts a primary
    after a crash: a leader race must wait for a server that accepts writes the moment it is up)."""
    return status.role or starting_as or Role.UNINITIALIZED


def member_value(name: str, conn_url: str, api_url: str, status: PgStatus, job: str | None,
                 tags: Mapping[str, Any], paused: bool = False,
                 scheduled_restart: ScheduledRestartDoc | None = None, starting_as: Role | None = None) -> Member:
    extra: dict[str, Any] = {}
    if paused:
        extra["pause"] = True
    if scheduled_restart:
        extra["scheduled_restart"] = {"schedule": scheduled_restart.get("schedule")}
    return Member(
        name=name,
        conn_url=conn_url,
        api_url=api_url,
        state=pg_state(status, job),
        role=pg_role(status, starting_as),
        version=PATRONI_VERSION,
        xlog_location=status.wal_position,
        timeline=status.timeline,
        replication_state=status.replication_state if status.role == Role.REPLICA else None,
        # Right after a rewind the walreceiver restarts at a segment start below the replay point.
        receive_lsn=(max(status.receive_lsn, status.replay_lsn or 0) if status.receive_lsn is not None
                     else None) if status.role == Role.REPLICA else None,
        replay_lsn=status.replay_lsn if status.role == Role.REPLICA else None,
        tags=Tags.from_json(tags),
        pending_restart=bool(status.pending_restart),
        pending_restart_reason={p.name: {"old_value": p.old_value, "new_value": p.new_value}
                                for p in status.pending_restart} or None,
        extra=extra,
    )


def patroni_doc(name: str, scope: str, status: PgStatus, view: ClusterView | None, job: str | None,
                tags: dict[str, Any], paused: bool, dcs_last_seen: float | None,
                starting_as: Role | None = None) -> dict[str, Any]:
    """The GET /patroni body, in Patroni's shape."""
    doc: dict[str, Any] = {
        "state": pg_state(status, job),
        "role": pg_role(status, starting_as),
        "patroni": {"version": PATRONI_VERSION, "scope": scope, "name": name, "appliance_version": __version__},
        "tags": dict(tags),
        "pause": paused,
    }
    if status.postmaster_start_time is not None:
        doc["postmaster_start_time"] = status.postmaster_start_time.isoformat()
    if status.server_version:
        doc["server_version"] = status.server_version
    if status.timeline is not None:
        doc["timeline"] = status.timeline
    if status.system_identifier:
        doc["database_system_identifier"] = status.system_identifier
    if status.role == Role.PRIMARY:
        doc["xlog"] = {"location": status.wal_lsn}
    elif status.role == Role.REPLICA:
        doc["xlog"] = {
            "received_location": status.receive_lsn,
            "replayed_location": status.replay_lsn,
            "replayed_timestamp": status.replay_timestamp.isoformat() if status.replay_timestamp else None,
            "paused": bool(status.replay_paused),
        }
        doc["replication_state"] = status.replication_state
    if status.replication:
        doc["replication"] = [
            {"usename": r.usename, "application_name": r.application_name, "client_addr": r.client_addr,
             "state": r.state, "sync_state": r.sync_state, "sync_priority": r.sync_priority}
            for r in status.replication
        ]
    if status.pending_restart:
        doc["pending_restart"] = True
        doc["pending_restart_reason"] = {p.name: {"old_value": p.old_value, "new_value": p.new_value}
                                         for p in status.pending_restart}
    if view is not None:
        doc["cluster_unlocked"] = view.leader is None
        if view.sync is not None and name in view.sync.sync_standby:
            # Patroni: quorum_standby in synchronous_mode quorum (a voter), else sync_standby.
            if not quorum_mode(view):
                doc["sync_standby"] = True
            elif status.role == Role.REPLICA:  # as Patroni: a replica only (a new primary may still be listed)
                doc["quorum_standby"] = True
    if dcs_last_seen is not None:
        doc["dcs_last_seen"] = int(dcs_last_seen)
    return doc


def quorum_mode(view: ClusterView) -> bool:
    """The cluster's dynamic config says synchronous_mode: quorum (the sync key lists voters)."""
    return synchronous_mode((view.config or {}).get("synchronous_mode"))[1]


def cluster_doc(scope: str, view: ClusterView) -> dict[str, Any]:
    """The GET /cluster body: every member with role, state, host, port, timeline and lag."""
    leader = view.leader_name
    sync = set(view.sync.sync_standby) if view.sync else set()
    sync_role = ClusterRole.QUORUM_STANDBY if quorum_mode(view) else ClusterRole.SYNC_STANDBY
    leader_member = view.member(leader)
    leader_lsn = (leader_member.xlog_location if leader_member else None) or view.status.optime
    members = []
    for m in sorted(view.members, key=lambda x: x.name):
        host, port = conn_url_address(m.conn_url)
        role = (ClusterRole.LEADER if m.name == leader
                else sync_role if m.name in sync else ClusterRole.REPLICA)
        entry: dict[str, Any] = {"name": m.name, "role": role, "state": m.replication_state or m.state
                                 if m.name != leader else m.state,
                                 "api_url": m.api_url, "host": host, "port": port, "timeline": m.timeline,
                                 "tags": m.tags.to_json()}
        if m.pending_restart:
            entry["pending_restart"] = True
        if m.name != leader and m.xlog_location is not None and leader_lsn is not None:
            entry["lag"] = max(0, leader_lsn - (m.replay_lsn or m.xlog_location))
            entry["receive_lag"] = max(0, leader_lsn - (m.receive_lsn or m.xlog_location))
            entry["replay_lag"] = entry["lag"]
            entry["receive_lsn"] = m.receive_lsn
            entry["replay_lsn"] = m.replay_lsn
        elif m.name == leader:
            entry["lsn"] = m.xlog_location
        members.append(entry)
    for name in view.vanished():
        members.append({"name": name, "role": ClusterRole.REPLICA, "state": PgState.STOPPED, "api_url": None,
                        "host": None, "port": None, "timeline": None, "tags": {}})
    members.sort(key=lambda e: e["name"])
    doc: dict[str, Any] = {"members": members, "scope": scope}
    if view.config and view.config.get("pause"):
        doc["pause"] = True
    if view.failover is not None and view.failover.scheduled_at:
        doc["scheduled_switchover"] = {"at": view.failover.scheduled_at, "from": view.failover.leader,
                                       "to": view.failover.member}
    return doc


def state_max_age(ha: HaSettings) -> float:
    """How old the published state may get before the API stops trusting it: one sleep plus a tick
    whose two DCS calls each used their whole retry budget, plus a margin. Never derived from ttl:
    a long ttl must not let a hung manager's last word answer health checks (it would, for minutes)."""
    return float(ha.loop_wait + 2 * ha.retry_timeout + 2)


def state_doc(*, name: str, scope: str, ha: HaSettings, status: PgStatus, view: ClusterView | None,
              job: str | None, tags: dict[str, Any], holder: bool, lease_expires: float | None,
              loop_started: float, now: float, dcs_last_seen: float | None,
              events: list[dict[str, Any]], starting_as: Role | None = None) -> StateDoc:
    """Everything the API needs, with monotonic timestamps for freshness checks."""
    cluster: ClusterDoc = {}
    if view is not None:
        cluster = {
            "leader": view.leader_name,
            "sync_standby": list(view.sync.sync_standby) if view.sync else [],
            "quorum": quorum_mode(view),
            "config": view.config,
            "history": [[h.timeline, h.lsn, h.reason, h.timestamp, h.new_leader] for h in view.history],
            "patroni_cluster": cluster_doc(scope, view),
        }
    return {
        "pid": os.getpid(),
        "name": name,
        "scope": scope,
        "updated_mono": now,
        "loop_started_mono": loop_started,
        "max_age": state_max_age(ha),
        "ttl": ha.ttl,
        "maximum_lag_on_failover": ha.maximum_lag_on_failover,
        "paused": ha.pause,
        "dcs_ok": view is not None,
        "lease": {"holder": holder, "expires_mono": lease_expires if holder else None},
        "postgres": {
            "running": status.queryable,
            "role": status.role,
            "timeline": status.timeline,
            "wal_position": status.wal_position,
            "receive_lsn": status.receive_lsn,
            "replay_lsn": status.replay_lsn,
            "replication_state": status.replication_state,
        },
        "job": job,
        "cluster_optime": view.status.optime if view is not None else None,
        "tags": dict(tags),
        "cluster": cluster,
        "patroni_doc": patroni_doc(name, scope, status, view, job, tags, ha.pause, dcs_last_seen, starting_as),
        "events": events,
    }
