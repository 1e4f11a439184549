"""Health endpoints against a published manager state: codes, HEAD/OPTIONS, freshness, reasons."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from appliance.api.app import create_app
from appliance.api.health import classify, parse_lag

NOW = 1000.0


def state(role: str = "primary", holder: bool = True, **over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "pid": os.getpid(),
        "name": "n1",
        "updated_mono": NOW - 0.5,
        "loop_started_mono": NOW - 0.5,
        "max_age": 6.0,
        "ttl": 6,
        "maximum_lag_on_failover": 1048576,
        "paused": False,
        "dcs_ok": True,
        "lease": {"holder": holder, "expires_mono": NOW + 5 if holder else None},
        "postgres": {"running": True, "role": role, "replication_state": "streaming" if role == "replica" else None,
                     "receive_lsn": 5000 if role == "replica" else None,
                     "replay_lsn": 5000 if role == "replica" else None},
        "cluster_optime": 5000,
        "tags": {},
        "cluster": {"sync_standby": []},
        "patroni_doc": {"state": "running", "role": role},
    }
    doc.update(over)
    return doc


def client(doc: dict[str, Any] | None) -> FlaskClient:
    app = create_app(reader=lambda: doc, clock=lambda: NOW)
    return app.test_client()


@pytest.mark.parametrize(("path", "doc", "code"), [
    ("/primary", state(), 200),
    ("/", state(), 200),
    ("/master", state(), 200),
    ("/read-write", state(), 200),
    ("/leader", state(), 200),
    ("/primary", state(holder=False), 503),
    ("/primary", state(role="replica", holder=True), 503),  # lock held, not yet promoted (patroni#2756)
    ("/primary", state(lease={"holder": True, "expires_mono": NOW - 1}), 503),  # lease expired
    ("/primary", state(postgres={"running": False, "role": "primary"}), 503),
    ("/replica", state(role="replica", holder=False), 200),
    ("/replica", state(), 503),
    ("/replica?lag=1MB", state(role="replica", holder=False, cluster_optime=5000 + 2 * 1048576), 503),
    ("/replica?lag=16MB", state(role="replica", holder=False, cluster_optime=5000 + 2 * 1048576), 200),
    ("/replica?tag_zone=a", state(role="replica", holder=False, tags={"zone": "a"}), 200),
    ("/replica?tag_zone=b", state(role="replica", holder=False, tags={"zone": "a"}), 503),
    ("/replica", state(role="replica", holder=False, tags={"noloadbalance": True}), 503),
    ("/read-only", state(), 200),
    ("/read-only", state(role="replica", holder=False), 200),
    ("/sync", state(role="replica", holder=False, cluster={"sync_standby": ["n1"]}), 200),
    ("/sync", state(role="replica", holder=False), 503),
    ("/async", state(role="replica", holder=False), 200),
    ("/async", state(role="replica", holder=False, dcs_ok=False), 503),
    ("/health", state(role="replica", holder=False), 200),
    ("/health", state(postgres={"running": False}), 503),
    ("/liveness", state(), 200),
    ("/readiness", state(), 200),
    ("/readiness", state(role="replica", holder=False), 200),
    ("/standby-leader", state(), 503),
    # a diverged or stuck replica serves no reads (issue 11)
    ("/replica", state(role="replica", holder=False, replication_problem="diverged from the leader's timeline"), 503),
    ("/read-only", state(role="replica", holder=False, replication_problem="not streaming for 12s"), 503),
    ("/async", state(role="replica", holder=False, replication_problem="not streaming for 12s"), 503),
    ("/readiness", state(role="replica", holder=False, replication_problem="not streaming for 12s"), 503),
    # stale state: manager dead or hung answers 503, never a stale 200
    ("/primary", state(updated_mono=NOW - 60), 503),
    ("/replica", state(role="replica", holder=False, updated_mono=NOW - 60), 503),
    ("/primary", state(pid=2**22 + 12345), 503),
    ("/primary", None, 503),
])
def test_health_codes(path: str, doc: dict[str, Any] | None, code: int) -> None:
    assert client(doc).get(path).status_code == code


def test_503_body_says_why() -> None:
    resp = client(state(holder=False)).get("/primary")
    assert resp.status_code == 503
    assert "leader lock" in resp.get_json()["reason"]


def test_get_returns_patroni_body() -> None:
    assert client(state()).get("/primary").get_json()["role"] == "primary"


@pytest.mark.parametrize("method", ["HEAD", "OPTIONS"])
def test_head_and_options_are_status_only(method: str) -> None:
    c = client(state())
    ok = c.open("/primary", method=method)
    assert ok.status_code == 200 and ok.data == b""
    bad = c.open("/replica", method=method)
    assert bad.status_code == 503 and bad.data == b""


def test_liveness_tolerates_a_slow_replica_loop_but_not_a_dead_one() -> None:
    replica = state(role="replica", holder=False, loop_started_mono=NOW - 8)
    assert client(replica).get("/liveness").status_code == 200
    dead = state(role="replica", holder=False, loop_started_mono=NOW - 20)
    assert client(dead).get("/liveness").status_code == 503


def test_patroni_endpoint_flags_stale_state() -> None:
    body = client(state(updated_mono=NOW - 60)).get("/patroni").get_json()
    assert body["state"] == "unknown" and "old" in body["reason"]


@pytest.mark.parametrize(("doc", "sight", "reported"), [
    (state(updated_mono=NOW - 60), True, True),  # a frozen manager: say what the fencer sees
    (state(updated_mono=NOW - 60), False, False),
    (None, True, True),  # no manager state at all
    (state(), True, True),  # a fresh state may say replica a loop after a promotion
    (state(), False, False),
    (state(), None, None),  # it cannot look into the data directory: it claims nothing
])
def test_patroni_reports_whether_postgres_accepts_writes_whatever_the_manager_state(
        doc: dict[str, Any] | None, sight: bool | None, reported: bool | None) -> None:
    app = create_app(reader=lambda: doc, clock=lambda: NOW, pg_writable=lambda: sight)
    body = app.test_client().get("/patroni").get_json()
    assert body.get("postgres_writable") is reported


@pytest.mark.parametrize(("text", "value"), [("1048576", 1048576), ("1024kB", 1048576), ("16MB", 16 * 1024**2),
                                             ("1GB", 1024**3), ("junk", None), (None, None),
                                             # a unit letter without B is no unit (the schema fuzzer's
                                             # ?lag=0K answered 500: KeyError)
                                             ("0K", None), ("16m", None), ("2tb", 2 * 1024**4), ("7 b", 7)])
def test_parse_lag(text: str | None, value: int | None) -> None:
    assert parse_lag(text) == value


def test_a_lag_with_a_bare_unit_letter_is_no_server_error() -> None:
    app = create_app(reader=lambda: state(), clock=lambda: NOW)
    for path in ("/readiness?lag=0K", "/replica?lag=5G", "/health?lag=1t"):
        assert app.test_client().get(path).status_code in (200, 503), path


@pytest.mark.parametrize(("path", "check"), [("", "primary"), ("master", "primary"),
                                             ("read-only-sync", "read_only_sync"),
                                             ("asynchronous", "async"), ("synchronous", "sync"),
                                             ("standby_leader", "standby_leader"), ("nothing", None)])
def test_classify(path: str, check: str | None) -> None:
    assert classify(path) == check


QUORUM_CLUSTER = {"sync_standby": ["n1", "n3"], "quorum": True}


def _q(role: str = "replica", holder: bool = False, cluster: dict[str, Any] | None = None, **over: Any) -> Any:
    return state(role=role, holder=holder, cluster=QUORUM_CLUSTER if cluster is None else cluster, **over)


@pytest.mark.parametrize(("path", "doc", "code", "why"), [
    ("/quorum", _q(), 200, None),
    ("/quorum?lag=1MB", _q(cluster_optime=5000 + 2 * 1048576), 503, "exceeds"),
    ("/quorum", _q(cluster={"sync_standby": ["n3"], "quorum": True}), 503, "not a quorum standby"),
    ("/quorum", _q(cluster={"sync_standby": ["n1"]}), 503, "synchronous_mode is not quorum"),
    ("/quorum", _q(dcs_ok=False), 503, "DCS unreachable"),
    ("/quorum", _q(role="primary", holder=True), 503, "not replica"),
    ("/read-only-quorum", _q(), 200, None),
    ("/read-only-quorum", _q(role="primary", holder=True, cluster={"sync_standby": ["n3"], "quorum": True}), 200,
     None),
    ("/read-only-quorum", _q(cluster={"sync_standby": ["n3"], "quorum": True}), 503, "not a quorum standby"),
    # Patroni: in quorum mode nobody is a sync standby; a voter is not asynchronous.
    ("/sync", _q(), 503, "synchronous_mode is quorum"),
    ("/read-only-sync", _q(), 503, "synchronous_mode is quorum"),
    ("/read-only-sync", _q(role="primary", holder=True), 200, None),
    ("/async", _q(), 503, "a quorum standby"),
    ("/async", _q(cluster={"sync_standby": ["n3"], "quorum": True}), 200, None),
    ("/read-only", _q(), 200, None),
])
def test_quorum_paths(path: str, doc: dict[str, Any], code: int, why: str | None) -> None:
    resp = client(doc).get(path)
    assert resp.status_code == code
    if why is not None:
        assert why in resp.get_json()["reason"]
    for method in ("HEAD", "OPTIONS"):
        other = client(doc).open(path, method=method)
        assert other.status_code == code and other.data == b""


def test_quorum_paths_classify() -> None:
    assert classify("/quorum") == "quorum"
    assert classify("/read-only-quorum") == "read_only_quorum"
    assert classify("/read_only_quorum") == "read_only_quorum"


def test_patroni_answer_says_how_old_the_state_is_and_a_peer_reads_it() -> None:
    """Beyond Patroni: /patroni carries state_age, the seconds since the manager published the state
    it answers from; the leader race reads it (a quorum vote needs an answer newer than the vacancy)."""
    from appliance.manager.peers import parse_status

    body = client(state(role="replica", holder=False)).get("/patroni").get_json()
    assert body["state_age"] == 0.5
    assert parse_status("n1", body).published_ago == 0.5
    stale = client(state(role="replica", holder=False, updated_mono=NOW - 60)).get("/patroni").get_json()
    assert "state_age" not in stale and parse_status("n1", stale).published_ago is None


def test_the_writable_sight_claims_nothing_of_a_data_directory_it_cannot_read(tmp_path: Path) -> None:
    from appliance.fence.daemon import writable_sight

    assert writable_sight(str(tmp_path / "missing")) is None
    assert writable_sight(str(tmp_path)) is False  # readable, no postmaster.pid: nothing runs
