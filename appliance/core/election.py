"""Who may become leader: eligibility, the healthiest-node check, and timeline divergence."""

from __future__ import annotations

from appliance.core.candidates import sync_problem, tag_problem
from appliance.core.failover_key import scheduled_epoch
from appliance.core.model import ClusterView, PgState, Role
from appliance.core.probes import writable_peer
from appliance.core.state import HaSettings, LocalState, PeerStatus
from appliance.core.timelines import forked_elsewhere, replica_problem
from appliance.core.wal import wal_lag


def ineligible_reason(view: ClusterView, local: LocalState, cfg: HaSettings) -> str | None:
    """Why this node must not take the leader key now, or None when it may."""
    own = _own_limitation(view, local, cfg)
    if own:
        return own
    writable = writable_peer(local)  # then nobody promotes, not even a candidate a manual failover names
    if writable:
        return writable
    candidate = _requested_candidate(view, local)
    if candidate == local.name and _named_caught_up(view, local, local.name, local.wal_position, cfg):
        return None  # a manual failover names us: the API already checked the candidate
    if candidate is not None and candidate != local.name and _candidate_can_promote(view, local, candidate, cfg):
        return f"a manual failover names {candidate}"
    if quorum_active(view, cfg):
        return _quorum_problem(view, local, cfg)
    for peer in local.peers:
        why = _peer_beats_us(peer, view, local, cfg)
        if why:
            return why
    return None


def _own_limitation(view: ClusterView, local: LocalState, cfg: HaSettings) -> str | None:
    problem = tag_problem(cfg.tags)
    if problem:
        return problem
    if local.fence_problem:
        return f"cannot be fenced: {local.fence_problem}"
    fo = view.failover
    if fo is not None and fo.leader == local.name and switchover_due(view, local) and _another_can_take_over(
            view, local, cfg):
        return "a switchover away from this node is in progress"
    if local.wal_position is None:
        return "WAL position unknown"
    if cfg.failsafe_mode and view.failsafe and local.name not in view.failsafe:
        return "not listed in /failsafe"
    unsynced = sync_problem(view, local.name, cfg.sync_only_for(switchover_in_force(view, local)))
    if unsynced:
        return f"synchronous_mode: {unsynced}"
    optime = view.status.optime
    lag = wal_lag(optime, local.wal_position)
    if lag > cfg.maximum_lag_on_failover:
        return f"lag {lag} bytes exceeds maximum_lag_on_failover ({cfg.maximum_lag_on_failover})"
    if cfg.check_timeline and local.timeline is not None:
        cluster_tl = max((h.timeline + 1 for h in view.history), default=None)
        if cluster_tl is not None and local.timeline < cluster_tl:
            return f"timeline {local.timeline} is behind the cluster's {cluster_tl}"
    return None


def _another_can_take_over(view: ClusterView, local: LocalState, cfg: HaSettings) -> bool:
    """The former leader of a switchover stands back only while another member could be promoted
    (Patroni's rule; else nobody would ever take over). The named candidate does not count: this is
    asked when it is not alive (an alive one is waited for). In synchronous mode only a synchronous
    standby counts, not the sync key's (stale) leader."""
    fo = view.failover
    sync = view.sync if cfg.synchronous_mode and view.sync is not None and view.sync.leader else None
    able = 0
    for peer in local.peers:
        if peer.name in (local.name, fo.member if fo else None) or not (peer.reachable and peer.running):
            continue
        if tag_problem(peer.tags) or peer.wal_position is None:
            continue
        if sync is not None and peer.name not in sync.sync_standby:
            continue
        if wal_lag(view.status.optime, peer.wal_position) > cfg.maximum_lag_on_failover:
            continue
        able += 1
    # Quorum mode (Patroni's is_failover_possible): quorum + 1 voters must be able to take over.
    needed = (sync.quorum or 0) + 1 if sync is not None and cfg.synchronous_quorum else 1
    return able >= needed


