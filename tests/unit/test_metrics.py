"""GET /metrics from a published state document, parsed back with prometheus_client's text parser."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from appliance import __version__
from appliance.api.metrics import CONTENT_TYPE, register_metrics, version_number
from appliance.config.security import CHANNELS
from appliance.core.model import ClusterStatus, ClusterView, Leader, Member, SyncState
from appliance.core.state import HaSettings
from appliance.manager.publish import state_doc
from appliance.postgres.status import PgStatus

MONO = 1000.0
WALL = 1_700_000_100.0
START = datetime(2023, 11, 14, 22, 0, 0, tzinfo=UTC)
REPLAYED = datetime.fromtimestamp(WALL - 7.5, tz=UTC)
VIEW = ClusterView(
    initialize="7300000000000000001",
    leader=Leader("n1"),
    members=(Member("n1"), Member("n2"), Member("n3")),
    sync=SyncState(leader="n1", sync_standby=("n2",)),
    status=ClusterStatus(optime=90_000),
)
METRICS = {"loop_count": 40, "loop_seconds_sum": 2.0, "last_loop_seconds": 0.04, "dcs_errors_total": 3,
           "dcs_rtt_seconds": 0.002, "actions_total": {"Promote": 2, "Demote_graceful": 1, "Demote_immediate": 1,
                                                       "Rewind": 1, "UpdateLeader": 99}}


def _primary_status() -> PgStatus:
    return PgStatus(running=True, in_recovery=False, role="primary", timeline=3, server_version=150004,
                    postmaster_start_time=START, system_identifier="7300000000000000001", wal_lsn=90_000)


def _replica_status(receive: int = 90_000, replay: int = 80_000) -> PgStatus:
    return PgStatus(running=True, in_recovery=True, role="replica", timeline=3, server_version=150004,
                    postmaster_start_time=START, receive_lsn=receive, replay_lsn=replay, replay_timestamp=REPLAYED,
                    replay_paused=False, replication_state="streaming")


def _doc(name: str, status: PgStatus, holder: bool, updated: float = MONO - 0.5, **extra: Any) -> dict[str, Any]:
    doc = state_doc(name=name, scope="demo", ha=HaSettings(), status=status, view=VIEW, job=None,
                    tags={"failover_priority": 3} if name == "n2" else {}, holder=holder,
                    lease_expires=MONO + 4.0 if holder else None, loop_started=updated, now=updated,
                    dcs_last_seen=WALL - 1, events=[])
    doc["pid"] = None  # no liveness probe of a real pid in unit tests
    doc["metrics"] = METRICS
    doc.update(extra)
    return doc


def scrape(doc: dict[str, Any] | None) -> tuple[str, dict[str, dict[str, Any]]]:
    app = Flask("test")
    register_metrics(app, lambda: doc, lambda: MONO, wall=lambda: WALL)
    resp = app.test_client().get("/metrics")
    assert resp.status_code == 200
    assert resp.content_type == CONTENT_TYPE
    text = resp.get_data(as_text=True)
    samples: dict[str, dict[str, Any]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            channel = s.labels.get("channel")
            name = f"{s.name}[{channel}]" if channel else s.name
            labels = {k: v for k, v in s.labels.items() if k != "channel"}
            samples[name] = {"value": s.value, "labels": labels, "type": family.type}
    return text, samples


def values(samples: dict[str, dict[str, Any]]) -> dict[str, float]:
    return {k: v["value"] for k, v in samples.items()}


def test_version_number_is_patroni_padded() -> None:
    assert version_number("4.1.4") == 40104
    assert version_number("0.1.0") == 100
    assert version_number("1.10.3") == 11003


def test_a_protection_turned_off_is_visible() -> None:
    doc = _doc("n1", _primary_status(), holder=True)
    doc["insecure"] = ["restapi_tls", "etcd_auth"]
    v = values(scrape(doc)[1])
    assert v["pgappliance_insecure[restapi_tls]"] == v["pgappliance_insecure[etcd_auth]"] == 1
    assert v["pgappliance_insecure[postgresql_tls]"] == 0


def test_primary_doc() -> None:
    text, samples = scrape(_doc("n1", _primary_status(), holder=True))
    v = values(samples)
    assert all(s["labels"] == {"scope": "demo", "name": "n1"} for k, s in samples.items() if k != "pgappliance_info")
    assert v["patroni_version"] == 40104  # the Patroni contract, so that check_patroni reads our states
    assert samples["pgappliance_info"]["labels"] == {"scope": "demo", "name": "n1", "version": __version__,
                                                     "patroni_version": "4.1.4"}
    assert v["patroni_postgres_running"] == 1
    assert v["patroni_postmaster_start_time"] == START.timestamp()
    assert (v["patroni_primary"], v["patroni_replica"], v["patroni_standby_leader"]) == (1, 0, 0)
    assert v["patroni_xlog_location"] == 90_000
    assert v["patroni_xlog_received_location"] == v["patroni_xlog_replayed_location"] == 0
    assert v["patroni_postgres_server_version"] == 150004
    assert v["patroni_postgres_timeline"] == 3
    assert v["patroni_postgres_state"] == 5
    assert v["patroni_cluster_unlocked"] == 0
    assert v["patroni_dcs_last_seen"] == int(WALL - 1)
    assert v["patroni_failover_priority"] == 1
    assert v["pgappliance_leader_lease_remaining_seconds"] == 4.0
    assert v["pgappliance_replication_lag_bytes"] == v["pgappliance_replication_lag_seconds"] == 0
    assert v["pgappliance_ha_loop_duration_seconds_count"] == 40
    assert v["pgappliance_ha_loop_duration_seconds_sum"] == 2.0
    assert v["pgappliance_ha_loop_last_duration_seconds"] == 0.04
    assert v["pgappliance_dcs_rtt_seconds"] == 0.002
    assert v["pgappliance_dcs_errors_total"] == 3
    assert (v["pgappliance_promotions_total"], v["pgappliance_demotions_total"]) == (2, 2)
    assert (v["pgappliance_switchovers_total"], v["pgappliance_rewinds_total"]) == (1, 1)
    assert v["pgappliance_reinitializations_total"] == 0
    assert all(v[f"pgappliance_insecure[{c}]"] == 0 for c in CHANNELS)
    assert v["pgappliance_state_fresh"] == 1
    # Patroni's names stay exact: no _total appended to the xlog "counters".
    assert "# TYPE patroni_xlog_location gauge" in text
    assert "patroni_xlog_location_total" not in text
    assert "# TYPE pgappliance_dcs_errors_total counter" in text
    assert samples["pgappliance_ha_loop_duration_seconds_count"]["type"] == "summary"


def test_replica_doc() -> None:
    _, samples = scrape(_doc("n2", _replica_status(), holder=False))
    v = values(samples)
    assert samples["patroni_replica"]["labels"] == {"scope": "demo", "name": "n2"}
    assert (v["patroni_primary"], v["patroni_replica"], v["patroni_sync_standby"]) == (0, 1, 1)
    assert v["patroni_xlog_location"] == 0
    assert (v["patroni_xlog_received_location"], v["patroni_xlog_replayed_location"]) == (90_000, 80_000)
    assert v["patroni_xlog_replayed_timestamp"] == REPLAYED.timestamp()
    assert (v["patroni_postgres_streaming"], v["patroni_postgres_in_archive_recovery"]) == (1, 0)
    assert v["patroni_xlog_paused"] == 0
    assert v["patroni_failover_priority"] == 3
    assert v["pgappliance_leader_lease_remaining_seconds"] == 0
    assert v["pgappliance_replication_lag_bytes"] == 10_000
    assert v["pgappliance_replication_lag_seconds"] == 7.5


def test_caught_up_replica_has_no_lag_seconds_however_old_the_last_commit() -> None:
    _, samples = scrape(_doc("n3", _replica_status(90_000, 90_000), holder=False))
    v = values(samples)
    assert v["pgappliance_replication_lag_bytes"] == 0
    assert v["pgappliance_replication_lag_seconds"] == 0
    assert v["patroni_sync_standby"] == 0


def test_stale_doc_reports_nothing_running_but_keeps_counters_and_labels() -> None:
    text, samples = scrape(_doc("n1", _primary_status(), holder=True, updated=MONO - 60))
    v = values(samples)
    assert samples["patroni_primary"]["labels"] == {"scope": "demo", "name": "n1"}
    assert v["pgappliance_state_fresh"] == 0
    assert v["patroni_postgres_running"] == 0
    assert v["patroni_primary"] == 0
    assert v["patroni_postgres_state"] == -1
    assert v["patroni_xlog_location"] == 0
    assert v["pgappliance_leader_lease_remaining_seconds"] == 0
    assert "pgappliance_replication_lag_bytes" not in v  # unknown: no sample, but the family is declared
    assert "# TYPE pgappliance_replication_lag_bytes gauge" in text
    assert v["pgappliance_promotions_total"] == 2


def test_no_state_is_still_a_valid_exposition() -> None:
    _, samples = scrape(None)
    v = values(samples)
    assert v["pgappliance_state_fresh"] == 0
    assert v["patroni_postgres_running"] == 0
    assert v["patroni_version"] == 40104
    assert v["pgappliance_dcs_errors_total"] == 0
    assert "pgappliance_dcs_rtt_seconds" not in v


def test_unknown_state_wording_maps_to_minus_one() -> None:
    doc = _doc("n2", _replica_status(), holder=False)
    doc["patroni_doc"]["state"] = "rewinding"
    _, samples = scrape(doc)
    assert samples["patroni_postgres_state"]["value"] == -1


def test_patroni_doc_and_member_key_report_the_patroni_contract_version() -> None:
    """check_patroni keys detailed replica states on version >= 3.0.4: we report the contract's."""
    from appliance.manager.publish import member_value

    doc = _doc("n1", _primary_status(), holder=True)
    about = doc["patroni_doc"]["patroni"]
    assert about == {"version": "4.1.4", "scope": "demo", "name": "n1", "appliance_version": __version__}
    member = member_value("n1", "postgres://h:5432/postgres", "https://h:8008/patroni", _primary_status(), None, {})
    assert member.version == "4.1.4"


