"""The actions decide() returns; the executor performs them in order and stops at the first failure."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TypeAlias, cast, get_args

from appliance.core.model import HistoryEntry, Member, Role


class DemoteMode(StrEnum):
    GRACEFUL = "graceful"  # switchover / shutdown: fast stop, replicas receive the shutdown checkpoint
    IMMEDIATE = "immediate"  # lost the lock or another leader exists: stop accepting writes now


@dataclass(frozen=True)
class Action:
    reason: str

    @property
    def kind(self) -> str:
        return type(self).__name__


@dataclass(frozen=True)
class Wait(Action):
    """Nothing to do this tick; the reason says what we are waiting for."""


@dataclass(frozen=True)
class Fatal(Action):
    """Refuse to continue (e.g. the data directory belongs to another cluster)."""


@dataclass(frozen=True)
class TakeInitialize(Action):
    """Race for the ``initialize`` key (create-only)."""


@dataclass(frozen=True)
class SetInitialize(Action):
    sysid: str = ""


@dataclass(frozen=True)
class CancelInitialize(Action):
    revision: int | None = None


@dataclass(frozen=True)
class AcquireLeader(Action):
    """Create the leader key on our lease (atomic); fails the chain if someone else got it."""


@dataclass(frozen=True)
class UpdateLeader(Action):
    """Confirm the leader key is ours and on our current lease."""


@dataclass(frozen=True)
class ReleaseLeader(Action):
    pass


@dataclass(frozen=True)
class WriteConfigKey(Action):
    """Seed the DCS ``config`` key from bootstrap.dcs (create-only)."""


@dataclass(frozen=True)
class Bootstrap(Action):
    """Long job: initdb with checksums, start as primary, create the replication role."""


@dataclass(frozen=True)
class Clone(Action):
    """Long job: pg_basebackup from ``source`` into the empty data dir, then start as its replica."""

    source: Member | None = None


@dataclass(frozen=True)
class Rewind(Action):
    """Long job: stop, pg_rewind from ``source``, then start as its replica."""

    source: Member | None = None


@dataclass(frozen=True)
class Reinitialize(Action):
    """Long job: wipe the data dir and clone afresh from ``source``."""

    source: Member | None = None


@dataclass(frozen=True)
class WipeDataDir(Action):
    """Empty a data directory our own interrupted bootstrap left behind."""


@dataclass(frozen=True)
class StartPostgres(Action):
    role: Role = Role.REPLICA
    leader: Member | None = None  # whom a replica follows (None: read-only, no upstream)


@dataclass(frozen=True)
class Promote(Action):
    strict_sync: bool = False  # keep commits blocked until a sync standby is confirmed
    history: tuple[HistoryEntry, ...] = ()  # the cluster's history so far, extended after promotion
    keep_history: int = 0  # max_timelines_history: the newest entries kept (0: all)
    timeout: float = 30.0  # give up (and decide again next tick) before the just-renewed lease runs out


@dataclass(frozen=True)
class Demote(Action):
    mode: DemoteMode = DemoteMode.IMMEDIATE
    release: bool = True  # release the leader key once PostgreSQL is down


@dataclass(frozen=True)
class Follow(Action):
    """Point primary_conninfo/primary_slot_name at ``leader`` (reload; no restart on PG 13+)."""

    leader: Member | None = None


@dataclass(frozen=True)
class WriteHistory(Action):
    """Replace the DCS ``history`` with the leader's own timeline lineage (missing or wrong rows)."""

    history: tuple[HistoryEntry, ...] = ()


@dataclass(frozen=True)
class WriteFailsafe(Action):
    """Put the ``failsafe`` key: every member's name and api_url, the ones a primary cut off from
    the DCS must all reach (POST /failsafe) to keep running."""

    members: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class WriteStatus(Action):
    optime: int = 0
    retain_slots: tuple[str, ...] = ()  # every member whose slot the leader keeps


@dataclass(frozen=True)
class EnsureSlots(Action):
    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class WriteSync(Action):
    """Write the ``sync`` key: leader = us, sync_standby = ``standbys``, ``quorum`` (CAS on ``revision``)."""

    standbys: tuple[str, ...] = ()
    revision: int | None = None
    quorum: int = 0  # Patroni writes 0 outside quorum mode


@dataclass(frozen=True)
class SetSyncStandbyNames(Action):
    value: str = ""


@dataclass(frozen=True)
class ClearFailover(Action):
    revision: int | None = None


@dataclass(frozen=True)
class ReconcileConfig(Action):
    """Rewrite our PostgreSQL configuration from the effective settings and reload."""


@dataclass(frozen=True)
class RestartPostgres(Action):
    """Long job: fast stop, then start again in the same role (the lock is kept meanwhile)."""

    timeout: float | None = None  # POST /restart's timeout: how long to wait for connections
    role: Role | None = None  # the role PostgreSQL ran in when the restart was decided (published meanwhile)


@dataclass(frozen=True)
class ReloadConfig(Action):
    """Re-read the local configuration and reload PostgreSQL."""


# Actions that start a long job or change which node may write: held back while stopping or backing off.
JOB_ACTIONS: tuple[type[Action], ...] = (Bootstrap, Clone, Rewind, Reinitialize, StartPostgres, RestartPostgres)
TAKEOVER_ACTIONS: tuple[type[Action], ...] = (TakeInitialize, AcquireLeader, Promote)


# Every concrete action, as closed unions: the executor matches over them (mypy checks it is exhaustive).
DcsAction: TypeAlias = (
    TakeInitialize | SetInitialize | CancelInitialize | AcquireLeader | UpdateLeader | ReleaseLeader
    | WriteConfigKey | WriteFailsafe | WriteHistory | WriteStatus | WriteSync | ClearFailover
)
PgAction: TypeAlias = (
    Wait | Fatal | Bootstrap | Clone | Rewind | Reinitialize | WipeDataDir | StartPostgres | Promote | Demote
    | Follow | EnsureSlots | SetSyncStandbyNames | ReconcileConfig | RestartPostgres | ReloadConfig
)
AnyAction: TypeAlias = DcsAction | PgAction
CONCRETE: tuple[type[Action], ...] = get_args(AnyAction)


def closed(act: Action) -> AnyAction:
    """``act`` as a member of the closed union (a new Action class must join AnyAction first)."""
    if not isinstance(act, CONCRETE):
        raise TypeError(f"{type(act).__name__} is not one of the executor's actions")
    return cast(AnyAction, act)
