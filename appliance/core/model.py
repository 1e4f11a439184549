"""Immutable snapshot types shared by the pure core, the DCS adapter and the manager."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from appliance.core.tags import Tags


class Role(StrEnum):
    """PostgreSQL role as reported by Patroni (``role`` in members/<name> and /patroni)."""

    PRIMARY = "primary"
    REPLICA = "replica"
    STANDBY_LEADER = "standby_leader"
    UNINITIALIZED = "uninitialized"
    MASTER = "master"  # what Patroni < 3.0 reports for PRIMARY; read, never written


class ClusterRole(StrEnum):
    """A member's role in the cluster as GET /cluster names it (``role`` of each entry)."""

    LEADER = "leader"
    STANDBY_LEADER = "standby_leader"
    SYNC_STANDBY = "sync_standby"
    QUORUM_STANDBY = "quorum_standby"  # a voter of the sync key in synchronous_mode: quorum
    REPLICA = "replica"


class ReplicationState(StrEnum):
    """How a running replica gets WAL (``replication_state``; GET /cluster shows it as a replica's state)."""

    STREAMING = "streaming"
    IN_ARCHIVE_RECOVERY = "in archive recovery"


class PgState(StrEnum):
    """PostgreSQL process state, with Patroni's wording (``state`` in members/<name>)."""

    RUNNING = "running"
    STARTING = "starting"
    STOPPED = "stopped"
    STOPPING = "stopping"
    CRASHED = "crashed"
    START_FAILED = "start failed"
    INITDB = "initializing new cluster"
    INITDB_FAILED = "initdb failed"
    CREATING_REPLICA = "creating replica"
    RESTARTING = "restarting"
    REWINDING = "rewinding"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Member:
    """One ``members/<name>`` key: what a node publishes about itself every loop."""

    name: str
    conn_url: str = ""
    api_url: str = ""
    state: PgState | str = PgState.UNKNOWN  # a str: a state some other Patroni version wrote
    role: Role | str = Role.UNINITIALIZED
    version: str = ""
    xlog_location: int | None = None
    timeline: int | None = None
    replication_state: ReplicationState | str | None = None
    receive_lsn: int | None = None
    replay_lsn: int | None = None
    tags: Tags = field(default_factory=Tags)
    pending_restart: bool = False
    pending_restart_reason: dict[str, Any] | None = None
    # Anything else a Patroni member may carry (proxy_url, scheduled_restart, ...), kept verbatim.
    extra: dict[str, Any] = field(default_factory=dict)
    # etcd bookkeeping; not part of the JSON value.
    mod_revision: int = 0


@dataclass(frozen=True)
class Leader:
    """The ``leader`` key: the member name, attached to its owner's lease."""

    name: str
    mod_revision: int = 0
    lease: int = 0


@dataclass(frozen=True)
class SyncState:
    """The ``sync`` key: ``{"leader": ..., "sync_standby": "a,b" | null, "quorum": int | null}``."""

    leader: str | None = None
    sync_standby: tuple[str, ...] = ()
    quorum: int | None = None
    mod_revision: int = 0

    def matches(self, name: str | None) -> bool:
        return name is not None and (name == self.leader or name in self.sync_standby)


@dataclass(frozen=True)
class Failover:
    """The ``failover`` key: a requested switchover (``leader`` set) or failover (only ``member``)."""

    leader: str | None = None
    member: str | None = None
    scheduled_at: str | None = None
    mod_revision: int = 0

    @property
    def empty(self) -> bool:
        return not self.leader and not self.member


@dataclass(frozen=True)
class HistoryEntry:
    """One ``history`` row: ``[timeline, lsn, reason, iso_timestamp, new_leader]``."""

    timeline: int
    lsn: int
    reason: str
    timestamp: str | None = None
    new_leader: str | None = None


@dataclass(frozen=True)
class ClusterStatus:
    """The ``status`` key: ``{"optime": int, "slots": {...}, "retain_slots": [...]}``."""

    optime: int | None = None
    slots: dict[str, int] = field(default_factory=dict)
    retain_slots: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClusterView:
    """Everything under ``/<namespace>/<scope>/``, read once (linearizably) per tick."""

    initialize: str | None = None  # None: key absent; "": bootstrap running; else the sysid
    initialize_revision: int = 0
    config: dict[str, Any] | None = None
    config_revision: int = 0
    leader: Leader | None = None
    members: tuple[Member, ...] = ()
    sync: SyncState | None = None
    failover: Failover | None = None
    history: tuple[HistoryEntry, ...] = ()
    status: ClusterStatus = field(default_factory=ClusterStatus)
    failsafe: dict[str, str] | None = None

    def vanished(self) -> tuple[str, ...]:
        """Members whose key is gone (a killed node) but whose slot the leader keeps: stopped."""
        present = {m.name for m in self.members}
        return tuple(sorted(n for n in self.status.retain_slots if n not in present))

    def member(self, name: str | None) -> Member | None:
        for m in self.members:
            if m.name == name:
                return m
        return None

    @property
    def leader_name(self) -> str | None:
        return self.leader.name if self.leader else None
