"""Which peers the loop asks before deciding (pure): every member during a leader race (and the last
leader, gone from the DCS), the leader when our replication stalls;
and what an answer says: running as primary, or still accepting writes."""

from __future__ import annotations

from appliance.core.model import ClusterView, Member, ReplicationState, Role
from appliance.core.state import LocalState, PeerStatus


def _may_race(view: ClusterView | None, local: LocalState) -> bool:
    """The leader key is free, we could race for it, and no manual failover already names us (then
    the API checked the candidate)."""
    if view is None or view.leader is not None or not local.running or local.job is not None:
        return False
    fo = view.failover
    return not (fo is not None and fo.member == local.name and not fo.scheduled_at)


def probe_peers(view: ClusterView | None, local: LocalState) -> tuple[str, ...]:
    """The members to ask for their WAL position during a leader race."""
    if view is None or not _may_race(view, local):
        return ()
    return tuple(m.name for m in view.members if m.name != local.name)


def probe_last_leader(view: ClusterView | None, local: LocalState) -> Member | None:
    """The last leader to ask, during a leader race, whether its PostgreSQL still accepts writes: its
    key and member key are gone, with their lease. Patroni asks the members of its last view too. A
    lease that ended early (a stale etcd leader revoked it, etcd#15247) leaves a primary that still
    runs and takes the key again if the others wait for it; a pause and resume its manager never saw
    (frozen, starved) leaves a server its fencer does not stop. An unreachable node counts as not
    writable (crashed, or partitioned: its fencer acted before the lease could expire)."""
    last = local.last_leader
    if view is None or last is None or not _may_race(view, local):
        return None
    member = last.member
    if member.name == local.name or view.member(member.name) is not None or not member.api_url:
        return None
    return member


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
    """Why the peer's PostgreSQL may accept writes (then nobody else may promote), or None: it runs as
    primary, or its manager's state is stale and its API sees a postmaster without standby.signal."""
    if runs_as_primary(answer):
        return f"{answer.name} is still running as primary"
    if answer.reachable and answer.writable:
        return f"{answer.name}'s PostgreSQL still accepts writes while its manager does not answer"
    return None
