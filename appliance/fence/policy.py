"""The fencer's rule, pure: from the manager's lease order, what PostgreSQL looks like and the time,
whether to kill PostgreSQL now and what to do with the watchdog. Table-tested."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from appliance.fence.order import LeaseOrder

WatchdogStep = Literal["feed", "hold", "disarm"]


@dataclass(frozen=True)
class PgSight:
    """PostgreSQL as the fencer sees it without asking it anything (a hung server cannot answer):
    a live postmaster, and no standby.signal/recovery.signal in the data directory."""

    running: bool
    writable: bool


@dataclass(frozen=True)
class FenceStep:
    """``fence``: why PostgreSQL must be killed now (None: leave it). ``watchdog``: feed it (a reset
    would still come before the lease deadline), hold (stop feeding: the reset is the last resort),
    or disarm (nothing to protect)."""

    fence: str | None
    watchdog: WatchdogStep


def watchdog_timeout(ttl: float, safety_margin: int) -> int:
    """The device timeout: ttl - safety_margin as in Patroni (-1: ttl / 2), at least 1 s; when the
    margin leaves less than 2 s (the appliance's short default ttl), ttl / 2."""
    timeout = ttl - safety_margin if safety_margin >= 0 else ttl / 2
    if timeout < 2:
        timeout = ttl / 2
    return max(1, int(timeout))


def step(order: LeaseOrder | None, pg: PgSight, now: float) -> FenceStep:
    if not pg.writable:
        return FenceStep(None, "disarm")
    if order is None:
        return FenceStep("PostgreSQL accepts writes and the manager left no lease order", "hold")
    if order.paused:
        return FenceStep(None, "disarm")
    if order.deadline is None:
        return FenceStep("PostgreSQL accepts writes but this node does not hold the leader key", "hold")
    left = order.deadline - now
    if left <= order.margin:
        return FenceStep(f"the leader lease was not renewed and may expire in {max(left, 0.0):.1f}s", "hold")
    if order.watchdog.mode == "off":
        return FenceStep(None, "disarm")
    # A reset must come after the fencer's own kill (deadline - margin) and before the deadline.
    timeout = watchdog_timeout(order.ttl, order.watchdog.safety_margin)
    feed = now + timeout <= order.deadline - order.margin / 2
    return FenceStep(None, "feed" if feed else "hold")
