"""The fencer: a small supervised process beside the manager that kills PostgreSQL when the lease
order the manager last wrote runs out, so that a frozen, killed or starved manager cannot leave a
writable primary behind once another node may hold the leader key. It also owns the watchdog device.

It never asks PostgreSQL anything (a hung server would hang it too): the postmaster's pid file and
the standby signal files say whether a server runs that could accept writes.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from appliance.fence.order import (
    ORDER_FILE,
    FenceRecord,
    FencerReport,
    LeaseOrder,
    WatchdogSettings,
    boottime,
    read_order,
    read_report,
    write_report,
)
from appliance.fence.policy import FenceStep, PgSight, step, watchdog_timeout
from appliance.fence.watchdog import Watchdog, WatchdogError
from appliance.postgres.process import kill_cluster, running_postmaster

log = logging.getLogger("appliance.fencer")

PERIOD = 0.1
REPORT_EVERY = 0.5  # seconds between two reports when nothing changed
REPROBE_AFTER = 10.0  # seconds before an unusable watchdog device is tried again


def pg_sight(data_dir: str) -> PgSight:
    postmaster = running_postmaster(data_dir)
    if postmaster is None:
        return PgSight(running=False, writable=False)
    # A single-user backend (pg_rewind runs one for crash recovery) takes no connections: killing
    # it would only break the rewind.
    standby = postmaster.single_user or any(
        os.path.exists(os.path.join(data_dir, f)) for f in ("standby.signal", "recovery.signal"))
    return PgSight(running=True, writable=not standby)


def writable_sight(data_dir: str) -> bool | None:
    """What pg_sight says of writes, for the REST API; None when this process cannot look into the
    data directory (missing, or another user's): then it claims nothing either way."""
    if not os.access(data_dir, os.R_OK | os.X_OK):
        return None
    return pg_sight(data_dir).writable


@dataclass
class _WatchdogState:
    settings: WatchdogSettings | None = None
    device: Watchdog | None = None
    state: str = "off"
    reason: str = ""
    probed_at: float = float("-inf")


class Fencer:
    """One ``once()`` per period: read the order, look at PostgreSQL, fence, feed, report."""

    def __init__(self, data_dir: str, run_dir: str, *, clock: Callable[[], float] = boottime,
                 sight: Callable[[str], PgSight] = pg_sight,
                 kill: Callable[[str], tuple[list[int], list[int]]] = kill_cluster,
                 watchdog: Callable[[str], Watchdog] = Watchdog,
                 report: Callable[[str, FencerReport], None] = write_report) -> None:
        self.data_dir = data_dir
        self.run_dir = run_dir
        self.clock = clock
        self.sight = sight
        self.kill = kill
        self.new_watchdog = watchdog
        self.report = report
        self._order: LeaseOrder | None = None
        self._order_key: tuple[int, int] | None = None
        self._wd = _WatchdogState()
        # The count survives a restart of the fencer (not of the node: the run dir is reset then).
        previous = read_report(run_dir)
        self.fences = previous.fences if previous is not None else 0
        self.last_fence: FenceRecord | None = previous.last_fence if previous is not None else None
        self._reported: tuple[object, ...] | None = None
        self._reported_at = float("-inf")

    def order(self) -> LeaseOrder | None:
        """The manager's order, parsed again only when the file changed."""
        try:
            st = os.stat(Path(self.run_dir) / ORDER_FILE)
        except OSError:
            self._order, self._order_key = None, None
            return None
        key = (st.st_ino, st.st_mtime_ns)
        if key != self._order_key:
            self._order, self._order_key = read_order(self.run_dir), key
        return self._order

    def once(self) -> FenceStep:
        order = self.order()
        now = self.clock()
        decision = step(order, self.sight(self.data_dir), now)
        if decision.fence is not None:
            self._fence(decision.fence, now)
        self._watchdog(order, decision, now)
        self._report(now)
        return decision

    def _fence(self, reason: str, now: float) -> None:
        killed, survivors = self.kill(self.data_dir)
        self.fences += 1
        self.last_fence = FenceRecord(at=now, reason=reason, killed=tuple(killed), survivors=tuple(survivors))
        level = logging.CRITICAL if survivors else logging.ERROR
        log.log(level, "fenced PostgreSQL: %s (killed %s%s)", reason, killed,
                f", still alive: {survivors}" if survivors else "",
                extra={"event": {"kind": "fenced", "reason": reason, "killed": killed, "survivors": survivors}})

    # --- the watchdog --------------------------------------------------------------------------
    def _watchdog(self, order: LeaseOrder | None, decision: FenceStep, now: float) -> None:
        wd = self._wd
        settings = order.watchdog if order is not None else WatchdogSettings()
        ttl = order.ttl if order is not None else 30.0
        timeout = watchdog_timeout(ttl, settings.safety_margin)
        if settings != wd.settings:
            if wd.device is not None:
                wd.device.close()
            wd.settings, wd.device, wd.probed_at = settings, None, float("-inf")
        if settings.mode == "off":
            wd.state, wd.reason = "off", ""
            return
        if wd.device is None:
            wd.device = self.new_watchdog(settings.device)
        device = wd.device
        try:
            if decision.watchdog == "feed":
                device.open(timeout)
                device.keepalive()
                wd.state, wd.reason = "active", ""
            elif decision.watchdog == "disarm":
                device.close()
                if wd.state == "active":
                    wd.state = "ready"
                elif wd.state != "ready" and now - wd.probed_at >= REPROBE_AFTER:
                    # Not leading: find out now whether the device works, so that a node whose
                    # watchdog is required but unusable never takes the leader key.
                    wd.probed_at = now
                    device.probe(timeout)
                    wd.state, wd.reason = "ready", ""
            # "hold": leave it as it is, unfed: a reset is the last resort if the kill did not work.
        except WatchdogError as exc:
            if wd.state != "unavailable":
                log.warning("watchdog %s unusable (mode %s): %s", settings.device, settings.mode, exc)
            wd.state, wd.reason, wd.probed_at = "unavailable", str(exc), now

    def close(self) -> None:
        if self._wd.device is not None:
            self._wd.device.close()

    def _report(self, now: float) -> None:
        wd = self._wd
        content = (wd.state, wd.reason, self.fences)
        if content == self._reported and now - self._reported_at < REPORT_EVERY:
            return
        try:
            self.report(self.run_dir, FencerReport(alive_at=now, pid=os.getpid(), watchdog=wd.state,
                                                   watchdog_reason=wd.reason, fences=self.fences,
                                                   last_fence=self.last_fence))
        except OSError as exc:
            log.error("cannot write the fencer report: %s", exc)
            return
        self._reported, self._reported_at = content, now


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="appliance-fencer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, help="PostgreSQL's data directory")
    parser.add_argument("--run-dir", required=True, help="where the manager writes its lease order")
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    parser.add_argument("--name", default="", help="node name for the log prefix")
    args = parser.parse_args(argv)
    from appliance.manager.events import setup_logging

    setup_logging("INFO", args.log_format, name=f"[{args.name}]" if args.name else "")
    # SIGTERM (supervisord's stop) must reach the finally below: closing the watchdog without the
    # magic "V" would leave its countdown running and reset the machine.
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(0))
    fencer = Fencer(args.data_dir, args.run_dir)
    log.info("fencer for %s started (period %.1fs)", args.data_dir, PERIOD)
    try:
        while True:
            started = time.monotonic()
            try:
                fencer.once()
            except Exception:  # the loop boundary: a fencer that dies protects nothing
                log.exception("fencer iteration failed")
            time.sleep(max(0.0, PERIOD - (time.monotonic() - started)))
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        fencer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
