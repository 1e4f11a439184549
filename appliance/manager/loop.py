"""The HA loop: observe -> decide -> execute -> publish, woken early by the DCS watch or a finished job."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from appliance.config.errors import ConfigError, Problem
from appliance.config.layering import Effective, LocalLayers, bootstrap_dynamic, build_local, load_local, resolve
from appliance.config.schema import LocalConfig
from appliance.config.security import insecure_channels
from appliance.core import actions as a
from appliance.core import retry
from appliance.core.decide import decide
from appliance.core.election import diverged
from appliance.core.intents import plan_intent
from appliance.core.model import ClusterView, Member, Role
from appliance.core.state import HaSettings, JobResult, LocalState, PeerStatus
from appliance.core.switchover import scheduled_epoch
from appliance.core.timelines import replica_problem
from appliance.core.timing import safe_loop_wait
from appliance.dcs.base import DCS, DCSError
from appliance.fence.order import WatchdogSettings
from appliance.manager import failsafe
from appliance.manager.channel import write_state
from appliance.manager.events import EventLog
from appliance.manager.executor import Executor
from appliance.manager.fencing import FencingStatus, LeaseKeeper
from appliance.manager.intents import Intent, take_all
from appliance.manager.jobs import JobRunner
from appliance.manager.memory import Memory
from appliance.manager.peers import fetch_peers
from appliance.manager.pgops import PgOps
from appliance.manager.publish import member_value, state_doc
from appliance.manager.settings import api_url, ha_settings, hba_lines
from appliance.net.http import Client, client_for
from appliance.postgres.status import PgStatus
from appliance.postgres.validate import check_dynamic

log = logging.getLogger(__name__)

PeerFetcher = Callable[[list[Member]], tuple[PeerStatus, ...]]
DynamicCheck = Callable[[dict[str, Any], LocalConfig, str], list[Problem]]


class Manager:
    """One node's HA manager. ``tick()`` is one observe/decide/execute round."""

    def __init__(self, layers: LocalLayers, dcs: DCS, ops: PgOps, *, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, peers: PeerFetcher = fetch_peers,
                 events: EventLog | None = None) -> None:
        self.layers = layers
        self.dcs = dcs
        self.ops = ops
        self.clock = clock
        self.wall = wall
        self.fetch_peers = peers
        self.events = events or EventLog()
        self.jobs = JobRunner()
        self._wake = threading.Event()
        self.effective: Effective = resolve(layers, None)
        self.ha: HaSettings = ha_settings(self.effective.dynamic, self.effective.local)
        self._config_error: str | None = None
        self._rejected: dict[str, Any] | None = None
        # Parameters and pg_hba of a DCS document, checked by this PostgreSQL before they are applied.
        self.check_dynamic: DynamicCheck = check_dynamic
        self.fencing = LeaseKeeper(self.effective.local.appliance.run_dir, clock, self.events)
        self.fence_status: FencingStatus | None = None
        self.executor = Executor(dcs, ops, self.jobs, self.events, lambda: bootstrap_dynamic(self.layers),
                                 self._wake.set, self.reload_config, self._stop_kill_after,
                                 key_confirmed=lambda: self.fencing.key_confirmed(self.lease_ok_at,
                                                                                  self.dcs.lease_ttl),
                                 key_lost=self.fencing.key_lost, stopping=lambda: self.stopping)
        self.lease_ok_at: float | None = None
        self.dcs_last_seen: float | None = None
        self.stopping = False  # set from the SIGTERM handler: decide() takes nothing over from then on
        self.memory = Memory(self.events)
        self.pg_memory = ops.memory  # what PostgreSQL was told: PgOps records it, observe() reads it
        self.replication_problem: str | None = None
        self.failsafe = failsafe.FailsafeKeeper(self.events, clock)
        self.last_view: ClusterView | None = None
        self.last_status: PgStatus | None = None
        self._pending_result: JobResult | None = None
        self.config_path: str | None = None
        self.outcomes: dict[str, dict[str, Any]] = {}
        self._intent_jobs: dict[str, str] = {}
        self.scheduled_restart: dict[str, Any] | None = None
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
        try:
            effective = resolve(self.layers, config)
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
        if effective == self.effective:
            return
        self.effective = effective
        self.ha = ha_settings(effective.dynamic, effective.local)
        self.dcs.set_ttl(self.ha.ttl)  # the next keepalive grants a lease with it (see next_wait)
        self.dcs.set_retry_timeout(self.ha.retry_timeout)
        self.ops.set_parameters(effective.postgresql_parameters)
        self.ops.set_hba(hba_lines(effective))

    def observe(self) -> tuple[ClusterView | None, LocalState, PgStatus]:
        now = self.clock()
        view = self._read_dcs()
        status = self.ops.status()
        pg_memory = self.pg_memory
        pg_memory.track(status, self.ops.params)
        self.fence_status = fencing = self.fencing.status()
        result = self.jobs.take_result() or self._pending_result
        self._pending_result = None
        if result is not None and result.job in self._intent_jobs:
            self._outcome(self._intent_jobs.pop(result.job), result.job, "done" if result.ok else "failed",
                          result.detail)
        job = self.jobs.running
        memory = self.memory
        result = memory.after_job(result, view, status, job, now)
        memory.track(view, self.name, status, job, now)
        leader_member = view.member(view.leader_name) if view is not None and view.leader_name else None
        local_cfg = self.effective.local
        failsafe_ok = self.failsafe.round(
            view, enabled=self.ha.failsafe_mode, name=self.name, primary=status.queryable and status.role == "primary",
            me={"name": self.name, "conn_url": self.ops.conn_url, "api_url": api_url(local_cfg), "slots": {}},
            client=self.peer_client, confirmed=lambda sent: self.fencing.failsafe_confirmed(sent, self.dcs.lease_ttl))
        # During an episode each DCS attempt is cut short, so that the rounds that keep the fencer off
        # come well within ttl; back to retry_timeout once the DCS answers.
        self.dcs.set_retry_timeout(min(self.ha.retry_timeout, 1) if self.failsafe.active else self.ha.retry_timeout)
        received = failsafe.last_received(local_cfg.appliance.run_dir)
        failsafe_leader = received.name if received is not None and now - received.at < self.ha.ttl else None
        peers: tuple[PeerStatus, ...] = ()
        named = view is not None and view.failover is not None and view.failover.member == self.name \
            and not view.failover.scheduled_at
        if view is not None and view.leader is None and status.queryable and job is None and not named:
            others = [m for m in view.members if m.name != self.name]
            peers = self.fetch_peers(others)
        data_dir, sysid, was_primary = self.ops.disk_state(status.running)
        leader_alive: bool | None = None
        if (view is not None and view.leader is not None and view.leader.name != self.name
                and status.queryable and status.role == "replica" and status.replication_state != "streaming"):
            leader = view.member(view.leader.name)
            if leader is not None:
                answer = self.fetch_peers([leader])
                leader_alive = bool(answer) and answer[0].reachable and answer[0].running \
                    and answer[0].role in (Role.PRIMARY.value, "master")
        local = LocalState(
            name=self.name, now=now, wall_time=self.wall(), data_dir=data_dir,
            sysid=status.system_identifier or sysid, running=status.queryable,
            role=Role(status.role) if status.queryable and status.role else None,
            timeline=status.timeline, wal_position=status.wal_position,
            replication_state=status.replication_state, following=pg_memory.following,
            was_primary=was_primary, job=job, job_result=result, lease_ok_at=self.lease_ok_at,
            pg_down_since=memory.pg_down_since, replication=self.ops.standby_conns(status),
            synchronous_standby_names=pg_memory.ssn, ssn_set_lsn=pg_memory.ssn_set_lsn,
            config_stale=self.ops.config_stale(), peers=peers, leader_alive=leader_alive,
            pending_restart=bool(status.pending_restart), fence_problem=fencing.problem,
            stopping=self.stopping, retry=memory.retry,
            history=self.ops.own_history(status.timeline) if status.queryable else (),
            rewound_from=memory.rewound_from, not_streaming_since=memory.not_streaming_since,
            retained=memory.retained(view, self.name, self.ha.member_slots_ttl, now),
            failsafe_ok=failsafe_ok, failsafe_leader=failsafe_leader,
        )
        is_replica = local.role is Role.REPLICA and view is not None and view.leader_name not in (None, self.name)
        self.replication_problem = replica_problem(
            is_replica and view is not None and leader_member is not None and leader_member.state == "running"
            and diverged(view, local), memory.not_streaming_since, now) if is_replica else None
        return view, local, status

    def peer_client(self) -> Client:
        return client_for(self.effective.local)

    # --- one round -------------------------------------------------------------------------------
    def tick(self) -> list[a.Action]:
        started = self.clock()
        view, local, status = self.observe()
        results = self._handle_intents(view, local)
        if results is None:
            actions = decide(view, local, self.ha)
            results = self.executor.run(actions)
        else:
            actions = [act for act, _ in results]
        self.last_view, self.last_status = view, status
        self.last_loop_seconds = self.clock() - started
        self.loop_count += 1
        self.loop_seconds_sum += self.last_loop_seconds
        self._publish(view, status, started)
        return actions

    # --- operator intents --------------------------------------------------------------------------
    def _outcome(self, intent_id: str, kind: str, status: str, reason: str = "") -> None:
        self.outcomes[intent_id] = {"kind": kind, "status": status, "reason": reason, "at": self.wall()}
        while len(self.outcomes) > 50:
            self.outcomes.pop(next(iter(self.outcomes)))
        self.events.emit("intent", f"{kind}: {status}{': ' + reason if reason else ''}", intent=intent_id)

    def _due_intents(self) -> list[Intent]:
        intents = take_all(self.effective.local.appliance.run_dir)
        sched = self.scheduled_restart
        if sched is not None and self.wall() >= (scheduled_epoch(sched["schedule"]) or 0):
            self.scheduled_restart = None
            intents.append(Intent(kind="restart", params=dict(sched.get("params") or {}), id=sched["id"]))
        return intents

    def _handle_intents(self, view: ClusterView | None,
                        local: LocalState) -> list[tuple[a.Action, bool]] | None:
        """Run queued intents; None when there was none, so that decide() runs as usual."""
        intents = self._due_intents()
        if not intents:
            return None
        results: list[tuple[a.Action, bool]] = []
        if view is not None and view.leader_name == self.name:
            results += self.executor.run([a.UpdateLeader("keep the leader key while serving an intent")])
        for intent in intents:
            if intent.kind == "cancel_restart":
                self.scheduled_restart = None
                self._outcome(intent.id, intent.kind, "done")
                continue
            if intent.kind == "restart" and intent.params.get("schedule"):
                conditions = {k: v for k, v in intent.params.items() if k != "schedule"}
                self.scheduled_restart = {"schedule": intent.params["schedule"], "id": intent.id,
                                          "params": conditions}
                self._outcome(intent.id, intent.kind, "scheduled", intent.params["schedule"])
                continue
            plan = plan_intent(intent.kind, view, local, intent.params)
            if plan.refused:
                self._outcome(intent.id, intent.kind, "refused", plan.refused)
                continue
            ran = self.executor.run(list(plan.actions))
            results += ran
            ok = all(done for _, done in ran)
            job = self.jobs.running
            if ok and job is not None:
                self._intent_jobs[job] = intent.id
                self._outcome(intent.id, intent.kind, "running")
            else:
                self._outcome(intent.id, intent.kind, "done" if ok else "failed")
        return results

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
        if view is not None:
            member = member_value(self.name, self.ops.conn_url, api_url(local), status, job, local.tags,
                                  paused=self.ha.pause, scheduled_restart=self.scheduled_restart)
            try:
                self.dcs.touch_member(member)
            except DCSError as exc:
                self.events.emit("dcs_error", f"could not publish our member key: {exc}", level=logging.WARNING)
        expires = self.fencing.expires()
        doc = state_doc(name=self.name, scope=local.scope, ha=self.ha, status=status, view=view, job=job,
                        tags=local.tags, holder=self.holds_lock, lease_expires=expires, loop_started=started,
                        now=self.clock(), dcs_last_seen=self.dcs_last_seen, events=self.events.recent(50))
        doc["intents"] = self.outcomes
        doc["metrics"] = {
            "loop_count": self.loop_count,
            "loop_seconds_sum": self.loop_seconds_sum,
            "last_loop_seconds": self.last_loop_seconds,
            "dcs_errors_total": self.dcs_errors,
            "dcs_rtt_seconds": self.dcs_rtt,
            "actions_total": dict(self.executor.counters),
        }
        doc["scheduled_restart"] = self.scheduled_restart
        retrying = self.memory.retry if retry.active(self.memory.retry, self.clock()) else None
        doc["retry"] = doc["patroni_doc"]["retry"] = None if retrying is None else {
            "job": retrying.job, "failures": retrying.failures,
            "retry_in": round(max(0.0, retrying.until - self.clock()), 1)}
        doc["replication_problem"] = doc["patroni_doc"]["replication_problem"] = self.replication_problem
        doc["failsafe_mode"] = self.ha.failsafe_mode
        doc["failsafe"] = (self.failsafe.known.failsafe if self.failsafe.known is not None else None) or {}
        doc["patroni_doc"]["failsafe_mode_is_active"] = self.failsafe.active
        doc["patroni_doc"]["scheduled_restart"] = self.scheduled_restart
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
            write_state(local.appliance.run_dir, doc)
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