def test_quorum_standby_gauge() -> None:
    """Patroni's patroni_quorum_standby: 1 on a voter of the sync key in synchronous_mode quorum
    (then patroni_sync_standby is 0), 0 elsewhere."""
    quorum = replace(VIEW, config={"synchronous_mode": "quorum"},
                     sync=SyncState(leader="n1", sync_standby=("n2", "n3"), quorum=1))
    doc = state_doc(name="n2", scope="demo", ha=HaSettings(), status=_replica_status(), view=quorum, job=None,
                    tags={}, holder=False, lease_expires=None, loop_started=MONO - 0.5, now=MONO - 0.5,
                    dcs_last_seen=WALL - 1, events=[])
    doc["pid"] = None
    text, samples = scrape(doc)
    v = values(samples)
    assert (v["patroni_quorum_standby"], v["patroni_sync_standby"]) == (1, 0)
    assert "# TYPE patroni_quorum_standby gauge" in text
    assert doc["patroni_doc"]["quorum_standby"] is True
    roles = {m["name"]: m["role"] for m in doc["cluster"]["patroni_cluster"]["members"]}
    assert roles == {"n1": "leader", "n2": "quorum_standby", "n3": "quorum_standby"}
    _, primary = scrape(_doc("n1", _primary_status(), holder=True))
    assert values(primary)["patroni_quorum_standby"] == 0
