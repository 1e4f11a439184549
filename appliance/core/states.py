"""A node's named states and the transition table every decision must follow (pure): classify()
names the state an observation shows, transition() finds the table row the chosen actions take."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from appliance.core import actions as a
from appliance.core.election import diverged
from appliance.core.model import ClusterView, ReplicationState, Role
from appliance.core.state import DataDir, LocalState


class NodeState(StrEnum):
    UNINITIALIZED = "uninitialized"  # empty data directory
    BOOTSTRAPPING = "bootstrapping"  # initdb of a new cluster runs
    CLONING = "cloning"  # pg_basebackup into an empty data directory runs
    RECLONING = "recloning"  # wipe and clone afresh runs
    REWINDING = "rewinding"  # pg_rewind runs
    STARTING = "starting"  # PostgreSQL is being started or restarted
    STOPPED = "stopped"  # a valid data directory, no PostgreSQL running
    PRIMARY = "primary"  # running read-write while holding the leader key
    UNLOCKED_PRIMARY = "unlocked primary"  # running read-write without a confirmed leader key
    REPLICA = "replica"  # running read-only and streaming
    RECOVERING = "recovering"  # running read-only, not streaming (catching up, or no upstream)
    DIVERGED = "diverged"  # read-only on a timeline that forked off the leader's history
    BROKEN = "broken"  # a data directory that cannot be used as it is
    FATAL = "fatal"  # the manager stops: going on could damage data


_JOBS = {"bootstrap": NodeState.BOOTSTRAPPING, "clone": NodeState.CLONING, "reinitialize": NodeState.RECLONING,
         "rewind": NodeState.REWINDING, "start": NodeState.STARTING, "restart": NodeState.STARTING}


def classify(view: ClusterView | None, local: LocalState) -> NodeState:
    """The state this observation shows (the source state of this tick's transition)."""
    if local.job is not None:
        return _JOBS.get(local.job, NodeState.STARTING)
    if local.data_dir in (DataDir.INVALID, DataDir.INCOMPLETE):
        return NodeState.BROKEN
    if local.data_dir is DataDir.EMPTY:
        return NodeState.UNINITIALIZED
    if not local.running:
        return NodeState.STOPPED
    holder = view is not None and view.leader_name == local.name
    if local.role is Role.PRIMARY:
        return NodeState.PRIMARY if holder else NodeState.UNLOCKED_PRIMARY
    if local.replication_state == ReplicationState.STREAMING:
        return NodeState.REPLICA
    if view is not None and not holder and view.leader is not None and local.leader_alive and diverged(view, local):
        return NodeState.DIVERGED
    return NodeState.RECOVERING


@dataclass(frozen=True)
class Transition:
    """One row: from ``source``, the decisive action ``action`` leads to ``target``; ``why`` says when."""

    source: NodeState | None  # None: from any state
    action: type[a.Action]
    target: NodeState
    why: str


S = NodeState
_RUNNING = (S.PRIMARY, S.UNLOCKED_PRIMARY, S.REPLICA, S.RECOVERING, S.DIVERGED)
_REPLICAS = (S.REPLICA, S.RECOVERING, S.DIVERGED)

TABLE: tuple[Transition, ...] = (
    Transition(S.UNINITIALIZED, a.Bootstrap, S.BOOTSTRAPPING, "won the initialize race: initdb a new cluster"),
    Transition(S.UNINITIALIZED, a.AcquireLeader, S.UNINITIALIZED,
               "won the initialize race: the leader key, then initdb in the same tick"),
    Transition(S.UNINITIALIZED, a.Clone, S.CLONING, "the cluster exists: clone from the running leader"),
    Transition(S.UNINITIALIZED, a.ReleaseLeader, S.UNINITIALIZED,
               "holding the key with an empty data directory (or a failed bootstrap): give it up"),
    Transition(S.BROKEN, a.WipeDataDir, S.UNINITIALIZED, "our own interrupted bootstrap: wipe it"),
    Transition(S.BROKEN, a.Reinitialize, S.RECLONING, "interrupted clone or rewind: re-clone from the leader"),
    Transition(S.BROKEN, a.ReleaseLeader, S.BROKEN, "the bootstrap failed: give the key up"),
    Transition(None, a.Fatal, S.FATAL, "not PostgreSQL's directory, or another cluster's: refuse to touch it"),
    Transition(S.STOPPED, a.StartPostgres, S.STARTING,
               "start in place under our key, read-only with no leader, or as the leader's replica"),
    Transition(S.STOPPED, a.Rewind, S.REWINDING, "a former primary: pg_rewind before following the new leader"),
    Transition(S.STOPPED, a.Reinitialize, S.RECLONING,
               "a former primary with use_pg_rewind off, a failed rewind, or POST /reinitialize"),
    Transition(S.STOPPED, a.ReleaseLeader, S.STOPPED, "PostgreSQL did not come back within primary_start_timeout"),
    Transition(S.STARTING, a.ReleaseLeader, S.STARTING,
               "still not up after primary_start_timeout while the start runs: let a replica take over"),
    Transition(S.BOOTSTRAPPING, a.ReleaseLeader, S.BOOTSTRAPPING, "bootstrap ran past primary_start_timeout"),
    Transition(S.PRIMARY, a.Demote, S.STOPPED,
               "a switchover, another leader, no eligibility without the key, or the DCS lost beyond retry_timeout"),
    Transition(S.PRIMARY, a.RestartPostgres, S.STARTING, "POST /restart or a scheduled restart"),
    Transition(S.PRIMARY, a.AcquireLeader, S.PRIMARY, "our key vanished while we run as primary: take it again"),
    Transition(S.UNLOCKED_PRIMARY, a.AcquireLeader, S.PRIMARY, "the key is free: the running primary re-takes it"),
    Transition(S.UNLOCKED_PRIMARY, a.Demote, S.STOPPED,
               "another node holds the key, we are not eligible, or the DCS is unreachable beyond retry_timeout"),
    Transition(S.UNLOCKED_PRIMARY, a.RestartPostgres, S.STARTING, "POST /restart while paused"),
    *(Transition(src, a.Promote, S.PRIMARY, "won the leader race, or a switchover/failover gave us the key")
      for src in _REPLICAS),
    *(Transition(src, a.AcquireLeader, src, "took the free key; the promotion follows in the same tick")
      for src in _REPLICAS),
    *(Transition(src, a.Follow, src, "point primary_conninfo at the leader (or replicatefrom)")
      for src in _REPLICAS),
    *(Transition(src, a.ReleaseLeader, src, "holding the key read-only: no promotion succeeded within "
                 "primary_start_timeout") for src in _REPLICAS),
    *(Transition(src, a.RestartPostgres, S.STARTING, "POST /restart or a scheduled restart") for src in _REPLICAS),
    *(Transition(src, a.Reinitialize, S.RECLONING, "POST /reinitialize, or a rewind that did not fix the fork")
      for src in _REPLICAS),
    Transition(S.DIVERGED, a.Rewind, S.REWINDING, "our timeline forked off the leader's history: pg_rewind"),
    Transition(S.RECOVERING, a.Rewind, S.REWINDING, "the fork is visible to the rewind check of the leader"),
    Transition(S.REWINDING, a.ReleaseLeader, S.REWINDING, "a job ran past primary_start_timeout"),
)
DECISIVE: frozenset[type[a.Action]] = frozenset(row.action for row in TABLE)
_INDEX = {(row.source, row.action): row for row in TABLE}


@dataclass(frozen=True)
class Step:
    """This tick's transition: from ``source`` by ``action`` (None: only bookkeeping) to ``target``;
    ``row`` is the table row, None when the decision is not in the table (a bug, reported)."""

    source: NodeState
    action: type[a.Action] | None
    target: NodeState
    row: Transition | None

    @property
    def listed(self) -> bool:
        return self.action is None or self.row is not None


def transition(source: NodeState, acts: list[a.Action]) -> Step:
    """The table row for the last decisive action (earlier ones, such as AcquireLeader before
    Promote, must be allowed from ``source`` too)."""
    decisive = [type(act) for act in acts if type(act) in DECISIVE]
    if not decisive:
        return Step(source, None, source, None)
    row: Transition | None = None
    for kind in decisive:
        row = _INDEX.get((source, kind)) or _INDEX.get((None, kind))
        if row is None:
            return Step(source, kind, source, None)
    assert row is not None  # the last decisive action's
    return Step(source, decisive[-1], row.target, row)


def mermaid() -> str:
    """The table as a Mermaid state diagram (docs/architecture.md)."""
    lines = ["stateDiagram-v2"]
    for row in TABLE:
        src = "any_state" if row.source is None else _ident(row.source)
        lines.append(f"    {src} --> {_ident(row.target)}: {row.action.__name__}")
    return "\n".join(dict.fromkeys(lines))


def _ident(state: NodeState) -> str:
    return state.name.lower()


def markdown() -> str:
    """The table and its diagram as docs/architecture.md shows them (a test keeps the two equal)."""
    rows = ["| from | decisive action | to | when |", "|---|---|---|---|"]
    for row in TABLE:
        source = "any" if row.source is None else row.source.value
        rows.append(f"| {source} | {row.action.__name__} | {row.target.value} | {row.why} |")
    return "\n".join([*rows, "", "```mermaid", mermaid(), "```"])


if __name__ == "__main__":
    print(markdown())
