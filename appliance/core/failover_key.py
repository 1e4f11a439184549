"""The leader's handling of the ``failover`` key: carry out, postpone, or clean up a switchover."""

from __future__ import annotations

from datetime import datetime

from appliance.core import actions as a
from appliance.core.candidates import candidate_problem
from appliance.core.model import ClusterView
from appliance.core.state import HaSettings, LocalState


def scheduled_epoch(value: str | None) -> float | None:
    """Parse an ISO-8601 timestamp with a timezone into epoch seconds (None if absent or invalid)."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.timestamp()


def switchover_actions(view: ClusterView, local: LocalState, cfg: HaSettings) -> list[a.Action] | None:
    """Actions for a pending failover key on the leader; None when there is nothing to do now."""
    fo = view.failover
    if fo is None or fo.empty:
        return None
    rev = fo.mod_revision or None
    if fo.leader and fo.leader != local.name:
        return [a.ClearFailover(f"failover key names {fo.leader} as leader, not us: stale", revision=rev)]
    if fo.member == local.name:
        return [a.ClearFailover("this node is already the leader the failover asked for", revision=rev)]
    when = scheduled_epoch(fo.scheduled_at)
    if fo.scheduled_at and when is None:
        return [a.ClearFailover(f"unparsable scheduled_at {fo.scheduled_at!r}", revision=rev)]
    if when is not None and local.wall_time < when:
        return None
    if cfg.pause and not fo.member:
        return [a.ClearFailover("paused: a switchover needs a named candidate", revision=rev)]
    problem = _candidate_problem(view, local, cfg, fo.member)
    if problem:
        return [a.ClearFailover(f"switchover cancelled: {problem}", revision=rev)]
    target = fo.member or "the healthiest replica"
    return [a.Demote(f"switchover to {target}", mode=a.DemoteMode.GRACEFUL, release=True)]


def _candidate_problem(view: ClusterView, local: LocalState, cfg: HaSettings, name: str | None) -> str | None:
    sync_only = cfg.sync_only_for(bool(view.failover and view.failover.leader))
    if name is None:
        others = [m for m in view.members if m.name != local.name
                  and candidate_problem(view, m, sync_only=sync_only) is None]
        sync = view.sync
        if cfg.synchronous_quorum and sync is not None and sync.leader:
            # Patroni's is_failover_possible: quorum + 1 voters able to take over (they vote for each other).
            voters = [m.name for m in others if m.name in sync.sync_standby]
            needed = (sync.quorum or 0) + 1
            if len(voters) < needed:
                return (f"synchronous_mode quorum: {len(voters)} running voter(s), {needed} needed to elect a "
                        "new primary")
        return None if others else "no running replica can take over"
    member = view.member(name)
    if member is None:
        return f"candidate {name} is not a member"
    problem = candidate_problem(view, member, sync_only=sync_only)
    return f"candidate {name}: {problem}" if problem else None
