"""The files between the manager and the fencer: the lease order (until when PostgreSQL may accept
writes) and the fencer's report. Times are CLOCK_BOOTTIME seconds: one clock for every process of
the host that, unlike CLOCK_MONOTONIC, keeps counting while a VM is suspended (the leases of the
other nodes do too)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from appliance.channel.files import read_json, write_json

ORDER_FILE = "lease-order.json"
REPORT_FILE = "fencer.json"
# The fencer stops PostgreSQL this long before the lease deadline: one fencer period, the kill, and
# room for a manager whose renewal is merely late.
FENCE_MARGIN = 1.5
# A fencer whose report is older than this is not running (it reports every period, 0.1 s).
REPORT_MAX_AGE = 3.0

WatchdogMode = Literal["off", "automatic", "required"]


def boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


@dataclass(frozen=True)
class WatchdogSettings:
    """Patroni's ``watchdog`` section, as the fencer applies it."""

    mode: WatchdogMode = "automatic"
    device: str = "/dev/watchdog"
    safety_margin: int = 5


@dataclass(frozen=True)
class LeaseOrder:
    """What the manager last told the fencer. ``deadline`` None: PostgreSQL must not accept writes
    (this node does not hold the leader key); ``paused``: maintenance mode, no automatic fencing."""

    deadline: float | None
    ttl: float
    paused: bool = False
    margin: float = FENCE_MARGIN
    watchdog: WatchdogSettings = field(default_factory=WatchdogSettings)
    writer: int = 0  # the manager's pid
    written: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: Any) -> LeaseOrder | None:
        if not isinstance(doc, dict):
            return None
        try:
            wd = doc.get("watchdog") or {}
            mode = wd.get("mode", "automatic")
            if mode not in ("off", "automatic", "required"):
                return None
            deadline = doc.get("deadline")
            return cls(
                deadline=None if deadline is None else float(deadline),
                ttl=float(doc["ttl"]),
                paused=bool(doc.get("paused", False)),
                margin=float(doc.get("margin", FENCE_MARGIN)),
                watchdog=WatchdogSettings(mode=mode, device=str(wd.get("device", "/dev/watchdog")),
                                          safety_margin=int(wd.get("safety_margin", 5))),
                writer=int(doc.get("writer", 0)),
                written=float(doc.get("written", 0.0)),
            )
        except (KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True)
class FenceRecord:
    """One fencing: when, why, and which processes were killed."""

    at: float
    reason: str
    killed: tuple[int, ...] = ()
    survivors: tuple[int, ...] = ()


@dataclass(frozen=True)
class FencerReport:
    """What the fencer says about itself, every period."""

    alive_at: float
    pid: int
    watchdog: str  # "off", "ready", "active", "unavailable"
    watchdog_reason: str = ""
    fences: int = 0
    last_fence: FenceRecord | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: Any) -> FencerReport | None:
        if not isinstance(doc, dict):
            return None
        try:
            last = doc.get("last_fence")
            record = None
            if isinstance(last, dict):
                record = FenceRecord(at=float(last["at"]), reason=str(last["reason"]),
                                     killed=tuple(int(p) for p in last.get("killed", ())),
                                     survivors=tuple(int(p) for p in last.get("survivors", ())))
            return cls(alive_at=float(doc["alive_at"]), pid=int(doc["pid"]), watchdog=str(doc["watchdog"]),
                       watchdog_reason=str(doc.get("watchdog_reason", "")), fences=int(doc.get("fences", 0)),
                       last_fence=record)
        except (KeyError, TypeError, ValueError):
            return None


def write_order(run_dir: str, order: LeaseOrder) -> None:
    write_json(Path(run_dir) / ORDER_FILE, order.to_json())


def read_order(run_dir: str) -> LeaseOrder | None:
    return LeaseOrder.from_json(read_json(Path(run_dir) / ORDER_FILE))


def read_report(run_dir: str) -> FencerReport | None:
    return FencerReport.from_json(read_json(Path(run_dir) / REPORT_FILE))


def write_report(run_dir: str, report: FencerReport) -> None:
    write_json(Path(run_dir) / REPORT_FILE, report.to_json())
