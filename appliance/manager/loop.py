"""The HA loop: observe -> decide -> execute -> publish, woken early by the DCS watch or a finished job."""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from appliance.channel.local import LocalChannels
from appliance.channel.state import RetryDoc, ScheduledRestartDoc
from appliance.config import Effective, LocalLayers, bootstrap_dynamic, build_local, load_local, resolve
from appliance.config.dynamic import DynamicResult
from appliance.config.errors import ConfigError, Problem
from appliance.config.local_layers import validate_local
from appliance.config.schema import LocalConfig
from appliance.config.security import insecure_channels
from appliance.core import actions as a
from appliance.core import probes, retry, states
from appliance.core.election import replication_problem
from appliance.core.intents import IntentRequest, ScheduledRestart
from appliance.core.model import ClusterView, Member, Role
from appliance.core.plan import plan_tick
from appliance.core.state import HaSettings, JobResult, LocalState
from appliance.core.timing import safe_loop_wait
from appliance.dcs.base import DCS, DCSError
from appliance.fence.order import WatchdogSettings, boottime
from appliance.manager import failsafe
from appliance.manager.events import EventLog
from appliance.manager.executor import Executor
from appliance.manager.fencing import FencingStatus, LeaseKeeper
from appliance.manager.jobs import JobRunner
from appliance.manager.memory import Memory
from appliance.manager.peers import PeerFetcher, fetch_peers
from appliance.manager.pgops import PgOps
from appliance.manager.publish import member_value, state_doc
from appliance.manager.requests import RequestDesk
from appliance.manager.settings import api_url, ha_settings, hba_lines
from appliance.net.http import Client, client_for
from appliance.postgres.status import PgStatus
from appliance.postgres.validate import check_dynamic

log = logging.getLogger(__name__)

DynamicCheck = Callable[[dict[str, Any], LocalConfig, str], list[Problem]]


