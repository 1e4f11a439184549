"""decide(view, local, settings) -> actions: the whole HA policy as one pure function."""

from __future__ import annotations

from appliance.core import actions as a
from appliance.core import retry
from appliance.core.election import diverged, ineligible_reason, switchover_due
from appliance.core.failover_key import switchover_actions
from appliance.core.model import ClusterView, Member, PgState, ReplicationState, Role
from appliance.core.probes import writable_peer
from appliance.core.state import DataDir, HaSettings, LocalState
from appliance.core.sync import sync_actions
from appliance.core.timelines import reconciled_history


def decide(view: ClusterView | None, local: LocalState, cfg: HaSettings) -> list[a.Action]:
    """Return the actions for this tick. ``view`` is None when the DCS could not be read."""
    acts = _decide(view, local, cfg)
    if local.stopping:
        return _hold(acts, (*a.JOB_ACTIONS, *a.TAKEOVER_ACTIONS), "stopping: no new job and no takeover")
    if retry.active(local.retry, local.now):
        assert local.retry is not None
        delay = min(retry.CAP, retry.BASE * 2 ** (local.retry.failures - 1))
        # After a failed promotion, no new one either (nor a leader race to win for it).
        kinds = (*a.JOB_ACTIONS, *a.TAKEOVER_ACTIONS) if local.retry.job == "promote" else a.JOB_ACTIONS
        return _hold(acts, kinds, f"backing off {delay:.0f}s after {local.retry.failures} failed "
                                  f"attempt(s) (last: {local.retry.job})")
    return acts


def _hold(acts: list[a.Action], kinds: tuple[type[a.Action], ...], why: str) -> list[a.Action]:
    """The actions up to the first one of ``kinds``, which becomes a Wait (what follows needs it)."""
    kept: list[a.Action] = []
    for act in acts:
        if isinstance(act, kinds):
            kept.append(a.Wait(f"{why}; held: {act.reason}"))
            break
        kept.append(act)
    return kept


def _promote_timeout(cfg: HaSettings) -> float:
    """A promotion must end while the lease just renewed still holds: ttl - retry_timeout."""
    return float(max(1, cfg.ttl - cfg.retry_timeout))


def _start_timed_out(local: LocalState, cfg: HaSettings) -> bool:
    since = local.pg_down_since
    return not cfg.pause and since is not None and local.now - since > cfg.primary_start_timeout


def _decide(view: ClusterView | None, local: LocalState, cfg: HaSettings) -> list[a.Action]:
    if local.job is not None:
        return _job_running(view, local, cfg)
    if view is None:
        return _dcs_unreachable(local, cfg)
    if local.data_dir is DataDir.INVALID:
        return [a.Fatal("data directory is neither empty nor a PostgreSQL cluster; refusing to touch it")]
    if local.data_dir is DataDir.VALID and view.initialize and local.sysid and view.initialize != local.sysid:
        return [a.Fatal(f"data directory belongs to system {local.sysid}, the cluster is {view.initialize}; "
                        "refusing to join the wrong cluster")]
    if local.data_dir is DataDir.INCOMPLETE:
        return _incomplete(view, local)
    failed = _job_failed(view, local)
    if failed is not None:
        return failed
    if local.data_dir is DataDir.EMPTY:
        return _empty_data_dir(view, local)
    if not local.running:
        return _not_running(view, local, cfg)
    if view.leader is None:
        return _leader_race(view, local, cfg)
    if view.leader.name == local.name:
        return _as_leader(view, local, cfg)
    return _as_follower(view, local, cfg)


def _job_running(view: ClusterView | None, local: LocalState, cfg: HaSettings) -> list[a.Action]:
    acts: list[a.Action] = []
    if view is not None and view.leader_name == local.name:
        if local.job in ("start", "restart") and _start_timed_out(local, cfg):
            # The fencer kills the server the job is starting as soon as the lease order is gone.
            return [a.ReleaseLeader(f"PostgreSQL is still not up after primary_start_timeout "
                                    f"({cfg.primary_start_timeout}s) while {local.job} runs: let a replica "
                                    "take over")]
        acts.append(a.UpdateLeader(f"keep the leader key while {local.job} runs"))
    acts.append(a.Wait(f"{local.job} in progress"))
    return acts