def quorum_active(view: ClusterView, cfg: HaSettings) -> bool:
    """synchronous_mode: quorum, and a leader already wrote the sync key (Patroni's
    quorum_commit_mode_is_active): a leader race then needs the votes of the key's voting set."""
    return cfg.synchronous_quorum and view.sync is not None and bool(view.sync.leader)


def _quorum_problem(view: ClusterView, local: LocalState, cfg: HaSettings) -> str | None:
    """Patroni's quorum rule of the healthiest-node check. The voting set is the key's voters and
    its leader; a member of it counts itself. Each other member of it that answers (with a state
    published since the key was freed), runs, may be promoted and is not ahead of us is a vote;
    ``quorum`` votes are needed. Then at least one of those we saw holds every acknowledged commit
    (core/quorum.py), and we have all they have. A member ahead of us wins, except the key's leader
    (the former primary), which is not counted. The key's leader itself may take the key again when
    nobody it saw is ahead of it."""
    sync = view.sync
    assert sync is not None and sync.leader is not None and local.wal_position is not None
    voting = {sync.leader, *sync.sync_standby}
    needed = sync.quorum or 0
    votes = 0 if local.name in voting else -1
    ahead = stale = 0
    fo = view.failover
    leaving = fo.leader if fo is not None and fo.leader and switchover_due(view, local) else None
    for peer in local.peers:
        if peer.name == local.name or not peer.reachable:
            continue
        if view.member(peer.name) is None or peer.name not in voting or peer.name == leaving \
                or tag_problem(peer.tags):
            continue  # the last leader gone from the DCS is asked only whether it accepts writes
        if not peer.running or peer.wal_position is None:
            continue
        if not _published_since_vacancy(peer, local):
            stale += 1
            continue
        if peer.wal_position > local.wal_position:
            ahead += 1
            if peer.name == sync.leader:
                continue  # the former primary may be ahead with commits nobody acknowledged
            return f"{peer.name} has more WAL ({peer.wal_position} > {local.wal_position})"
        if (peer.wal_position == local.wal_position and peer.name != sync.leader
                and peer.tags.failover_priority > cfg.tags.failover_priority):
            return f"{peer.name} has the same WAL and a higher failover_priority"
        votes += 1
    if votes >= needed or (ahead == 0 and sync.leader == local.name):
        return None
    members = ",".join(sorted(voting))
    waiting = f"; {stale} answer(s) from before the leader key was freed" if stale else ""
    return (f"synchronous_mode quorum: {max(votes, 0)} vote(s) of the {needed} needed from the voting set "
            f"({members}){'' if local.name in voting else '; not a voter: one more is needed'}{waiting}")


def _published_since_vacancy(peer: PeerStatus, local: LocalState) -> bool:
    """A peer's answer comes from the state its manager published last, up to a loop old, and a voter
    may have received more WAL since (the last commits before the old primary stopped). Published
    after we found the leader key free, it shows every commit acknowledged before: the old primary
    stopped accepting writes before its key could vanish (fencing) or be released."""
    if peer.published_ago is None or local.leader_free_since is None:
        return False
    return local.now - peer.published_ago > local.leader_free_since


def switchover_due(view: ClusterView, local: LocalState) -> bool:
    """A failover key is in force: unscheduled, or scheduled for a time that has come."""
    fo = view.failover
    if fo is None or fo.empty:
        return False
    if not fo.scheduled_at:
        return True
    when = scheduled_epoch(fo.scheduled_at)
    return when is not None and when <= local.wall_time


def switchover_in_force(view: ClusterView, local: LocalState) -> bool:
    """A due failover key that names the leader it moves away from (a switchover, not a failover)."""
    return view.failover is not None and bool(view.failover.leader) and switchover_due(view, local)


def _requested_candidate(view: ClusterView, local: LocalState) -> str | None:
    if not switchover_due(view, local):
        return None
    return view.failover.member if view.failover else None