class Manager:
    """One node's HA manager. ``tick()`` is one observe/decide/execute round."""

    def __init__(self, layers: LocalLayers, dcs: DCS, ops: PgOps, *, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, peers: PeerFetcher = fetch_peers,
                 events: EventLog | None = None, jobs: JobRunner | None = None,
                 boot: Callable[[], float] = boottime, channels: LocalChannels | None = None) -> None:
        self.channels = channels or LocalChannels()
        self.layers = layers
        self.dcs = dcs
        self.ops = ops
        self.clock = clock
        self.wall = wall
        self.fetch_peers = peers
        self.events = events or EventLog()
        self.jobs = jobs or JobRunner()
        self._wake = threading.Event()
        # validate_local of self.layers, done once per layers object
        self._validated: tuple[LocalLayers, tuple[LocalConfig, DynamicResult]] | None = None
        self.effective: Effective = self._resolve(None)
        self.ha: HaSettings = ha_settings(self.effective.dynamic, self.effective.local)
        self._config_error: str | None = None
        self._rejected: dict[str, Any] | None = None
        self._applied: tuple[LocalLayers, dict[str, Any]] | None = None  # the last document resolved
        # Parameters and pg_hba of a DCS document, checked by this PostgreSQL before they are applied.
        self.check_dynamic: DynamicCheck = check_dynamic
        self.fencing = LeaseKeeper(self.effective.local.appliance.run_dir, clock, self.events, boot=boot,
                                   channels=self.channels)
        self.fence_status: FencingStatus | None = None
        self.executor = Executor(dcs, ops, self.jobs, self.events, lambda: bootstrap_dynamic(self.layers),
                                 self._wake.set, self.reload_config, self._stop_kill_after,
                                 key_confirmed=lambda: self.fencing.key_confirmed(self.lease_ok_at,
                                                                                  self.dcs.lease_ttl),
                                 key_lost=self.fencing.key_lost, stopping=lambda: self.stopping)
        self.requests = RequestDesk(self.executor, self.jobs, self.events, lambda: self.wall())
        self.lease_ok_at: float | None = None
        self.dcs_last_seen: float | None = None
        self.stopping = False  # set from the SIGTERM handler: decide() takes nothing over from then on
        self.memory = Memory(self.events)
        self.pg_memory = ops.memory  # what PostgreSQL was told: PgOps records it, observe() reads it
        self.replication_problem: str | None = None
        self.failsafe = failsafe.FailsafeKeeper(self.events, clock)
        self.last_view: ClusterView | None = None
        self.known_members: tuple[Member, ...] = ()  # from the last DCS read that succeeded
        self.last_status: PgStatus | None = None
        self._pending_result: JobResult | None = None
        self.config_path: str | None = None
        self.scheduled_restart: ScheduledRestart | None = None
        self.transition: states.Step | None = None
        self.loop_count = 0
        self.loop_seconds_sum = 0.0
        self.last_loop_seconds = 0.0
        self.dcs_errors = 0
        self.dcs_rtt: float | None = None

    def _stop_kill_after(self) -> float | None:
        """primary_stop_timeout applies in synchronous mode only, as in Patroni (0: off)."""
        timeout = self.ha.primary_stop_timeout
        return float(timeout) if self.ha.synchronous_mode and timeout > 0 else None

    @property
    def name(self) -> str:
        return self.effective.local.name

    @property
    def holds_lock(self) -> bool:
        return self.fencing.holder

    # --- observe ---------------------------------------------------------------------------------
    def _read_dcs(self) -> ClusterView | None:
        try:
            sent = self.dcs.keepalive()
            started = self.clock()
            view = self.dcs.read()
            self.dcs_rtt = self.clock() - started
            # A keepalive alone may be answered by an etcd leader that lost its quorum and has not
            # stepped down yet; count the renewal only once a linearizable read proves a quorum.
            self.lease_ok_at = sent
        except DCSError as exc:
            self.dcs_errors += 1
            self.events.emit("dcs_error", f"DCS unreachable: {exc}", level=logging.WARNING)
            return None
        self.dcs_last_seen = self.wall()
        self.known_members = view.members
        if view.config is not None:
            self._apply_dynamic(view.config)
        wd = self.effective.local.watchdog
        self.fencing.configure(paused=self.ha.pause, ttl=float(self.dcs.lease_ttl),
                               watchdog=WatchdogSettings(mode=wd.mode, device=wd.device,
                                                         safety_margin=wd.safety_margin))
        self.fencing.after_read(view, self.name, self.dcs.lease_id, sent, self.dcs.lease_ttl)
        return view

    def _apply_dynamic(self, config: dict[str, Any]) -> None:
        if self._config_error is not None and config == self._rejected:
            return  # the same document again: still rejected, already reported
        if self._applied is not None and self._applied[0] is self.layers and self._applied[1] == config:
            # The last good document on the same local layers (again, or restored after a rejected
            # one): nothing to resolve again (~2 ms a tick), and nothing rejected any more.
            self._config_error = self._rejected = None
            return
        try:
            effective = self._resolve(config)
            if effective != self.effective:
                problems = self.check_dynamic(config, effective.local, "dcs config")
                if problems:
                    raise ConfigError(problems)
        except ConfigError as exc:
            if str(exc) != self._config_error:
                self.events.emit("config_error", f"dynamic config rejected, keeping the last good one: {exc}",
                                 level=logging.ERROR)
            self._config_error, self._rejected = str(exc), dict(config)
            return
        self._config_error = self._rejected = None
        self._applied = (self.layers, copy.deepcopy(config))
        if effective == self.effective:
            return
        self.effective = effective
        self.ha = ha_settings(effective.dynamic, effective.local)
        self.dcs.set_ttl(self.ha.ttl)  # the next keepalive grants a lease with it (see next_wait)
        self.dcs.set_retry_timeout(self.ha.retry_timeout)
        self.ops.set_parameters(effective.postgresql_parameters)
        self.ops.set_hba(hba_lines(effective))

    def _resolve(self, config: dict[str, Any] | None) -> Effective:
        """resolve() with the local layers validated once per layers object (~half its cost)."""
        if self._validated is None or self._validated[0] is not self.layers:
            self._validated = (self.layers, validate_local(self.layers))
        return resolve(self.layers, config, self._validated[1])

    def observe(self) -> tuple[ClusterView | None, LocalState, PgStatus]:
        now = self.clock()
        view = self._read_dcs()
        status = self.ops.status()
        pg_memory = self.pg_memory
        pg_memory.track(status, self.ops.params)
        self.fence_status = fencing = self.fencing.status()
        result = self.jobs.take_result() or self._pending_result
        self._pending_result = None
        self.requests.job_finished(result)
        job = self.jobs.running
        memory = self.memory
        result = memory.after_job(result, view, status, job, now, self.name)
        memory.track(view, self.name, status, job, now)
        local_cfg = self.effective.local
        primary = status.queryable and status.role == Role.PRIMARY
        failsafe_ok = self.failsafe.round(
            view, enabled=self.ha.failsafe_mode, name=self.name, primary=primary,
            me={"name": self.name, "conn_url": self.ops.conn_url, "api_url": api_url(local_cfg), "slots": {}},
            client=self.peer_client, confirmed=lambda sent: self.fencing.failsafe_confirmed(sent, self.dcs.lease_ttl))
        # During an episode each DCS attempt is cut short, so that the rounds that keep the fencer off
        # come well within ttl; back to retry_timeout once the DCS answers.
        self.dcs.set_retry_timeout(min(self.ha.retry_timeout, 1) if self.failsafe.active else self.ha.retry_timeout)
        received = self.channels.read_failsafe(local_cfg.appliance.run_dir)
        failsafe_leader = received.name if received is not None and now - received.at < self.ha.ttl else None
        data_dir, sysid, was_primary = self.ops.disk_state(status.running)
        local = LocalState(
            name=self.name, now=now, wall_time=self.wall(), data_dir=data_dir,
            sysid=status.system_identifier or sysid, running=status.queryable,
            role=Role(status.role) if status.queryable and status.role else None,
            timeline=status.timeline, wal_position=status.wal_position,
            replication_state=status.replication_state, following=pg_memory.following,
            was_primary=was_primary, job=job, job_result=result, lease_ok_at=self.lease_ok_at,
            pg_down_since=memory.pg_down_since, replication=self.ops.standby_conns(status),
            synchronous_standby_names=pg_memory.ssn, ssn_set_lsn=pg_memory.ssn_set_lsn,
            config_stale=self.ops.config_stale(),
            pending_restart=bool(status.pending_restart), fence_problem=fencing.problem,
            stopping=self.stopping, retry=memory.retry,
            history=self.ops.own_history(status.timeline) if status.queryable else (),
            rewound_from=memory.rewound_from, not_streaming_since=memory.not_streaming_since,
            retained=memory.retained(view, self.name, self.ha.member_slots_ttl, now),
            remembered=memory.remembered, leader_free_since=memory.leader_free_since,
            failsafe_ok=failsafe_ok, failsafe_leader=failsafe_leader,
        )
        local = self._probe(view, local)
        self.replication_problem = replication_problem(view, local)
        return view, local, status

    def _probe(self, view: ClusterView | None, local: LocalState) -> LocalState:
        """Ask the peers core.probes names (a leader race, a stalled replica) and add their answers."""
        names = probes.probe_peers(view, local)
        asked = [m for m in view.members if m.name in names] if view is not None else []
        vanished = probes.probe_vanished(view, local)
        asked.extend(vanished)
        if asked:
            quick = tuple(m.name for m in vanished)
            local = dataclasses.replace(local, peers=self.fetch_peers(asked, quick=quick))
        if probes.probe_cut_off(view, local, self.ha.pause):
            others = [m for m in self.known_members if m.name != self.name]
            local = dataclasses.replace(local, peers=self.fetch_peers(others, quick=[m.name for m in others]))
        leader = probes.probe_leader(view, local)
        member = view.member(leader) if view is not None and leader is not None else None
        if member is not None:
            answer = self.fetch_peers([member])
            local = dataclasses.replace(local, leader_alive=bool(answer) and probes.runs_as_primary(answer[0]))
        return local

    def peer_client(self) -> Client:
        return client_for(self.effective.local)

    # --- one round -------------------------------------------------------------------------------
    def tick(self) -> list[a.Action]:
        started = self.clock()
        view, local, status = self.observe()
        taken = self.channels.take_intents(self.effective.local.appliance.run_dir)
        requests = [IntentRequest(i.kind, i.params, i.id) for i in taken]
        plan = plan_tick(view, local, self.ha, requests, self.scheduled_restart)
        self.scheduled_restart = plan.requests.schedule
        actions = [act for act, _ in self.requests.serve(plan.requests)]  # outcomes, and the requests that run
        actions += plan.actions  # decide()'s, unless a request runs
        for act, ok in self.executor.run(list(plan.actions)):
            if isinstance(act, a.Promote):
                self.memory.after_promote(ok, self.clock())
        self._note_transition(plan.step)
        self.last_view, self.last_status = view, status
        self.last_loop_seconds = self.clock() - started
        self.loop_count += 1
        self.loop_seconds_sum += self.last_loop_seconds
        self._publish(view, status, started)
        return actions

    def _note_transition(self, step: states.Step) -> None:
        """Remember this tick's transition; one taken that the table does not list is reported."""
        self.transition = step
        if not step.listed:
            assert step.action is not None
            self.events.emit("transition", f"not in the transition table: {step.source} --{step.action.__name__}-->",
                             level=logging.ERROR, source=step.source.value, action=step.action.__name__)
        elif step.action is not None:
            self.events.emit("transition", f"{step.source} -> {step.target}: {step.row.why if step.row else ''}",
                             source=step.source.value, target=step.target.value, action=step.action.__name__)

    def reload_config(self) -> bool:
        """Re-read the local configuration file (SIGHUP, POST /reload) and reload PostgreSQL."""
        try:
            layers = load_local(self.config_path, os.environ)
            build_local(layers)
        except ConfigError as exc:
            self.events.emit("config_error", f"reload refused, keeping the running config: {exc}",
                             level=logging.ERROR)
            return False
        self.layers = layers
        view_config = self.last_view.config if self.last_view is not None else None
        self._apply_dynamic(view_config or {})
        return self.ops.reconcile()

    def _publish(self, view: ClusterView | None, status: PgStatus, started: float) -> None:
        local = self.effective.local
        job = self.jobs.running
        starting_as = self.executor.starting_as if job in ("start", "restart") else None
        sched = self.scheduled_restart
        schedule = None if sched is None else ScheduledRestartDoc(schedule=sched.schedule, id=sched.id,
                                                                  params=dict(sched.params))
        if view is not None:
            member = member_value(self.name, self.ops.conn_url, api_url(local), status, job, local.tags,
                                  paused=self.ha.pause, scheduled_restart=schedule, starting_as=starting_as)
            try:
                self.dcs.touch_member(member)
            except DCSError as exc:
                self.events.emit("dcs_error", f"could not publish our member key: {exc}", level=logging.WARNING)
        expires = self.fencing.expires()
        doc = state_doc(name=self.name, scope=local.scope, ha=self.ha, status=status, view=view, job=job,
                        tags=local.tags, holder=self.holds_lock, lease_expires=expires, loop_started=started,
                        now=self.clock(), dcs_last_seen=self.dcs_last_seen, events=self.events.recent(50),
                        starting_as=starting_as)
        doc["intents"] = self.requests.outcomes
        doc["metrics"] = {
            "loop_count": self.loop_count,
            "loop_seconds_sum": self.loop_seconds_sum,
            "last_loop_seconds": self.last_loop_seconds,
            "dcs_errors_total": self.dcs_errors,
            "dcs_rtt_seconds": self.dcs_rtt,
            "actions_total": dict(self.executor.counters),
        }
        doc["scheduled_restart"] = schedule
        step = self.transition
        doc["ha_state"] = None if step is None else {
            "state": step.source.value, "next": step.target.value,
            "via": step.action.__name__ if step.action is not None else None, "listed": step.listed}
        retrying = self.memory.retry if retry.active(self.memory.retry, self.clock()) else None
        doc["retry"] = doc["patroni_doc"]["retry"] = None if retrying is None else RetryDoc(
            job=retrying.job, failures=retrying.failures, retry_in=round(max(0.0, retrying.until - self.clock()), 1))
        doc["replication_problem"] = doc["patroni_doc"]["replication_problem"] = self.replication_problem
        doc["failsafe_mode"] = self.ha.failsafe_mode
        doc["failsafe"] = (self.failsafe.known.failsafe if self.failsafe.known is not None else None) or {}
        doc["patroni_doc"]["failsafe_mode_is_active"] = self.failsafe.active
        doc["patroni_doc"]["scheduled_restart"] = schedule
        doc["insecure"] = doc["patroni_doc"]["insecure_channels"] = list(insecure_channels(local))
        fencing = self.fence_status
        if fencing is not None:
            doc["fencing"] = {"fencer_alive": fencing.fencer_alive, "watchdog": fencing.watchdog,
                              "watchdog_reason": fencing.watchdog_reason, "fences": fencing.fences,
                              "problem": fencing.problem}
            doc["patroni_doc"]["watchdog_failed"] = fencing.watchdog_failed
        # A DCS config this node cannot apply: it runs on the last good one and says why.
        doc["config_rejected"] = doc["patroni_doc"]["config_rejected"] = self._config_error
        try:
            self.channels.write_state(local.appliance.run_dir, doc)
        except OSError as exc:
            log.error("cannot write the state file for the API: %s", exc)

    # --- forever ---------------------------------------------------------------------------------
    def next_wait(self) -> float:
        if self.failsafe.active:
            # Each round of POST /failsafe is what keeps the fencer off: no sleep between rounds
            # (a failing DCS read already takes up to retry_timeout).
            return 0.2
        return safe_loop_wait(self.ha.loop_wait, self.dcs.lease_ttl, self.ha.retry_timeout)

    def wait_next(self) -> None:
        """Sleep up to next_wait(); a DCS watch event or a finished job wakes us early."""
        deadline = self.clock() + self.next_wait()
        while not self._wake.is_set():
            remaining = deadline - self.clock()
            if remaining <= 0:
                break
            if self.dcs.wait(min(0.1, remaining)):
                break
        self._wake.clear()

    def wake(self) -> None:
        self._wake.set()

    def shutdown(self) -> None:
        """Clean stop (SIGTERM): a fast PostgreSQL shutdown, then give the leader key away."""
        self.jobs.join(timeout=30)
        if self.ha.pause:
            self.events.emit("shutdown", "paused: leaving PostgreSQL running")
            return
        stopped = self.ops.stop(mode="fast")
        self.events.emit("shutdown", "manager stopping: PostgreSQL stopped" if stopped else "stop failed")
        if stopped and self.holds_lock:
            try:
                self.dcs.release_leader()
                self.fencing.key_lost()
                self.events.emit("shutdown", "released the leader key after a clean stop")
            except DCSError as exc:
                self.events.emit("dcs_error", f"could not release the leader key: {exc}", level=logging.WARNING)