def _dcs_unreachable(local: LocalState, cfg: HaSettings) -> list[a.Action]:
    if not (local.running and local.role is Role.PRIMARY):
        return [a.Wait("DCS unreachable: keep replicating, never promote")]
    if local.lease_ok_at is not None and local.now - local.lease_ok_at < cfg.retry_timeout:
        return [a.Wait("DCS unreachable for less than retry_timeout: keep running")]
    if cfg.pause:
        return _paused_without_dcs(local)
    if cfg.failsafe_mode and local.failsafe_ok:
        return [a.Wait("DCS unreachable, failsafe: every member in /failsafe confirmed us: keep running")]
    return [a.Demote("DCS unreachable for longer than retry_timeout: stop accepting writes before "
                     "the leader lease can expire elsewhere", mode=a.DemoteMode.IMMEDIATE, release=False)]


def _paused_without_dcs(local: LocalState) -> list[a.Action]:
    """Paused, the fencer obeys a paused order: nothing fences this primary if the cluster was resumed
    meanwhile and another node promotes once our lease ran out. A member that answers us can ask us
    too (and hears that we run as primary, so it does not promote); when none does, we cannot know
    whether the pause still holds. A member that accepts writes itself promoted after a resume we
    could not see, while nobody could ask us (docker pause of this node past our lease)."""
    beside = writable_peer(local)
    if beside:
        return [a.Demote(f"paused without the DCS, but {beside}: the cluster was resumed and it took over",
                         mode=a.DemoteMode.IMMEDIATE, release=False)]
    answering = [p.name for p in local.peers if p.reachable]
    if answering or not local.peers:
        who = ", ".join(answering) or "no other member known"
        return [a.Wait(f"DCS unreachable while paused: keep running ({who})")]
    return [a.Demote("paused, but neither the DCS nor any member answers: a resume we cannot see would let "
                     "another node promote once our lease runs out", mode=a.DemoteMode.IMMEDIATE, release=False)]


def _job_failed(view: ClusterView, local: LocalState) -> list[a.Action] | None:
    res = local.job_result
    if res is None or res.ok or res.retryable:
        return None
    leader = _running_leader(view, local)
    if res.job == "bootstrap":
        return [a.CancelInitialize(f"bootstrap failed: {res.detail}", revision=view.initialize_revision),
                a.ReleaseLeader("bootstrap failed")]
    if res.job == "rewind" and leader is not None:
        return [a.Reinitialize(f"pg_rewind failed ({res.detail}): re-clone from {leader.name}", source=leader)]
    return None


def _incomplete(view: ClusterView, local: LocalState) -> list[a.Action]:
    if not view.initialize:
        return [a.WipeDataDir("our interrupted bootstrap left an unusable data directory")]
    leader = _running_leader(view, local)
    if leader is None:
        return [a.Wait("interrupted clone or rewind: waiting for a running leader to re-clone from")]
    return [a.Reinitialize(f"interrupted clone or rewind: re-clone from {leader.name}", source=leader)]


def _running_leader(view: ClusterView, local: LocalState) -> Member | None:
    if view.leader is None or view.leader.name == local.name:
        return None
    member = view.member(view.leader.name)
    if member is None or member.state != PgState.RUNNING:
        return None
    return member


def _empty_data_dir(view: ClusterView, local: LocalState) -> list[a.Action]:
    acts: list[a.Action] = []
    if view.leader_name == local.name:
        acts.append(a.ReleaseLeader("data directory is empty"))
        return acts
    if view.initialize is None:
        if view.leader is not None:
            return [a.Wait(f"{view.leader.name} holds the leader key of an uninitialized cluster")]
        return [a.TakeInitialize("cluster not initialized: race to bootstrap it"),
                a.AcquireLeader("won the initialize race"),
                a.Bootstrap("won the initialize race: initdb a new cluster")]
    if view.initialize == "":
        if view.leader is None:
            return [a.CancelInitialize("bootstrap abandoned: initialize is empty and nobody holds the lock",
                                       revision=view.initialize_revision)]
        return [a.Wait(f"{view.leader.name} is bootstrapping the cluster")]
    leader = _running_leader(view, local) or _bootstrapped_leader(view)
    if leader is None:
        return [a.Wait("data directory is empty and there is no running leader to clone from")]
    return [a.Clone(f"empty data directory: clone from the leader {leader.name}", source=leader)]


