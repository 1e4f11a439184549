"""Perform decide()'s actions against the DCS and PostgreSQL; stop a chain at the first failure."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, assert_never

from appliance.core import actions as a
from appliance.core.model import ClusterStatus, Member, Role
from appliance.dcs.base import DCS, DCSError
from appliance.manager.events import EventLog
from appliance.manager.jobs import JobRunner
from appliance.manager.pgops import PgOps

log = logging.getLogger(__name__)


class FatalError(Exception):
    """The manager must stop: continuing could damage data (e.g. the wrong cluster's data dir)."""


class Executor:
    """Maps each action to one DCS or PostgreSQL operation; long ones go to the job runner."""

    def __init__(self, dcs: DCS, ops: PgOps, jobs: JobRunner, events: EventLog,
                 seed_config: Callable[[], dict[str, Any]], wake: Callable[[], None],
                 reload_config: Callable[[], bool] = lambda: True,
                 stop_kill_after: Callable[[], float | None] = lambda: None,
                 key_confirmed: Callable[[], None] = lambda: None,
                 key_lost: Callable[[], None] = lambda: None,
                 stopping: Callable[[], bool] = lambda: False) -> None:
        self.stopping = stopping
        self.dcs = dcs
        # Told of every definite answer about the leader key (not of a DCS error: the lease deadline
        # then stands as it was): the fencer's lease order follows them before the next action runs.
        self.key_confirmed = key_confirmed
        self.key_lost = key_lost
        self.stop_kill_after = stop_kill_after
        self.ops = ops
        self.jobs = jobs
        self.events = events
        self.seed_config = seed_config
        self.wake = wake
        self.reload_config = reload_config
        self._last_wait: str | None = None
        # Successful actions by kind (for /metrics: promotions, demotions, rewinds, ...).
        self.counters: dict[str, int] = {}
        # The role the last start or restart job brings PostgreSQL up in: published while it runs,
        # since a server starting as primary accepts writes the moment it is up (racers must wait).
        self.starting_as: Role | None = None

    def run(self, actions: list[a.Action]) -> list[tuple[a.Action, bool]]:
        done: list[tuple[a.Action, bool]] = []
        for act in actions:
            if isinstance(act, a.Wait):
                if act.reason != self._last_wait:
                    self.events.emit("wait", act.reason)
                self._last_wait = act.reason
                done.append((act, True))
                continue
            if not isinstance(act, (a.UpdateLeader, a.EnsureSlots, a.WriteStatus)):
                self._last_wait = None
            if isinstance(act, (*a.TAKEOVER_ACTIONS, *a.JOB_ACTIONS)) and self.stopping():
                # The stop request came while this tick ran: a stopping node takes nothing over.
                self.events.emit("action", f"refused while stopping: {act.reason}", level=logging.WARNING,
                                 action=act.kind, ok=False)
                done.append((act, False))
                break
            try:
                ok = self._dispatch(act)
            except DCSError as exc:
                ok = False
                self.events.emit("dcs_error", f"{act.kind} failed: {exc}", level=logging.WARNING)
            done.append((act, ok))
            if ok:
                key = act.kind if not isinstance(act, a.Demote) else f"Demote_{act.mode.value}"
                self.counters[key] = self.counters.get(key, 0) + 1
            if not isinstance(act, (a.UpdateLeader, a.EnsureSlots, a.WriteStatus)) or not ok:
                self.events.emit("action", act.reason, level=logging.INFO if ok else logging.WARNING,
                                 action=act.kind, ok=ok)
            if not ok:
                break
        return done

    def _dispatch(self, act: a.Action) -> bool:
        """One DCS operation here; the PostgreSQL ones in _postgres."""
        closed = a.closed(act)
        match closed:
            case a.TakeInitialize():
                return self.dcs.take_initialize("")
            case a.SetInitialize(sysid=sysid):
                self.dcs.set_initialize(sysid)
            case a.CancelInitialize(revision=revision):
                return self.dcs.cancel_initialize(revision or None)
            case a.AcquireLeader():
                return self._key(self.dcs.acquire_leader())
            case a.UpdateLeader():
                return self._key(self.dcs.update_leader())
            case a.ReleaseLeader():
                self.dcs.release_leader()
                self.key_lost()
            case a.WriteConfigKey():
                self.dcs.write_config(self.seed_config(), None)
            case a.WriteFailsafe(members=members):
                self.dcs.write_failsafe(dict(members))
            case a.WriteHistory(history=history):
                self.dcs.write_history(history)
                self.events.emit("history", closed.reason, timelines=[h.timeline for h in history])
            case a.WriteStatus(optime=optime, retain_slots=retain):
                self.dcs.write_status(ClusterStatus(optime=optime, slots=self.ops.slot_positions(),
                                                    retain_slots=retain))
            case a.WriteSync(standbys=standbys, revision=revision, quorum=quorum):
                return self.dcs.write_sync(self.dcs.name, standbys, revision, quorum)
            case a.ClearFailover(revision=revision):
                self.dcs.clear_failover(revision)
            case _:
                return self._postgres(closed)
        return True

    def _key(self, ours: bool) -> bool:
        if ours:
            self.key_confirmed()
        else:
            self.key_lost()
        return ours

    # --- PostgreSQL ----------------------------------------------------------------------------
    def _postgres(self, act: a.PgAction) -> bool:
        match act:
            case a.Wait():
                return True
            case a.Fatal(reason=reason):
                raise FatalError(reason)
            case a.Bootstrap():
                return self.jobs.start("bootstrap", self.ops.bootstrap, self.wake)
            case a.Clone(source=source):
                src = _need(source)
                return self.jobs.start("clone", lambda: self.ops.clone(src), self.wake)
            case a.Rewind(source=source):
                src = _need(source)
                return self.jobs.start("rewind", lambda: self.ops.rewind(src), self.wake)
            case a.Reinitialize(source=source):
                src = _need(source)
                return self.jobs.start("reinitialize", lambda: self.ops.reinitialize(src), self.wake)
            case a.WipeDataDir():
                return self.ops.wipe()
            case a.StartPostgres(role=role, leader=leader):
                primary = role is Role.PRIMARY
                self.starting_as = role
                return self.jobs.start("start", lambda: self.ops.start(primary=primary, upstream=leader), self.wake)
            case a.Promote():
                return self._promote(act)
            case a.Demote():
                return self._demote(act)
            case a.Follow(leader=leader):
                return self.ops.follow(leader)
            case a.EnsureSlots(names=names):
                self.ops.ensure_slots(names)
                return True
            case a.SetSyncStandbyNames(value=value):
                return self.ops.set_sync_standby_names(value)
            case a.RestartPostgres(timeout=timeout, role=role):
                self.starting_as = role
                return self.jobs.start("restart", lambda: self.ops.restart(timeout), self.wake)
            case a.ReloadConfig():
                return self.reload_config()
            case a.ReconcileConfig():
                return self.ops.reconcile()
            case _:
                assert_never(act)

    def _promote(self, act: a.Promote) -> bool:
        ok = self.ops.promote(strict_sync=act.strict_sync, timeout=act.timeout, history=act.history)
        if ok:
            history = self.ops.timeline_history(act.history, self.dcs.name)
            if act.keep_history > 0:
                history = history[-act.keep_history:]  # Patroni's max_timelines_history
            if history and history != act.history:
                self.dcs.write_history(history)
            self.events.emit("promoted", act.reason, timeline=history[-1].timeline + 1 if history else None)
        return ok

    def _demote(self, act: a.Demote) -> bool:
        graceful = act.mode is a.DemoteMode.GRACEFUL
        if graceful:
            self.ops.checkpoint()  # while still serving, so that the shutdown checkpoint is short
        stopped = self.ops.stop(mode="fast" if graceful else "immediate", kill_after=self.stop_kill_after())
        self.events.emit("demoted", act.reason, mode=act.mode.value, stopped=stopped)
        if stopped and act.release:
            self.dcs.release_leader()
            self.key_lost()
        return stopped


def _need(member: Member | None) -> Member:
    if member is None:
        raise FatalError("action needs a source member")
    return member