def _candidate_can_promote(view: ClusterView, local: LocalState, name: str, cfg: HaSettings) -> bool:
    """The member a manual failover names is alive and may promote itself: then the others wait
    for it. One that may not (tagged nofailover, outside the sync set, behind in strict mode) is
    ignored, as Patroni does, or nobody would ever take over."""
    sync_only = cfg.sync_only_for(switchover_in_force(view, local))
    return any(p.name == name and p.reachable and p.running and not tag_problem(p.tags)
               and not sync_problem(view, name, sync_only) and _named_caught_up(view, local, name, p.wal_position, cfg)
               for p in local.peers)


def _named_caught_up(view: ClusterView, local: LocalState, name: str, position: int | None,
                     cfg: HaSettings) -> bool:
    """A switchover's candidate skips the WAL comparison: the leader carried the switchover out
    after checking it, and its graceful stop sent every standby the same last WAL. Unless the leader
    never did (its manager frozen, then its key expired, or the whole cluster restarted): in strict
    synchronous mode a candidate that another member we heard is ahead of races like any other node
    (a campaign found it promoting without 35 acknowledged writes, quorum strict)."""
    if not (cfg.synchronous_mode_strict and switchover_in_force(view, local)):
        return True
    if position is None:
        return False
    if any(p.name != name and p.reachable and p.starting and p.wal_position is None for p in local.peers):
        return False  # a member starting up (a whole-cluster restart) says its position in a moment
    others = [p.wal_position for p in local.peers if p.name != name and p.reachable]
    if local.name != name:
        others.append(local.wal_position)
    return not any(other is not None and other > position for other in others)


def _peer_beats_us(peer: PeerStatus, view: ClusterView, local: LocalState, cfg: HaSettings) -> str | None:
    if peer.name == local.name or not peer.reachable:
        return None
    if view.member(peer.name) is None:
        return None  # the last leader, gone from the DCS: asked only whether it still accepts writes
    fo = view.failover
    if fo is not None and fo.leader == peer.name and switchover_due(view, local):
        return None  # the switchover is away from it: it takes over only when nobody else can
    if tag_problem(peer.tags) or sync_problem(view, peer.name, cfg.sync_only):
        return None
    if peer.wal_position is None or local.wal_position is None:
        return None
    if peer.wal_position > local.wal_position:
        return f"{peer.name} has more WAL ({peer.wal_position} > {local.wal_position})"
    if peer.wal_position == local.wal_position and peer.tags.failover_priority > cfg.tags.failover_priority:
        return f"{peer.name} has the same WAL and a higher failover_priority"
    return None


def diverged(view: ClusterView, local: LocalState) -> bool:
    """True when our WAL goes past the point where the leader's history forked off our timeline."""
    if local.timeline is None or local.wal_position is None:
        return False
    if forked_elsewhere(view.history, local.history, local.wal_position):
        return True
    for entry in view.history:
        if entry.timeline == local.timeline:
            return local.wal_position > entry.lsn
    leader = view.member(view.leader_name)
    if leader is not None and leader.timeline is not None:
        if local.timeline > leader.timeline:
            return True
        # The leader's lineage skipped our timeline (it promoted past a timeline another node
        # created, PgOps reserving its ID): our WAL on it is not the leader's. Unless the history
        # was trimmed (max_timelines_history) above it and only does not say.
        return (local.timeline < leader.timeline and local.timeline > 1
                and any(h.timeline < local.timeline for h in view.history))
    return False


def replication_problem(view: ClusterView | None, local: LocalState) -> str | None:
    """Why this replica of another leader must not serve reads (diverged, or stuck), else None."""
    if local.role is not Role.REPLICA or view is None or view.leader_name in (None, local.name):
        return None
    leader = view.member(view.leader_name)
    forked = leader is not None and leader.state == PgState.RUNNING and diverged(view, local)
    return replica_problem(forked, local.not_streaming_since, local.now)
