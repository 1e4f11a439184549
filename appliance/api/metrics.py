"""GET /metrics: Patroni-compatible and pgappliance_* metrics, collected from the manager's state document.

A custom prometheus_client Collector reads the state file on each scrape and is registered in a
registry of its own (never the process-global one), so several apps in one process (tests) do not
collide and the server's threads need no multiprocess mode: nothing is counted in-process.

Patroni exposes ``patroni_xlog_*_location`` as TYPE counter without the ``_total`` suffix; the
client library would rename a counter to ``<name>_total``, so those are exposed as gauges under
Patroni's exact names (dashboards match on names, and rate()/deriv() work on gauges too).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from flask import Flask, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily

from appliance import PATRONI_VERSION, __version__
from appliance.api.health import lag_bytes
from appliance.channel.state import StateDoc, lease_of, metrics_of, postgres_of, staleness
from appliance.config.security import CHANNELS
from appliance.core.model import PgState, ReplicationState, Role
from appliance.core.tags import Tags

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LABELS = ("scope", "name")

# Patroni's fixed numeric codes for patroni_postgres_state (never renumbered); -1 for anything else.
POSTGRES_STATE_CODES: dict[str, int] = {
    "initializing new cluster": 0,
    "initdb failed": 1,
    "running custom bootstrap script": 2,
    "custom bootstrap failed": 3,
    "creating replica": 4,
    "running": 5,
    "starting": 6,
    "starting after custom bootstrap": 7,
    "start failed": 8,
    "restarting": 9,
    "restart failed": 10,
    "stopping": 11,
    "stopped": 12,
    "stop failed": 13,
    "crashed": 14,
}

# pgappliance_<name>_total <- the executor's successful action counts (state metrics.actions_total).
ACTION_COUNTERS: dict[str, tuple[tuple[str, ...], str]] = {
    "promotions": (("Promote",), "PostgreSQL promotions performed by this node's manager."),
    "demotions": (("Demote_immediate", "Demote_graceful"), "Demotions (immediate or graceful) of this node."),
    "switchovers": (("Demote_graceful",), "Graceful demotions of this node for a switchover or shutdown."),
    "rewinds": (("Rewind",), "pg_rewind runs that succeeded on this node."),
    "reinitializations": (("Reinitialize",), "Reinitializations (fresh clone) of this node."),
}


def version_number(version: str) -> int:
    """Patroni's padded version without dots: 4.1.4 -> 040104 (the value 40104), 0.1.0 -> 100."""
    parts = ["".join(itertools.takewhile(str.isdigit, part)).zfill(2) for part in version.split(".")[:3]]
    return int("".join(parts).ljust(6, "0"))


