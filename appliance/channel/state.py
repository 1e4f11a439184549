"""The manager's state document for the REST API: its typed shape (the contract between the two
processes), the file, and the freshness rule.

The manager rewrites ``<run_dir>/state.json`` every tick. Monotonic timestamps are comparable across
processes on one host (CLOCK_MONOTONIC), so the API can tell fresh state from stale without trusting
wall clocks: a health answer comes from fresh state only.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, TypedDict, cast

from appliance.channel.files import process_exists, read_json, write_json

STATE_FILE = "state.json"


class LeaseDoc(TypedDict):
    holder: bool
    expires_mono: float | None  # CLOCK_MONOTONIC of this host


class PostgresDoc(TypedDict):
    running: bool  # queryable
    role: str | None  # "primary" | "replica"
    timeline: int | None
    wal_position: int | None
    receive_lsn: int | None
    replay_lsn: int | None
    replication_state: str | None


class ClusterDoc(TypedDict, total=False):
    """The DCS as this node read it last (empty while the DCS is unreachable)."""

    leader: str | None
    sync_standby: list[str]
    quorum: bool  # synchronous_mode: quorum (sync_standby then lists the voters)
    config: dict[str, Any] | None  # the dynamic configuration document, as stored
    history: list[list[Any]]  # Patroni's rows: [timeline, lsn, reason, timestamp, new_leader]
    patroni_cluster: dict[str, Any]  # the GET /cluster body


class IntentOutcome(TypedDict):
    """What became of one operator request, keyed by its id in ``intents``."""

    kind: str
    status: str  # "running" | "done" | "failed" | "refused" | "scheduled"
    reason: str
    at: float  # epoch seconds


class ScheduledRestartDoc(TypedDict):
    schedule: str  # ISO 8601
    id: str
    params: dict[str, Any]  # the restart's conditions (role, restart_pending, timeout)


class RetryDoc(TypedDict):
    job: str
    failures: int
    retry_in: float  # seconds


class FencingDoc(TypedDict):
    fencer_alive: bool
    watchdog: str
    watchdog_reason: str
    fences: int
    problem: str | None


class HaStateDoc(TypedDict):
    """This tick's transition (appliance.core.states)."""

    state: str
    next: str
    via: str | None
    listed: bool


class LoopMetrics(TypedDict):
    loop_count: int
    loop_seconds_sum: float
    last_loop_seconds: float
    dcs_errors_total: int
    dcs_rtt_seconds: float | None
    actions_total: dict[str, int]


class StateDoc(TypedDict, total=False):
    """The manager's state document, rewritten every tick; the REST API answers from it alone.
    ``patroni_doc`` is the GET /patroni body in Patroni's (open) shape."""

    pid: int
    name: str
    scope: str
    updated_mono: float
    loop_started_mono: float
    max_age: float  # seconds after updated_mono when the API stops trusting the document
    ttl: int
    maximum_lag_on_failover: int
    paused: bool
    dcs_ok: bool
    lease: LeaseDoc
    postgres: PostgresDoc
    job: str | None
    cluster_optime: int | None
    tags: dict[str, Any]
    cluster: ClusterDoc
    patroni_doc: dict[str, Any]
    events: list[dict[str, Any]]
    intents: dict[str, IntentOutcome]
    metrics: LoopMetrics
    scheduled_restart: ScheduledRestartDoc | None
    ha_state: HaStateDoc | None
    retry: RetryDoc | None
    replication_problem: str | None
    failsafe_mode: bool
    failsafe: dict[str, str]
    insecure: list[str]
    fencing: FencingDoc
    config_rejected: str | None


def postgres_of(doc: StateDoc) -> PostgresDoc:
    """The document's PostgreSQL part, or one that says "not running" when it has none."""
    return doc.get("postgres") or PostgresDoc(running=False, role=None, timeline=None, wal_position=None,
                                              receive_lsn=None, replay_lsn=None, replication_state=None)


def lease_of(doc: StateDoc) -> LeaseDoc:
    return doc.get("lease") or LeaseDoc(holder=False, expires_mono=None)


def metrics_of(doc: StateDoc) -> LoopMetrics:
    return doc.get("metrics") or LoopMetrics(loop_count=0, loop_seconds_sum=0.0, last_loop_seconds=0.0,
                                             dcs_errors_total=0, dcs_rtt_seconds=None, actions_total={})


def state_path(run_dir: str) -> Path:
    return Path(run_dir) / STATE_FILE


def write_state(run_dir: str, doc: StateDoc) -> None:
    write_json(state_path(run_dir), doc, default=str)


def read_state(run_dir: str) -> StateDoc | None:
    """The manager's last published state, or None when there is none (or it is unreadable)."""
    doc = read_json(state_path(run_dir))
    return cast(StateDoc, doc) if isinstance(doc, dict) else None


class StateCache:
    """read_state() that parses the file again only when it changed (health checks come often)."""

    def __init__(self, run_dir: str) -> None:
        self._path = state_path(run_dir)
        self._lock = threading.Lock()
        self._key: tuple[int, int, int] | None = None
        self._doc: StateDoc | None = None

    def read(self) -> StateDoc | None:
        try:
            st = os.stat(self._path)
        except OSError:
            return None
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            if key != self._key:
                self._doc = read_state(str(self._path.parent))
                self._key = key if self._doc is not None else None
            return self._doc


def staleness(doc: StateDoc, now: float | None = None) -> str | None:
    """Why ``doc`` must not be trusted (manager dead, hung, or too old), or None when it is fresh."""
    now = time.monotonic() if now is None else now
    updated = doc.get("updated_mono")
    max_age = doc.get("max_age")
    if not isinstance(updated, (int, float)) or not isinstance(max_age, (int, float)):
        return "manager state is malformed"
    age = now - updated
    if age > max_age:
        return f"manager state is {age:.1f}s old (limit {max_age:.1f}s): manager dead or hung"
    pid = doc.get("pid")
    if isinstance(pid, int) and not process_exists(pid):
        return f"manager (pid {pid}) is not running"
    return None
