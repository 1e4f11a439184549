"""Who may be promoted: the one candidate rule of the election, the leader's switchover and the REST API."""

from __future__ import annotations

from appliance.core.model import ClusterView, Member, PgState
from appliance.core.tags import Tags


def tag_problem(tags: Tags) -> str | None:
    """Why the tags forbid a promotion (nofailover, a failover_priority of 0 or less), or None."""
    if tags.nofailover:
        return "tagged nofailover"
    if tags.failover_priority <= 0:
        return f"failover_priority is {tags.failover_priority}"
    return None


def sync_problem(view: ClusterView, name: str, sync_only: bool) -> str | None:
    """With ``sync_only`` (synchronous mode on; in quorum mode only for a switchover, else any member
    may gather votes, core/election.py) and a sync key, only a member it names may be promoted."""
    sync = view.sync
    if sync_only and sync is not None and sync.leader and not sync.matches(name):
        listed = ",".join(sync.sync_standby) or "none"
        return f"not a synchronous standby (sync key: {listed})"
    return None


def candidate_problem(view: ClusterView, member: Member, *, sync_only: bool) -> str | None:
    """Why ``member`` cannot take over from the leader as the DCS view shows it, or None when it can."""
    if member.name == view.leader_name:
        return "is the current leader"
    if member.state != PgState.RUNNING:
        return f"state is '{member.state}', not running"
    return tag_problem(member.tags) or sync_problem(view, member.name, sync_only)
