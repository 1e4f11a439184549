"""The manager's half of fencing: until when this node's PostgreSQL may accept writes, proved by
each DCS read and each leader-key action, written as the lease order the fencer obeys; and what the
fencer reports back (alive, watchdog usable, fencings) as inputs of decide() and events."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from appliance.channel.files import process_exists
from appliance.channel.local import LocalChannels
from appliance.core.model import ClusterView
from appliance.fence.order import (
    REPORT_MAX_AGE,
    FencerReport,
    LeaseOrder,
    WatchdogSettings,
    boottime,
)
from appliance.manager.events import EventLog

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FencingStatus:
    """What /patroni and the state document say about fencing on this node."""

    fencer_alive: bool
    watchdog: str
    watchdog_reason: str
    fences: int
    problem: str | None  # why this node must not take the leader key, or None

    @property
    def watchdog_failed(self) -> bool:
        """Patroni's ``watchdog_failed``: the watchdog is required and cannot be used."""
        return self.problem is not None and self.problem.startswith("watchdog")


class LeaseKeeper:
    """Tracks the lease deadline (monotonic) and the belief "we hold the leader key".

    The deadline only ever comes from a renewal that provably covered the leader key: a keepalive
    of the lease the key is attached to, followed by a linearizable read that shows it there (or an
    acquire/update of the key on that lease). A key seen on another member ends it at once; a key
    that vanished leaves it as it was (never extended), so the fencer still acts at the old bound.
    """

    def __init__(self, run_dir: str, clock: Callable[[], float], events: EventLog,
                 boot: Callable[[], float] = boottime, channels: LocalChannels | None = None) -> None:
        self.channels = channels or LocalChannels()
        self.run_dir = run_dir
        self.clock = clock
        self.boot = boot
        self.events = events
        self.holder = False
        self.deadline: float | None = None
        self.paused = False
        self.ttl = 5.0
        self.watchdog = WatchdogSettings()
        self._fences_seen: int | None = None
        previous = self.channels.read_order(run_dir)
        if previous is not None and previous.deadline is not None:
            # A restarted manager inherits its predecessor's bound: the postmaster it left running
            # keeps the same protection, and is not fenced for the restart alone.
            self.deadline = self.clock() + (previous.deadline - self.boot())

    # --- what proves or ends the lease ---------------------------------------------------------
    def after_read(self, view: ClusterView, name: str, lease_id: int | None, sent: float, ttl: int) -> None:
        leader = view.leader
        if leader is not None and leader.name == name:
            self.holder = True
            if lease_id is not None and leader.lease == lease_id:
                self.deadline = sent + ttl
        elif leader is not None:
            self.holder, self.deadline = False, None
        else:
            self.holder = False
        self.publish()

    def key_confirmed(self, sent: float | None, ttl: int) -> None:
        """An acquire or update of the leader key on the lease last renewed at ``sent`` succeeded."""
        self.holder = True
        if sent is not None:
            self.deadline = sent + ttl
        self.publish()

    def failsafe_confirmed(self, sent: float, ttl: int) -> None:
        """Failsafe: every member accepted our POST /failsafe sent at ``sent``; none of them races
        for the key before ``sent + ttl``. The key itself is not seen (the DCS is unreachable)."""
        if self.holder:
            self.deadline = max(self.deadline or sent, sent + ttl)
            self.publish()

    def key_lost(self) -> None:
        """The key is someone else's, absent after our update, or released by us."""
        self.holder, self.deadline = False, None
        self.publish()

    def configure(self, *, paused: bool, ttl: float, watchdog: WatchdogSettings) -> None:
        if (paused, ttl, watchdog) != (self.paused, self.ttl, self.watchdog):
            self.paused, self.ttl, self.watchdog = paused, ttl, watchdog
            self.publish()

    def expires(self) -> float | None:
        """The monotonic time the lease can last until, while we hold the key."""
        return self.deadline if self.holder else None

    def publish(self) -> None:
        now = self.clock()
        boot_now = self.boot()
        deadline = None if self.deadline is None else boot_now + (self.deadline - now)
        order = LeaseOrder(deadline=deadline, ttl=self.ttl, paused=self.paused, watchdog=self.watchdog,
                           writer=os.getpid(), written=boot_now)
        try:
            self.channels.write_order(self.run_dir, order)
        except OSError as exc:  # the fencer then acts on the previous order, which never grows
            log.error("cannot write the lease order for the fencer: %s", exc)

    # --- what the fencer says ------------------------------------------------------------------
    def status(self) -> FencingStatus:
        report = self.channels.read_report(self.run_dir)
        alive = report is not None and self.boot() - report.alive_at < REPORT_MAX_AGE and process_exists(report.pid)
        self._note_fences(report)
        problem = None
        if not alive:
            problem = "no fencer running: nothing would stop PostgreSQL if this manager froze"
        elif report is not None and self.watchdog.mode == "required" and report.watchdog == "unavailable":
            problem = f"watchdog required but unusable: {report.watchdog_reason}"
        return FencingStatus(
            fencer_alive=alive,
            watchdog=report.watchdog if report is not None else "unknown",
            watchdog_reason=report.watchdog_reason if report is not None else "",
            fences=report.fences if report is not None else 0,
            problem=problem,
        )

    def _note_fences(self, report: FencerReport | None) -> None:
        if report is None:
            return
        if self._fences_seen is not None and report.fences > self._fences_seen and report.last_fence:
            fence = report.last_fence
            self.events.emit("fenced", f"the fencer killed PostgreSQL: {fence.reason}", level=logging.ERROR,
                             killed=list(fence.killed), survivors=list(fence.survivors))
        self._fences_seen = report.fences