def _bootstrapped_leader(view: ClusterView) -> Member | None:
    """The leader right after its bootstrap: the sysid is published before its member key says
    "running" (the clone job checks that it answers before touching anything)."""
    member = view.member(view.leader_name)
    if member is None or not view.initialize or member.state != PgState.INITDB:
        return None
    return member


def _not_running(view: ClusterView, local: LocalState, cfg: HaSettings) -> list[a.Action]:
    if view.leader_name == local.name:
        if _start_timed_out(local, cfg):
            return [a.ReleaseLeader("PostgreSQL did not come back within primary_start_timeout: let a "
                                    "replica take over")]
        role = Role.PRIMARY if local.was_primary else Role.REPLICA
        return [a.UpdateLeader("holding the lock while PostgreSQL is down"),
                a.StartPostgres("we hold the leader key: restart PostgreSQL in place", role=role)]
    if view.leader is None:
        return [a.StartPostgres("no leader: start read-only, then take part in the leader race",
                                role=Role.REPLICA)]
    leader = _running_leader(view, local)
    if local.was_primary:
        if cfg.pause:
            return [a.Wait("paused: a former primary is not rewound automatically")]
        if leader is None:
            return [a.Wait(f"former primary waits for the leader {view.leader.name} to run before rejoining")]
        if local.rewound_from == (leader.name, leader.timeline):
            return [a.StartPostgres(f"former primary already rewound from {leader.name} on its timeline "
                                    f"{leader.timeline}: start as its replica", role=Role.REPLICA, leader=leader)]
        if cfg.use_pg_rewind:
            return [a.Rewind(f"former primary: pg_rewind from {leader.name} before following it",
                             source=leader)]
        return [a.Reinitialize(f"former primary and use_pg_rewind is off: re-clone from {leader.name}",
                               source=leader)]
    upstream = leader or view.member(view.leader.name)
    return [a.StartPostgres(f"start as a replica of {view.leader.name}", role=Role.REPLICA, leader=upstream)]


def _leader_race(view: ClusterView, local: LocalState, cfg: HaSettings) -> list[a.Action]:
    if cfg.pause:
        if local.role is Role.PRIMARY:
            return [a.AcquireLeader("paused: the running primary keeps the lock")]
        return [a.Wait("paused: no automatic promotion")]
    if cfg.failsafe_mode and local.failsafe_leader not in (None, local.name):
        return [a.Wait(f"failsafe: {local.failsafe_leader} runs as primary without the DCS and told us so: "
                       "no leader race")]
    why_not = ineligible_reason(view, local, cfg)
    if why_not is not None:
        if local.role is Role.PRIMARY:
            return [a.Demote(f"no leader key and not eligible to keep it: {why_not}",
                             mode=a.DemoteMode.IMMEDIATE, release=False)]
        return [a.Wait(f"leader race: not eligible ({why_not})")]
    acts: list[a.Action] = [a.AcquireLeader("running primary re-takes the free leader key" if local.role is
                                            Role.PRIMARY else "leader key is free and this node is the healthiest")]
    fo = view.failover
    if fo is not None and fo.leader == local.name and switchover_due(view, local):
        # We won although the switchover was away from us: nobody else could take over. Cancel it,
        # or as leader we would carry it out again, and again.
        acts.append(a.ClearFailover("the switchover found no member to take over: cancelled",
                                    revision=fo.mod_revision or None))
    if local.role is Role.PRIMARY:
        return acts
    return [*acts,
            a.Promote("won the leader race", strict_sync=cfg.synchronous_mode and cfg.synchronous_mode_strict,
                      history=view.history, keep_history=cfg.max_timelines_history,
                      timeout=_promote_timeout(cfg))]


