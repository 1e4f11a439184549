"""What one node knows about itself in one tick (LocalState) and the HA settings decide() obeys."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from appliance.core.model import HistoryEntry, Member, Role
from appliance.core.tags import Tags


class DataDir(StrEnum):
    """The data directory as found on disk."""

    EMPTY = "empty"  # missing or empty: safe to initdb or clone into
    VALID = "valid"  # a PostgreSQL cluster
    INVALID = "invalid"  # not empty, not a cluster: never touched automatically
    INCOMPLETE = "incomplete"  # our own initdb/clone/rewind was interrupted: unusable, ours to wipe


@dataclass(frozen=True)
class StandbyConn:
    """One row of pg_stat_replication on the primary."""

    application_name: str
    state: str
    sync_state: str
    flush_lsn: int | None = None


@dataclass(frozen=True)
class PeerStatus:
    """A peer's answer to GET /patroni during a leader race (reachable=False: no answer in time)."""

    name: str
    reachable: bool
    role: str | None = None
    running: bool = False
    wal_position: int | None = None
    tags: Tags = field(default_factory=Tags)
    # What its API sees of PostgreSQL itself, now (a live postmaster and no standby.signal, the
    # fencer's sight). None: not reported (an API that cannot look into the data directory).
    writable: bool | None = None
    # How long before this answer its manager published the state it comes from (the peer's own
    # clock: a duration). The API answers from that state, up to a loop old. None: not reported.
    published_ago: float | None = None
    starting: bool = False  # a start or restart of its PostgreSQL is in flight (state starting/restarting)


@dataclass(frozen=True)
class JobResult:
    """Outcome of the last long job (bootstrap, clone, rewind, reinitialize), consumed by one tick."""

    job: str
    ok: bool
    detail: str = ""
    retryable: bool = False  # failed before changing anything (e.g. the source was unreachable)


@dataclass(frozen=True)
class Retry:
    """Back-off after a job that failed (or left PostgreSQL down): no new job before ``until``."""

    job: str
    failures: int
    until: float  # monotonic


@dataclass(frozen=True)
class LocalState:
    """This node's observation for one tick. ``now`` is monotonic; ``wall_time`` is epoch seconds."""

    name: str
    now: float
    wall_time: float = 0.0
    data_dir: DataDir = DataDir.EMPTY
    sysid: str | None = None
    running: bool = False
    role: Role | None = None  # PRIMARY or REPLICA while running
    timeline: int | None = None
    wal_position: int | None = None  # primary: flush LSN; replica: max(receive, replay)
    replication_state: str | None = None  # "streaming" | "in archive recovery"
    following: str | None = None  # member we are configured to stream from
    was_primary: bool = False  # stopped data dir was last a primary (pg_control)
    job: str | None = None  # a long job in progress
    job_result: JobResult | None = None
    lease_ok_at: float | None = None  # when the last successful lease keepalive was sent
    pg_down_since: float | None = None  # first tick we held the lock with PostgreSQL down
    replication: tuple[StandbyConn, ...] = ()
    synchronous_standby_names: str = ""
    ssn_set_lsn: int | None = None  # primary's flush LSN right after the current ssn took effect
    config_stale: bool = False  # effective parameters differ from what PostgreSQL runs with
    peers: tuple[PeerStatus, ...] = ()
    pending_restart: bool = False  # PostgreSQL reports settings that need a restart
    leader_alive: bool | None = None  # the leader's API confirmed it runs as primary (None: not asked)
    # The members of our last read that had a leader key (Patroni's old_cluster) and those seen since:
    # member keys vanish with their lease, so a leader race asks those gone whether they accept writes.
    remembered: tuple[Member, ...] = ()
    leader_free_since: float | None = None  # monotonic: the first tick that found the leader key free (this vacancy)
    fence_problem: str | None = None  # why nothing could fence this node if its manager froze
    stopping: bool = False  # the manager was told to stop: never take the lock or promote now
    retry: Retry | None = None  # the back-off after failed jobs
    history: tuple[HistoryEntry, ...] = ()  # our own timeline's history file: the switches behind it
    rewound_from: tuple[str, int] | None = None  # (leader, its timeline) of our last successful rewind
    not_streaming_since: float | None = None  # a replica with a known leader, not streaming since
    retained: tuple[str, ...] = ()  # vanished members whose slots are kept (member_slots_ttl)
    failsafe_ok: bool | None = None  # DCS down, we are primary: every member in /failsafe confirmed us
    failsafe_leader: str | None = None  # a primary that POSTed /failsafe to us within ttl (an episode)


@dataclass(frozen=True)
class HaSettings:
    """The settings decide() reads: the dynamic config plus this node's tags."""

    ttl: int = 5
    loop_wait: int = 1
    retry_timeout: int = 2
    maximum_lag_on_failover: int = 1048576
    maximum_lag_on_syncnode: int = -1
    primary_start_timeout: int = 30
    primary_stop_timeout: int = 0
    max_timelines_history: int = 0
    member_slots_ttl: int = 1800
    failsafe_mode: bool = False
    synchronous_mode: bool = False  # on, or quorum
    synchronous_quorum: bool = False  # synchronous_mode: quorum (ANY n commit, core/quorum.py)
    synchronous_mode_strict: bool = False
    synchronous_node_count: int = 1
    pause: bool = False
    use_pg_rewind: bool = True
    use_slots: bool = True
    check_timeline: bool = False
    tags: Tags = field(default_factory=Tags)  # this node's own
    permanent_slots: tuple[str, ...] = field(default_factory=tuple)

    @property
    def sync_only(self) -> bool:
        """Only the sync key's members may be promoted (synchronous_mode on; quorum mode counts votes)."""
        return self.synchronous_mode and not self.synchronous_quorum

    def sync_only_for(self, switchover: bool) -> bool:
        """Whether only the sync key's members may be promoted now: also in quorum mode while a
        switchover (a failover key naming the leader) is in force, as Patroni has it: its candidate
        must be a voter, or it could lack commits the voters acknowledged. A failover without a
        leader may still name an asynchronous member."""
        return self.sync_only or (self.synchronous_mode and switchover)
