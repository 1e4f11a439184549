"""Perform decide()'s actions against the DCS and PostgreSQL; stop a chain at the first failure."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

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
        handler = getattr(self, f"_do_{act.kind}", None)
        if handler is None:
            raise FatalError(f"no handler for action {act.kind}")
        return bool(handler(act))

    # --- DCS ---------------------------------------------------------------------------------
    def _do_TakeInitialize(self, act: a.TakeInitialize) -> bool:
        return self.dcs.take_initialize("")

    def _do_SetInitialize(self, act: a.SetInitialize) -> bool:
        self.dcs.set_initialize(act.sysid)
        return True

    def _do_CancelInitialize(self, act: a.CancelInitialize) -> bool:
        return self.dcs.cancel_initialize(act.revision or None)

    def _do_AcquireLeader(self, act: a.AcquireLeader) -> bool:
        return self._key(self.dcs.acquire_leader())

    def _do_UpdateLeader(self, act: a.UpdateLeader) -> bool:
        return self._key(self.dcs.update_leader())

    def _key(self, ours: bool) -> bool:
        if ours:
            self.key_confirmed()
        else:
            self.key_lost()
        return ours

    def _do_ReleaseLeader(self, act: a.ReleaseLeader) -> bool:
        self.dcs.release_leader()
        self.key_lost()
        return True

    def _do_WriteConfigKey(self, act: a.WriteConfigKey) -> bool:
        self.dcs.write_config(self.seed_config(), None)
        return True

    def _do_WriteFailsafe(self, act: a.WriteFailsafe) -> bool:
        self.dcs.write_failsafe(dict(act.members))
        return True

    def _do_WriteHistory(self, act: a.WriteHistory) -> bool:
        self.dcs.write_history(act.history)
        self.events.emit("history", act.reason, timelines=[h.timeline for h in act.history])
        return True

    def _do_WriteStatus(self, act: a.WriteStatus) -> bool:
        self.dcs.write_status(ClusterStatus(optime=act.optime, slots=self.ops.slot_positions(),
                                            retain_slots=act.retain_slots))
        return True

    def _do_WriteSync(self, act: a.WriteSync) -> bool:
        return self.dcs.write_sync(self.dcs.name, act.standbys, act.revision)

    def _do_ClearFailover(self, act: a.ClearFailover) -> bool:
        self.dcs.clear_failover(act.revision)
        return True

    # --- PostgreSQL ----------------------------------------------------------------------------
    def _do_Fatal(self, act: a.Fatal) -> bool:
        raise FatalError(act.reason)

    def _do_Bootstrap(self, act: a.Bootstrap) -> bool:
        return self.jobs.start("bootstrap", self.ops.bootstrap, self.wake)

    def _do_Clone(self, act: a.Clone) -> bool:
        source = _need(act.source)
        return self.jobs.start("clone", lambda: self.ops.clone(source), self.wake)

    def _do_Rewind(self, act: a.Rewind) -> bool:
        source = _need(act.source)
        return self.jobs.start("rewind", lambda: self.ops.rewind(source), self.wake)

    def _do_Reinitialize(self, act: a.Reinitialize) -> bool:
        source = _need(act.source)
        return self.jobs.start("reinitialize", lambda: self.ops.reinitialize(source), self.wake)

    def _do_WipeDataDir(self, act: a.WipeDataDir) -> bool:
        return self.ops.wipe()

    def _do_StartPostgres(self, act: a.StartPostgres) -> bool:
        primary = act.role is Role.PRIMARY
        return self.jobs.start("start", lambda: self.ops.start(primary=primary, upstream=act.leader), self.wake)

    def _do_Promote(self, act: a.Promote) -> bool:
        ok = self.ops.promote(strict_sync=act.strict_sync, timeout=act.timeout)
        if ok:
            history = self.ops.timeline_history(act.history, self.dcs.name)
            if act.keep_history > 0:
                history = history[-act.keep_history:]  # Patroni's max_timelines_history
            if history and history != act.history:
                self.dcs.write_history(history)
            self.events.emit("promoted", act.reason, timeline=history[-1].timeline + 1 if history else None)
        return ok

    def _do_Demote(self, act: a.Demote) -> bool:
        graceful = act.mode is a.DemoteMode.GRACEFUL
        if graceful:
            self.ops.checkpoint()  # while still serving, so that the shutdown checkpoint is short
        stopped = self.ops.stop(mode="fast" if graceful else "immediate", kill_after=self.stop_kill_after())
        self.events.emit("demoted", act.reason, mode=act.mode.value, stopped=stopped)
        if stopped and act.release:
            self.dcs.release_leader()
            self.key_lost()
        return stopped

    def _do_Follow(self, act: a.Follow) -> bool:
        return self.ops.follow(act.leader)

    def _do_EnsureSlots(self, act: a.EnsureSlots) -> bool:
        self.ops.ensure_slots(act.names)
        return True

    def _do_SetSyncStandbyNames(self, act: a.SetSyncStandbyNames) -> bool:
        return self.ops.set_sync_standby_names(act.value)

    def _do_RestartPostgres(self, act: a.RestartPostgres) -> bool:
        return self.jobs.start("restart", lambda: self.ops.restart(act.timeout), self.wake)

    def _do_ReloadConfig(self, act: a.ReloadConfig) -> bool:
        return self.reload_config()

    def _do_ReconcileConfig(self, act: a.ReconcileConfig) -> bool:
        return self.ops.reconcile()


def _need(member: Member | None) -> Member:
    if member is None:
        raise FatalError("action needs a source member")
    return member