def _epoch(value: Any) -> float:
    """An ISO-8601 timestamp (or epoch number) as epoch seconds; 0 when absent or unparsable."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str) or not value:
        return 0.0
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return 0.0


def _num(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


class _Families:
    """Accumulates metric families that all carry the same scope/name labels."""

    def __init__(self, labels: list[str]) -> None:
        self.labels = labels
        self.out: list[Metric] = []

    def gauge(self, name: str, doc: str, value: float | None) -> None:
        family = GaugeMetricFamily(name, doc, labels=LABELS)
        if value is not None and not math.isnan(value):
            family.add_metric(self.labels, value)
        self.out.append(family)

    def per_channel(self, name: str, doc: str, values: dict[str, float]) -> None:
        family = GaugeMetricFamily(name, doc, labels=(*LABELS, "channel"))
        for channel, value in values.items():
            family.add_metric([*self.labels, channel], value)
        self.out.append(family)

    def counter(self, name: str, doc: str, value: float) -> None:
        family = CounterMetricFamily(name, doc, labels=LABELS)
        family.add_metric(self.labels, value)
        self.out.append(family)

    def info(self, name: str, doc: str, values: dict[str, str]) -> None:
        family = GaugeMetricFamily(name, doc, labels=(*LABELS, *values))
        family.add_metric([*self.labels, *values.values()], 1.0)
        self.out.append(family)

    def summary(self, name: str, doc: str, count: float, total: float) -> None:
        family = SummaryMetricFamily(name, doc, labels=LABELS)
        family.add_metric(self.labels, count_value=int(count), sum_value=total)
        self.out.append(family)


class StateCollector:
    """Builds every family from one read of the state document per scrape."""

    def __init__(self, reader: Callable[[], StateDoc | None], clock: Callable[[], float],
                 wall: Callable[[], float] = time.time) -> None:
        self._reader = reader
        self._clock = clock
        self._wall = wall
        # Remembered so that a scrape while the state file is missing still carries the node's labels.
        self._labels = ["", ""]

    def collect(self) -> Iterator[Metric]:
        doc = self._reader()
        if doc is not None:
            self._labels = [str(doc.get("scope") or ""), str(doc.get("name") or "")]
        fresh = doc is not None and staleness(doc, self._clock()) is None
        families = _Families(list(self._labels))
        patroni_metrics(families, doc or {}, fresh)
        appliance_metrics(families, doc or {}, fresh, self._clock(), self._wall())
        yield from families.out


def patroni_metrics(f: _Families, doc: StateDoc, fresh: bool) -> None:
    """The Patroni-compatible set; from stale or missing state, PostgreSQL counts as not running."""
    pd: dict[str, Any] = (doc.get("patroni_doc") or {}) if fresh else {}
    xlog: dict[str, Any] = pd.get("xlog") or {}
    role = pd.get("role")
    state = pd.get("state")
    f.gauge("patroni_version", "Version of the Patroni contract implemented, without periods.",
            version_number(PATRONI_VERSION))
    f.gauge("patroni_postgres_running", "Value is 1 if Postgres is running, 0 otherwise.",
            float(state == PgState.RUNNING))
    f.gauge("patroni_postmaster_start_time", "Epoch seconds since Postgres started.",
            _epoch(pd.get("postmaster_start_time")))
    f.gauge("patroni_primary", "Value is 1 if this node is the leader, 0 otherwise.", float(role == Role.PRIMARY))
    f.gauge("patroni_xlog_location", "Current location of the Postgres transaction log, 0 if this node is not the "
            "leader. (TYPE counter in Patroni.)", _num(xlog.get("location")))
    f.gauge("patroni_standby_leader", "Value is 1 if this node is the standby_leader, 0 otherwise.",
            float(role == Role.STANDBY_LEADER))
    f.gauge("patroni_replica", "Value is 1 if this node is a replica, 0 otherwise.", float(role == Role.REPLICA))
    f.gauge("patroni_sync_standby", "Value is 1 if this node is a sync standby, 0 otherwise.",
            float(bool(pd.get("sync_standby"))))
    f.gauge("patroni_quorum_standby", "Value is 1 if this node is a quorum standby, 0 otherwise.",
            float(bool(pd.get("quorum_standby"))))
    f.gauge("patroni_xlog_received_location", "Current location of the received Postgres transaction log, 0 if this "
            "node is not a replica. (TYPE counter in Patroni.)", _num(xlog.get("received_location")))
    f.gauge("patroni_xlog_replayed_location", "Current location of the replayed Postgres transaction log, 0 if this "
            "node is not a replica. (TYPE counter in Patroni.)", _num(xlog.get("replayed_location")))
    f.gauge("patroni_xlog_replayed_timestamp", "Current timestamp of the replayed Postgres transaction log, 0 if null.",
            _epoch(xlog.get("replayed_timestamp")))
    f.gauge("patroni_xlog_paused", "Value is 1 if the Postgres xlog is paused, 0 otherwise.",
            float(xlog.get("paused") is True))
    f.gauge("patroni_postgres_streaming", "Value is 1 if Postgres is streaming, 0 otherwise.",
            float(pd.get("replication_state") == ReplicationState.STREAMING))
    f.gauge("patroni_postgres_in_archive_recovery", "Value is 1 if Postgres is replicating from archive, 0 otherwise.",
            float(pd.get("replication_state") == ReplicationState.IN_ARCHIVE_RECOVERY))
    f.gauge("patroni_postgres_server_version", "Version of Postgres (if running), 0 otherwise.",
            _num(pd.get("server_version")))
    f.gauge("patroni_cluster_unlocked", "Value is 1 if the cluster is unlocked, 0 if locked.",
            float(bool(pd.get("cluster_unlocked"))))
    f.gauge("patroni_failsafe_mode_is_active", "Value is 1 if failsafe mode is active, 0 if inactive.",
            float(bool(pd.get("failsafe_mode_is_active"))))
    f.gauge("patroni_postgres_timeline", "Postgres timeline of this node (if running), 0 otherwise. "
            "(TYPE counter in Patroni.)", _num(pd.get("timeline")))
    f.gauge("patroni_dcs_last_seen", "Epoch timestamp when DCS was last contacted successfully by the manager.",
            _num((doc.get("patroni_doc") or {}).get("dcs_last_seen")))
    f.gauge("patroni_pending_restart", "Value is 1 if the node needs a restart, 0 otherwise.",
            float(bool(pd.get("pending_restart"))))
    f.gauge("patroni_is_paused", "Value is 1 if auto failover is disabled, 0 otherwise.", float(bool(pd.get("pause"))))
    f.gauge("patroni_postgres_state", "Numeric representation of Postgres state (Patroni's fixed codes; -1 unknown).",
            float(POSTGRES_STATE_CODES.get(str(state), -1)) if fresh else -1.0)
    f.gauge("patroni_failover_priority", "Value of the failover_priority tag (0 with nofailover).",
            float(Tags.from_json(doc.get("tags")).failover_priority) if doc else 0.0)


def appliance_metrics(f: _Families, doc: StateDoc, fresh: bool, now: float, wall: float) -> None:
    """pgappliance_* metrics: HA loop, DCS, lease, lag, action counters, state freshness."""
    m = metrics_of(doc)
    f.info("pgappliance_info", "Always 1: pgappliance's own version and the Patroni contract it implements.",
           {"version": __version__, "patroni_version": PATRONI_VERSION})
    f.summary("pgappliance_ha_loop_duration_seconds", "Duration of the manager's HA loop iterations.",
              _num(m.get("loop_count")), _num(m.get("loop_seconds_sum")))
    f.gauge("pgappliance_ha_loop_last_duration_seconds", "Duration of the last HA loop iteration.",
            _num(m.get("last_loop_seconds")))
    rtt = m.get("dcs_rtt_seconds")
    f.gauge("pgappliance_dcs_rtt_seconds", "Round trip of the last DCS read (absent until the first one).",
            float(rtt) if isinstance(rtt, (int, float)) else None)
    f.counter("pgappliance_dcs_errors_total", "DCS requests that failed.", _num(m.get("dcs_errors_total")))
    f.gauge("pgappliance_leader_lease_remaining_seconds", "Seconds left on the leader lease; 0 when not the holder.",
            lease_remaining(doc, now) if fresh else 0.0)
    lag = replication_lag(doc, wall) if fresh else (None, None)
    f.gauge("pgappliance_replication_lag_bytes", "Bytes of WAL not yet replayed here; 0 on the primary, absent "
            "when unknown.", lag[0])
    f.gauge("pgappliance_replication_lag_seconds", "Seconds since the last replayed commit while WAL is pending "
            "replay; 0 when caught up and on the primary, absent when unknown.", lag[1])
    actions = m.get("actions_total") if isinstance(m.get("actions_total"), dict) else {}
    for metric, (kinds, help_text) in ACTION_COUNTERS.items():
        f.counter(f"pgappliance_{metric}_total", help_text, sum(_num((actions or {}).get(k)) for k in kinds))
    f.gauge("pgappliance_state_fresh", "Value is 1 if the manager's published state is fresh, 0 otherwise.",
            float(fresh))
    f.gauge("pgappliance_config_rejected", "Value is 1 while this node rejects the DCS config (it runs on the last "
            "good one; /patroni config_rejected says why), 0 otherwise.", float(bool(doc.get("config_rejected"))))
    insecure = doc.get("insecure") if isinstance(doc.get("insecure"), list) else []
    f.per_channel("pgappliance_insecure", "Value is 1 for a protection turned off on purpose (security.<channel>: "
                  "false), 0 otherwise.", {c: float(c in (insecure or [])) for c in CHANNELS})


def lease_remaining(doc: StateDoc, now: float) -> float:
    lease = lease_of(doc)
    expires = lease.get("expires_mono")
    if not lease.get("holder") or not isinstance(expires, (int, float)):
        return 0.0
    return max(0.0, float(expires) - now)


def replication_lag(doc: StateDoc, wall: float) -> tuple[float | None, float | None]:
    """(bytes, seconds) of replay lag; (0, 0) on a primary; None where it cannot be known."""
    pg = postgres_of(doc)
    if pg.get("role") == Role.PRIMARY:
        return 0.0, 0.0
    if pg.get("role") != Role.REPLICA or not pg.get("running"):
        return None, None
    pending = lag_bytes(doc)
    if pending is None:
        return None, None
    if pending == 0:
        # An idle primary writes nothing: a caught-up replica is not lagging however old its last commit.
        return 0.0, 0.0
    replayed = _epoch(((doc.get("patroni_doc") or {}).get("xlog") or {}).get("replayed_timestamp"))
    return float(pending), (max(0.0, wall - replayed) if replayed else None)


def register_metrics(app: Flask, reader: Callable[[], StateDoc | None], clock: Callable[[], float], *,
                     wall: Callable[[], float] = time.time) -> None:
    """Add GET /metrics to ``app``, rendering the state document that ``reader`` returns on each scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector(reader, clock, wall))

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), status=200, content_type=CONTENT_TYPE)
