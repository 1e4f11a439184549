"""Which peers the loop asks before deciding (pure): every member during a leader race (and those of
our last read with a leader that are gone from the DCS since), the leader when our replication stalls;
and what an answer says: running as primary, or still accepting writes."""

from __future__ import annotations

from appliance.core.model import ClusterView, Member, ReplicationState, Role
from appliance.core.state import LocalState, PeerStatus


def _may_race(view: ClusterView | None, local: LocalState) -> bool:
    """The leader key is free and we could race for it (also when a manual failover names us: the
    API checked the candidate, but a server that still accepts writes must stop us all the same)."""
    return view is not None and view.leader is None and local.running and local.job is None


def probe_peers(view: ClusterView | None, local: LocalState) -> tuple[str, ...]:
    """The members to ask for their WAL position during a leader race."""
    if view is None or not _may_race(view, local):
        return ()
    return tuple(m.name for m in view.members if m.name != local.name)


def probe_vanished(view: ClusterView | None, local: LocalState) -> tuple[Member, ...]:
    """The members to ask, during a leader race, whether their PostgreSQL still accepts writes: those
    of our last read with a leader key (Patroni's old_cluster) whose member key is gone now, with
    its lease. The last leader is one of them: a lease that ended early (a stale etcd leader revoked
    it, etcd#15247) leaves a primary that still runs and takes the key again if the others wait for
    it, and it may have become leader between two of our reads; a pause and resume its manager never
    saw (frozen, starved) leaves a server its fencer does not stop. An unreachable node counts as not
    writable (crashed, or partitioned: its fencer acted before its lease could expire)."""
    if view is None or not _may_race(view, local):
        return ()
    return tuple(m for m in local.remembered
                 if m.name != local.name and view.member(m.name) is None and m.api_url)


def probe_cut_off(view: ClusterView | None, local: LocalState, paused: bool) -> bool:
    """While paused, a primary that cannot read the DCS asks the members of its last read whether they
    answer: one that does can ask it too, and hears that it runs as primary (nobody promotes beside
    it); if none does, a resume it cannot see would let another node promote once its lease ran out."""
    return view is None and paused and local.running and local.role is Role.PRIMARY


def probe_leader(view: ClusterView | None, local: LocalState) -> str | None:
    """The leader to ask whether it runs as primary: we replicate from it but are not streaming
    (a diverged timeline is only acted on once the leader confirms it is up)."""
    if view is None or view.leader is None or view.leader.name == local.name:
        return None
    if not local.running or local.role is not Role.REPLICA or local.replication_state == ReplicationState.STREAMING:
        return None
    return view.leader.name if view.member(view.leader.name) is not None else None


def runs_as_primary(answer: PeerStatus) -> bool:
    """The peer answered that its PostgreSQL runs as primary (or Patroni's legacy "master")."""
    return answer.reachable and answer.running and answer.role in (Role.PRIMARY, Role.MASTER)


def accepts_writes(answer: PeerStatus) -> str | None:
    """Why the peer's PostgreSQL may accept writes (then nobody else may promote), or None. Its API
    says what the fencer sees now (a postmaster without standby.signal), which outranks the role in
    the manager's state, up to a loop old: a primary that demoted in its last loop still says
    "primary", one that promoted still says "replica". An API without that field: its role. A
    start or restart as primary in flight counts whatever the fencer sees: the server accepts writes
    the moment it is up (its holder decided it under a lease the DCS may have ended since)."""
    if not answer.reachable:
        return None
    if answer.starting and answer.role in (Role.PRIMARY, Role.MASTER):
        return f"{answer.name} is starting PostgreSQL as primary"
    if answer.writable is not None:
        if not answer.writable:
            return None
        if runs_as_primary(answer):
            return f"{answer.name} is still running as primary"
        return f"{answer.name}'s PostgreSQL still accepts writes while its manager does not say so"
    if runs_as_primary(answer):
        return f"{answer.name} is still running as primary"
    return None


def writable_peer(local: LocalState) -> str | None:
    """Why a server we asked may still accept writes (``accepts_writes`` of the first such answer)."""
    return next((why for p in local.peers if p.name != local.name and (why := accepts_writes(p))), None)
