"""Which peers the loop asks before deciding (pure): every member during a leader race, the leader
when our replication stalls; and whether an answer says "running as primary"."""

from __future__ import annotations

from appliance.core.model import ClusterView, ReplicationState, Role
from appliance.core.state import LocalState, PeerStatus


def probe_peers(view: ClusterView | None, local: LocalState) -> tuple[str, ...]:
    """The members to ask for their WAL position: the leader key is free, we could race for it,
    and no manual failover already names us (then the API checked the candidate)."""
    if view is None or view.leader is not None or not local.running or local.job is not None:
        return ()
    fo = view.failover
    if fo is not None and fo.member == local.name and not fo.scheduled_at:
        return ()
    return tuple(m.name for m in view.members if m.name != local.name)


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