def _as_leader(view: ClusterView, local: LocalState, cfg: HaSettings) -> list[a.Action]:
    acts: list[a.Action] = [a.UpdateLeader("renew the leader key")]
    if local.role is not Role.PRIMARY:
        if cfg.pause:
            return [*acts, a.Wait("paused: holding the lock as a replica, not promoting")]
        if _start_timed_out(local, cfg):
            # Up read-only after every restart, dying at every promotion (a full pg_wal): a
            # replica that can run as primary takes over.
            return [a.ReleaseLeader(f"PostgreSQL did not run as primary within primary_start_timeout "
                                    f"({cfg.primary_start_timeout}s): let a replica take over")]
        strict = cfg.synchronous_mode and cfg.synchronous_mode_strict
        return [*acts, a.Promote("holding the leader key while running as a replica", strict_sync=strict,
                                 history=view.history, keep_history=cfg.max_timelines_history,
                                 timeout=_promote_timeout(cfg))]
    if not view.initialize and local.sysid:
        acts.append(a.SetInitialize("record the system identifier", sysid=local.sysid))
    if view.config is None:
        acts.append(a.WriteConfigKey("seed the dynamic configuration from bootstrap.dcs"))
    switch = switchover_actions(view, local, cfg)
    if switch is not None:
        return acts + switch
    if cfg.failsafe_mode:
        members = tuple(sorted((m.name, m.api_url) for m in view.members if m.api_url))
        if view.failsafe != dict(members):
            acts.append(a.WriteFailsafe("failsafe_mode: publish the members a cut-off primary must reach",
                                        members=members))
    history = reconciled_history(view.history, local.history, cfg.max_timelines_history)
    if history is not None:
        acts.append(a.WriteHistory("the DCS history misses or contradicts our timeline lineage", history=history))
    retain = tuple(sorted({m.name for m in view.members} | set(local.retained))) if cfg.use_slots else ()
    if local.wal_position is not None and (local.wal_position != view.status.optime
                                           or retain != view.status.retain_slots):
        acts.append(a.WriteStatus("publish the primary's WAL position and retained slots",
                                  optime=local.wal_position, retain_slots=retain))
    if cfg.use_slots:
        # A vanished member's slot stays for member_slots_ttl: back within it, it streams on from it.
        names = tuple(sorted(({m.name for m in view.members} | set(local.retained) | set(cfg.permanent_slots))
                             - {local.name}))
        acts.append(a.EnsureSlots("one physical slot per member", names=names))
    acts.extend(sync_actions(view, local, cfg))
    if local.config_stale:
        acts.append(a.ReconcileConfig("effective PostgreSQL settings changed"))
    return acts


def _as_follower(view: ClusterView, local: LocalState, cfg: HaSettings) -> list[a.Action]:
    assert view.leader is not None
    leader_name = view.leader.name
    if local.role is Role.PRIMARY:
        if cfg.pause:
            return [a.Wait(f"paused: running as primary while {leader_name} holds the lock")]
        return [a.Demote(f"{leader_name} holds the leader key: stop accepting writes now",
                         mode=a.DemoteMode.IMMEDIATE, release=False)]
    leader = _running_leader(view, local)
    if (leader is not None and local.replication_state != ReplicationState.STREAMING and local.leader_alive
            and diverged(view, local)):
        if cfg.pause:
            return [a.Wait("paused: diverged from the leader's timeline, not rewinding")]
        if local.rewound_from == (leader.name, leader.timeline) or not cfg.use_pg_rewind:
            return [a.Reinitialize(f"timeline {local.timeline} still diverges from {leader.name}'s history "
                                   "after a rewind (or use_pg_rewind is off): re-clone", source=leader)]
        return [a.Rewind(f"timeline {local.timeline} diverged from {leader.name}'s history", source=leader)]
    upstream = view.member(cfg.tags.replicatefrom) if cfg.tags.replicatefrom else None
    target = upstream or leader or view.member(leader_name)
    acts: list[a.Action] = []
    if target is not None and local.following != target.name:
        acts.append(a.Follow(f"follow {target.name}", leader=target))
    if local.config_stale:
        acts.append(a.ReconcileConfig("effective PostgreSQL settings changed"))
    return acts or [a.Wait(f"replica of {leader_name}")]
