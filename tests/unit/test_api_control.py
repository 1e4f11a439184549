"""Control endpoints on a fake cluster: switchover/failover (§1.5), restart, reload, reinitialize, access."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from appliance.api.auth import basic_credentials_match, client_allowed
from appliance.api.switchover_checks import human_bytes
from appliance.config.schema import LocalConfig
from appliance.core.model import Failover
from tests.unit.api_fakes import (
    CONFIG,
    LSN,
    MB,
    Clock,
    Cluster,
    FakeManager,
    make_app,
    member,
    said,
    standard_cluster,
    state,
)


def post(client: FlaskClient, path: str, body: Any = None, **kw: Any) -> Any:
    if body is None:
        return client.post(path, **kw)
    return client.post(path, data=json.dumps(body), content_type="application/json", **kw)


def client_of(tmp_path: Path, cluster: Cluster | None = None, **kw: Any) -> tuple[FlaskClient, FakeManager]:
    app, mgr = make_app(tmp_path, cluster, **kw)
    return app.test_client(), mgr


def failover_key(cluster: Cluster) -> dict[str, Any] | None:
    raw = cluster.raw().get("/service/demo/failover")
    return json.loads(raw) if raw else None


# --- §1.5 checks, in order ----------------------------------------------------------------------------

@pytest.mark.parametrize(("path", "body", "code", "message"), [
    ("/failover", {"leader": "node1"}, 400, "Failover could be performed only to a specific candidate"),
    ("/switchover", {"candidate": "node2"}, 400, "Switchover could be performed only from a specific leader"),
    ("/failover", {"candidate": "node2", "scheduled_at": "2030-01-01T00:00:00+00:00"}, 400,
     "Failover can't be scheduled"),
    ("/switchover", {"leader": "node1", "scheduled_at": "2030-01-01T00:00:00"}, 400,
     "Timezone information is mandatory for the scheduled switchover"),
    ("/switchover", {"leader": "node1", "scheduled_at": "2020-01-01T00:00:00+00:00"}, 422,
     "Cannot schedule switchover in the past"),
    ("/switchover", {"leader": "node1", "scheduled_at": "next tuesday"}, 422,
     "Unable to parse scheduled timestamp. It should be in an unambiguous format, e.g. ISO 8601"),
    ("/switchover", {"leader": "node1", "candidate": "node1"}, 400, "Switchover target and source are the same"),
])
def test_refusals_before_the_feasibility_check(tmp_path: Path, path: str, body: dict[str, Any], code: int,
                                               message: str) -> None:
    cluster = standard_cluster()
    before = cluster.raw()
    client, _ = client_of(tmp_path, cluster)
    resp = post(client, path, body)
    assert (resp.status_code, said(resp)) == (code, message)
    assert cluster.raw() == before


@pytest.mark.parametrize(("body", "message"), [
    ({"leader": "node1", "candidate": "node2", "scheduled_at": "2030-01-01T00:00:00+00:00"},
     "Can't schedule switchover in the paused state"),
    ({"leader": "node1"}, "Switchover is possible only to a specific candidate in a paused state"),
])
def test_paused_refusals(tmp_path: Path, body: dict[str, Any], message: str) -> None:
    cluster = standard_cluster({**CONFIG, "pause": True})
    client, _ = client_of(tmp_path, cluster)
    resp = post(client, "/switchover", body)
    assert (resp.status_code, said(resp)) == (400, message)
    assert failover_key(cluster) is None


def refusal(resp: Any) -> tuple[int, str, dict[str, str]]:
    doc = resp.get_json()
    return resp.status_code, doc["message"], doc["candidates"]


def test_412_leader_name_does_not_match(tmp_path: Path) -> None:
    client, _ = client_of(tmp_path, standard_cluster())
    resp = post(client, "/switchover", {"leader": "node2", "candidate": "node3"})
    assert refusal(resp)[:2] == (412, "leader name does not match")
    assert "the leader is node1" in resp.get_json()["detail"]


def test_412_candidate_does_not_exist(tmp_path: Path) -> None:
    client, _ = client_of(tmp_path, standard_cluster())
    resp = post(client, "/switchover", {"leader": "node1", "candidate": "node9"})
    assert refusal(resp)[:2] == (412, "candidate does not exists")


def test_412_lists_every_rejected_candidate_with_its_reason(tmp_path: Path) -> None:
    cluster = standard_cluster()
    cluster.publish(member("node2", xlog=LSN - 5 * MB))
    cluster.publish(member("node3", tags={"nofailover": True}))
    before = cluster.raw()
    client, _ = client_of(tmp_path, cluster)
    resp = post(client, "/switchover", {"leader": "node1"})
    assert refusal(resp) == (412, "switchover is not possible: no good candidates have been found", {
        "node2": "lag 5 MB exceeds maximum_lag_on_failover (1 MB)",
        "node3": "tagged nofailover",
    })
    assert cluster.raw() == before


def test_412_named_candidate_not_running(tmp_path: Path) -> None:
    cluster = standard_cluster()
    cluster.publish(member("node2", state="starting"))
    client, _ = client_of(tmp_path, cluster)
    resp = post(client, "/switchover", {"leader": "node1", "candidate": "node2"})
    assert refusal(resp) == (412, "switchover is not possible: no good candidates have been found",
                             {"node2": "state is 'starting', not running"})


def test_412_cluster_without_other_members(tmp_path: Path) -> None:
    cluster = Cluster()
    cluster.publish(member("node1", role="primary"))
    cluster.lead("node1")
    cluster.node("node1").write_config(dict(CONFIG), None)
    client, _ = client_of(tmp_path, cluster)
    resp = post(client, "/switchover", {"leader": "node1"})
    assert refusal(resp)[:2] == (412, "switchover is not possible: cluster does not have members except leader")


def test_412_sync_mode(tmp_path: Path) -> None:
    cluster = standard_cluster({**CONFIG, "synchronous_mode": True})
    assert cluster.node("node1").write_sync("node1", ("node2",), None)
    client, _ = client_of(tmp_path, cluster)
    resp = post(client, "/switchover", {"leader": "node1", "candidate": "node3"})
    assert refusal(resp)[:2] == (412, "candidate name does not match with sync_standby")
    cluster.store.delete("/service/demo/sync")
    resp = post(client, "/switchover", {"leader": "node1"})
    assert refusal(resp)[:2] == (412, "switchover is not possible: can not find sync_standby")


def test_412_quorum_mode_switchover_to_a_member_outside_the_voters(tmp_path: Path) -> None:
    """Quorum mode: a switchover's candidate must be a voter too (the leader would cancel it); a
    failover may still name any member."""
    cluster = standard_cluster({**CONFIG, "synchronous_mode": "quorum"})
    assert cluster.node("node1").write_sync("node1", ("node2",), None, quorum=0)
    client, _ = client_of(tmp_path, cluster)
    resp = post(client, "/switchover", {"leader": "node1", "candidate": "node3"})
    assert refusal(resp) == (412, "candidate name does not match with sync_standby",
                             {"node3": "not a synchronous standby (sync key: node2)"})


def test_412_from_the_candidates_own_answer(tmp_path: Path) -> None:
    answers: dict[str, Any] = {
        "node2": OSError("connection refused"),
        "node3": {"state": "running", "xlog": {"received_location": LSN - 3 * MB, "replayed_location": LSN - 3 * MB}},
    }

    def probe(m: Any) -> dict[str, Any]:
        answer = answers[m.name]
        if isinstance(answer, Exception):
            raise answer
        return dict(answer)

    cluster = standard_cluster()
    cluster.publish(member("node3", xlog=LSN - 4 * MB))
    client, _ = client_of(tmp_path, cluster, probe=probe)
    resp = post(client, "/switchover", {"leader": "node1"})
    assert refusal(resp)[2] == {"node2": "not reachable: connection refused",
                                "node3": "lag 3 MB exceeds maximum_lag_on_failover (1 MB)"}


def test_a_live_answer_outweighs_a_stale_member_key(tmp_path: Path) -> None:
    cluster = standard_cluster()
    cluster.publish(member("node2", xlog=LSN - 5 * MB))  # published a loop before the leader's WAL moved on

    def probe(m: Any) -> dict[str, Any]:
        return {"state": "running", "xlog": {"received_location": LSN, "replayed_location": LSN}}

    client, _ = client_of(tmp_path, cluster, probe=probe, clock=carry_out(cluster, "node2", []))
    resp = post(client, "/switchover", {"leader": "node1", "candidate": "node2"})
    assert resp.status_code == 200, said(resp)


def test_an_idle_leader_after_a_segment_switch_is_not_16_mb_ahead(tmp_path: Path) -> None:
    boundary = 4 * 16 * MB  # the leader's flush LSN right after pg_switch_wal
    cluster = standard_cluster()
    cluster.release("node1")
    cluster.publish(member("node1", role="primary", xlog=boundary))
    cluster.lead("node1")
    cluster.publish(member("node2", xlog=boundary - 16 * MB + 4096))  # got the switch record, not the padding
    cluster.publish(member("node3", xlog=boundary - 17 * MB))  # a segment further back: really lagging
    client, _ = client_of(tmp_path, cluster, clock=carry_out(cluster, "node2", []))
    resp = post(client, "/switchover", {"leader": "node1", "candidate": "node3"})
    assert refusal(resp)[2] == {"node3": "lag 17 MB exceeds maximum_lag_on_failover (1 MB)"}
    resp = post(client, "/switchover", {"leader": "node1", "candidate": "node2"})
    assert resp.status_code == 200, said(resp)


def test_human_bytes() -> None:
    assert [human_bytes(n) for n in (900, 1024, 1536, MB, 5 * MB + MB // 10, 3 * 1024**3)] == [
        "900 bytes", "1 kB", "1.5 kB", "1 MB", "5.1 MB", "3 GB"]


# --- the switchover itself -----------------------------------------------------------------------------

def carry_out(cluster: Cluster, new_leader: str | None, seen: list[dict[str, Any] | None],
              after: int = 3) -> Clock:
    """A clock whose sleeps play the managers: after ``after`` polls the leader hands over (or, with
    ``new_leader`` None, the leader clears the key and stays)."""
    clock = Clock()

    def step() -> None:
        if clock.sleeps == 1:
            seen.append(failover_key(cluster))
        if clock.sleeps != after:
            return
        old = cluster.store.get("/service/demo/leader")
        if new_leader is None:
            cluster.node("node1").clear_failover(None)
            return
        if old is not None:
            cluster.release(old.value)
        cluster.lead(new_leader)
        cluster.node(new_leader).clear_failover(None)

    clock.on_sleep = step
    return clock


def test_immediate_switchover_writes_the_key_and_waits_for_the_new_leader(tmp_path: Path) -> None:
    cluster = standard_cluster()
    seen: list[dict[str, Any] | None] = []
    client, _ = client_of(tmp_path, cluster, clock=carry_out(cluster, "node2", seen))
    resp = post(client, "/switchover", {"leader": "node1", "candidate": "node2"})
    assert (resp.status_code, said(resp)) == (200, 'Successfully switched over to "node2"')
    assert seen == [{"leader": "node1", "member": "node2"}]  # Patroni's format, no scheduled_at


def test_switchover_to_another_node_than_asked(tmp_path: Path) -> None:
    cluster = standard_cluster()
    client, _ = client_of(tmp_path, cluster, clock=carry_out(cluster, "node3", []))
    resp = post(client, "/switchover", {"leader": "node1", "candidate": "node2"})
    assert (resp.status_code, said(resp)) == (200, 'Switched over to "node3" instead of "node2"')


def test_switchover_failed_when_the_key_is_cleared_and_the_leader_stays(tmp_path: Path) -> None:
    cluster = standard_cluster()
    mgr = FakeManager(str(tmp_path / "run"), doc=state(events=[
        {"ts": 1_767_225_600.0, "kind": "action", "reason": "switchover cancelled: candidate node2 is stopped",
         "action": "ClearFailover", "ok": True}]))
    client, _ = client_of(tmp_path, cluster, manager=mgr, clock=carry_out(cluster, None, []))
    resp = post(client, "/switchover", {"leader": "node1", "candidate": "node2"})
    assert resp.status_code == 503
    assert said(resp) == "Switchover failed: switchover cancelled: candidate node2 is stopped"


def test_switchover_status_unknown_after_twice_max_10_loop_wait(tmp_path: Path) -> None:
    cluster = standard_cluster()
    clock = Clock()
    client, _ = client_of(tmp_path, cluster, clock=clock)
    resp = post(client, "/switchover", {"leader": "node1"})
    assert (resp.status_code, said(resp)) == (503, "Switchover status unknown")
    assert clock.now - 1000.0 == pytest.approx(20.0, abs=0.3)  # 2 * max(10, loop_wait=1)
    assert clock.sleeps == 80  # one DCS read per 0.25 s


def test_scheduled_switchover(tmp_path: Path) -> None:
    cluster = standard_cluster()
    client, _ = client_of(tmp_path, cluster)
    resp = post(client, "/switchover", {"leader": "node1", "candidate": "node2",
                                        "scheduled_at": "2026-01-01T00:10:00Z"})
    assert (resp.status_code, said(resp)) == (202, "Switchover scheduled")
    assert failover_key(cluster) == {"leader": "node1", "member": "node2",
                                     "scheduled_at": "2026-01-01T00:10:00+00:00"}


def test_failover_to_a_named_member_without_a_leader(tmp_path: Path) -> None:
    cluster = standard_cluster(lead=None)
    seen: list[dict[str, Any] | None] = []
    client, _ = client_of(tmp_path, cluster, clock=carry_out(cluster, "node3", seen))
    resp = post(client, "/failover", {"candidate": "node3"})
    assert (resp.status_code, said(resp)) == (200, 'Successfully failed over to "node3"')
    assert seen == [{"member": "node3"}]


def test_failover_naming_the_leader_is_a_switchover(tmp_path: Path) -> None:
    cluster = standard_cluster()
    client, _ = client_of(tmp_path, cluster, clock=carry_out(cluster, "node2", []))
    resp = post(client, "/failover", {"leader": "node1", "candidate": "node2"})
    assert said(resp) == 'Successfully switched over to "node2"'


class _BrokenWrites:
    """A DCS whose failover writes fail (False) or whose key changes under a CAS."""

    def __init__(self, cluster: Cluster, race: bool = False) -> None:
        self.dcs = cluster.api_dcs()
        self.cluster = cluster
        self.race = race

    def read(self) -> Any:
        return self.dcs.read()

    def write_failover(self, failover: Failover, expected_revision: int | None) -> bool:
        return False

    def clear_failover(self, expected_revision: int | None) -> bool:
        if self.race:  # someone rewrites the key between our read and our CAS
            self.cluster.node("node1").write_failover(Failover("node1", "node3", "2030-01-01T00:00:00+00:00"), None)
        return self.dcs.clear_failover(expected_revision)

    def write_config(self, config: dict[str, Any], expected_revision: int | None) -> bool:
        return self.dcs.write_config(config, expected_revision)


def test_failover_key_write_failure_is_503(tmp_path: Path) -> None:
    cluster = standard_cluster()
    app, _ = make_app(tmp_path)
    app.config["API_CONTEXT"].dcs = _BrokenWrites(cluster)
    resp = post(app.test_client(), "/switchover", {"leader": "node1", "candidate": "node2"})
    assert (resp.status_code, said(resp)) == (503, "failed to write failover key into DCS")


def test_dcs_unreachable_is_503_and_changes_nothing(tmp_path: Path) -> None:
    cluster = standard_cluster()
    cluster.store.available = False
    client, _ = client_of(tmp_path, cluster)
    resp = post(client, "/switchover", {"leader": "node1", "candidate": "node2"})
    assert resp.status_code == 503 and said(resp).startswith("DCS unreachable")


def test_delete_switchover(tmp_path: Path) -> None:
    cluster = standard_cluster()
    client, _ = client_of(tmp_path, cluster)
    assert client.delete("/switchover").status_code == 404
    cluster.node("node1").write_failover(Failover("node1", "node2", "2030-01-01T00:00:00+00:00"), None)
    resp = client.delete("/switchover")
    assert (resp.status_code, said(resp)) == (200, "scheduled switchover deleted")
    assert failover_key(cluster) is None


def test_delete_switchover_cas_conflict_is_409(tmp_path: Path) -> None:
    cluster = standard_cluster()
    cluster.node("node1").write_failover(Failover("node1", "node2", "2030-01-01T00:00:00+00:00"), None)
    app, _ = make_app(tmp_path)
    app.config["API_CONTEXT"].dcs = _BrokenWrites(cluster, race=True)
    assert app.test_client().delete("/switchover").status_code == 409
    assert failover_key(cluster) == {"leader": "node1", "member": "node3", "scheduled_at": "2030-01-01T00:00:00+00:00"}


# --- bad bodies change nothing ---------------------------------------------------------------------------

@pytest.mark.parametrize(("data", "code", "field"), [
    (None, 411, None),
    (b"{not json", 400, None),
    (b"[1, 2]", 400, None),
    (b"{}", 400, None),
    (b'{"leader": 1}', 400, "leader"),
    (b'{"leader": "node1", "candidat": "node2"}', 400, "candidat"),
])
def test_bad_switchover_bodies(tmp_path: Path, data: bytes | None, code: int, field: str | None) -> None:
    cluster = standard_cluster()
    before = cluster.raw()
    client, mgr = client_of(tmp_path, cluster)
    resp = client.post("/switchover", data=data, content_type="application/json")
    assert resp.status_code == code
    assert resp.get_json()["field"] == field and resp.get_json()["error"]
    assert cluster.raw() == before and mgr.queued() == []


# --- restart ---------------------------------------------------------------------------------------------

def test_restart_now(tmp_path: Path) -> None:
    client, mgr = client_of(tmp_path)
    resp = post(client, "/restart", {"role": "primary", "postgres_version": "15.9", "timeout": "30s"})
    assert (resp.status_code, said(resp)) == (200, "restarted successfully")
    (intent,) = mgr.taken
    assert (intent.kind, intent.params) == ("restart", {"role": "primary", "postgres_version": "15.9", "timeout": 30.0})
    assert post(client, "/restart").status_code == 200  # no body at all: restart unconditionally


@pytest.mark.parametrize(("answer", "message"), [
    (("failed", "pg_ctl exited 1"), "restart failed: pg_ctl exited 1"),
    (("refused", "reinitialize already in progress"), "reinitialize already in progress"),
])
def test_restart_failures_are_503_with_the_reason(tmp_path: Path, answer: tuple[str, str], message: str) -> None:
    mgr = FakeManager(str(tmp_path / "run"), answers={"restart": answer})
    client, _ = client_of(tmp_path, manager=mgr)
    resp = post(client, "/restart", {})
    assert (resp.status_code, said(resp)) == (503, message)


@pytest.mark.parametrize(("body", "why"), [
    ({"role": "replica"}, "host role mismatch"),
    ({"postgres_version": "15.1"}, "postgres version mismatch"),
    ({"restart_pending": True}, "pending restart flag is not set"),
])
def test_restart_conditions_not_met(tmp_path: Path, body: dict[str, Any], why: str) -> None:
    client, mgr = client_of(tmp_path)
    resp = post(client, "/restart", body)
    assert resp.status_code == 503
    assert said(resp).startswith(f"restart conditions are not satisfied: {why}")
    assert mgr.taken == [] and mgr.queued() == []


def test_restart_pending_when_the_flag_is_set(tmp_path: Path) -> None:
    doc = state()
    doc["patroni_doc"]["pending_restart"] = True
    mgr = FakeManager(str(tmp_path / "run"), doc=doc)
    client, _ = client_of(tmp_path, manager=mgr)
    assert post(client, "/restart", {"restart_pending": True}).status_code == 200


@pytest.mark.parametrize(("body", "code", "message"), [
    ({"role": "master"}, 400, "PostgreSQL role should be either primary, standby_leader, or replica"),
    ({"postgres_version": "fifteen"}, 400, "Invalid PostgreSQL version format: X.Y or X.Y.Z is accepted: fifteen"),
    ({"postgres_version": "9.6"}, 400, "Invalid PostgreSQL major version format: X.Y or X.Y.Z is accepted: 9.6"),
    ({"timeout": 0}, 400, "Timeout should be a positive number of seconds"),
    ({"timeout": "soon"}, 400, "Timeout should be a positive number of seconds"),
    ({"now": True}, 400, "Unknown filter for the scheduled restart: now"),
    ({"schedule": "2030-01-01T00:00:00"}, 400, "Timezone information is mandatory for the scheduled restart"),
    ({"schedule": "2020-01-01T00:00:00+00:00"}, 422, "Cannot schedule restart in the past"),
])
def test_restart_bad_filters(tmp_path: Path, body: dict[str, Any], code: int, message: str) -> None:
    client, mgr = client_of(tmp_path)
    resp = post(client, "/restart", body)
    assert (resp.status_code, said(resp)) == (code, message)
    assert mgr.queued() == [] and mgr.taken == []


def test_restart_bad_body_types(tmp_path: Path) -> None:
    client, mgr = client_of(tmp_path)
    resp = post(client, "/restart", {"restart_pending": "perhaps"})
    assert resp.status_code == 400 and resp.get_json()["field"] == "restart_pending"
    resp = client.post("/restart", data=b"[]", content_type="application/json")
    assert resp.status_code == 400
    assert mgr.queued() == [] and mgr.taken == []


def test_scheduled_restart_and_its_deletion(tmp_path: Path) -> None:
    client, mgr = client_of(tmp_path)
    assert client.delete("/restart").status_code == 404
    resp = post(client, "/restart", {"schedule": "2026-01-01T00:05:00+00:00", "role": "primary"})
    assert (resp.status_code, said(resp)) == (202, "Restart scheduled")
    assert mgr.taken[-1].params == {"schedule": "2026-01-01T00:05:00+00:00", "role": "primary"}
    resp = post(client, "/restart", {"schedule": "2026-01-01T00:06:00+00:00"})
    assert (resp.status_code, said(resp)) == (409, "Another restart is already scheduled")
    resp = client.delete("/restart")
    assert (resp.status_code, said(resp)) == (200, "scheduled restart deleted")
    assert mgr.taken[-1].kind == "cancel_restart" and mgr.doc["scheduled_restart"] is None


def test_scheduled_restart_refused_while_paused(tmp_path: Path) -> None:
    mgr = FakeManager(str(tmp_path / "run"), doc=state(paused=True))
    client, _ = client_of(tmp_path, manager=mgr)
    resp = post(client, "/restart", {"schedule": "2026-01-01T00:05:00+00:00"})
    assert (resp.status_code, said(resp)) == (500, "Can't schedule restart in the paused state")


def test_a_dead_manager_gets_no_intent(tmp_path: Path) -> None:
    mgr = FakeManager(str(tmp_path / "run"), doc=state(updated_mono=1.0))
    client, _ = client_of(tmp_path, manager=mgr)
    for path in ("/restart", "/reload", "/reinitialize"):
        resp = post(client, path, {})
        assert resp.status_code == 503 and "manager" in said(resp)
    assert mgr.queued() == [] and mgr.taken == []


def test_an_intent_the_manager_never_takes_is_withdrawn(tmp_path: Path) -> None:
    mgr = FakeManager(str(tmp_path / "run"), hung=True)
    client, _ = client_of(tmp_path, manager=mgr, pickup_wait=0.3)
    resp = post(client, "/reinitialize", {})
    assert resp.status_code == 503 and "did not pick the request up" in said(resp)
    assert mgr.queued() == []


def test_restart_still_starting_after_its_timeout(tmp_path: Path) -> None:
    mgr = FakeManager(str(tmp_path / "run"), answers={"restart": ("running", "")})
    client, _ = client_of(tmp_path, manager=mgr)
    resp = post(client, "/restart", {"timeout": 0.3})
    assert (resp.status_code, said(resp)) == (503, "postgres is still starting")


# --- reload and reinitialize ------------------------------------------------------------------------------

def test_reload(tmp_path: Path) -> None:
    client, mgr = client_of(tmp_path)
    resp = client.post("/reload")
    assert (resp.status_code, said(resp)) == (202, "reload scheduled")
    mgr.state()
    assert [i.kind for i in mgr.taken] == ["reload"]


def test_reinitialize(tmp_path: Path) -> None:
    mgr = FakeManager(str(tmp_path / "run"), doc=state(role="replica"), answers={"reinitialize": ("running", "")})
    client, _ = client_of(tmp_path, manager=mgr)
    resp = post(client, "/reinitialize", {"force": True, "from_leader": "yes"})
    assert (resp.status_code, said(resp)) == (200, "reinitialize started")
    assert mgr.taken[0].params == {"force": True, "from_leader": True}


def test_reinitialize_refused(tmp_path: Path) -> None:
    refused = ("refused", "I am the leader, can not reinitialize")
    mgr = FakeManager(str(tmp_path / "run"), answers={"reinitialize": refused})
    client, _ = client_of(tmp_path, manager=mgr)
    resp = client.post("/reinitialize")
    assert (resp.status_code, said(resp)) == (503, "I am the leader, can not reinitialize")


@pytest.mark.parametrize("body", [{"force": "maybe"}, {"forced": True}])
def test_reinitialize_bad_body(tmp_path: Path, body: dict[str, Any]) -> None:
    client, mgr = client_of(tmp_path)
    resp = post(client, "/reinitialize", body)
    assert resp.status_code == 400 and resp.get_json()["field"] in body
    assert mgr.queued() == [] and mgr.taken == []


# --- access: allowlist, client certificate, Basic auth ----------------------------------------------------

def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def node_config(**restapi: Any) -> LocalConfig:
    return LocalConfig.model_validate({"name": "node1", "restapi": restapi})


def secured(**restapi: Any) -> LocalConfig:
    return node_config(authentication={"username": "admin", "password": "s3cret"}, **restapi)


def test_basic_auth_guards_unsafe_methods_only(tmp_path: Path) -> None:
    cluster = standard_cluster()
    before = cluster.raw()
    client, mgr = client_of(tmp_path, cluster, local=secured())
    for resp in (client.post("/reload"), client.post("/reload", headers=basic("admin", "wrong")),
                 client.delete("/switchover"), client.patch("/config", json={"pause": True}),
                 post(client, "/switchover", {"leader": "node1"}, headers=basic("root", "s3cret"))):
        assert resp.status_code == 401
        assert resp.headers["WWW-Authenticate"] == 'Basic realm="Patroni"'
    assert cluster.raw() == before and mgr.queued() == []
    assert client.post("/reload", headers=basic("admin", "s3cret")).status_code == 202
    assert client.get("/patroni").status_code == 200
    assert client.get("/config").status_code == 200
    assert client.head("/primary").status_code == 200
    assert client.options("/").status_code == 200


def test_allowlist_comes_before_auth(tmp_path: Path) -> None:
    client, mgr = client_of(tmp_path, standard_cluster(), local=secured(allowlist=["10.1.0.0/16", "127.0.0.1"]))
    outsider = {"REMOTE_ADDR": "192.168.1.5"}
    resp = client.post("/reload", headers=basic("admin", "s3cret"), environ_base=outsider)
    assert (resp.status_code, said(resp)) == (403, "Access is denied")
    assert mgr.queued() == []
    assert client.post("/reload", environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 401
    ok = client.post("/reload", headers=basic("admin", "s3cret"), environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert ok.status_code == 202
    assert client.get("/patroni", environ_base=outsider).status_code == 200  # reads stay open


def test_allowlist_include_members(tmp_path: Path) -> None:
    local = node_config(allowlist=["192.0.2.1"], allowlist_include_members=True)
    client, _ = client_of(tmp_path, standard_cluster(), local=local)
    assert client.post("/reload", environ_base={"REMOTE_ADDR": "10.0.0.3"}).status_code == 202  # node3's host
    assert client.post("/reload", environ_base={"REMOTE_ADDR": "10.0.0.9"}).status_code == 403


def test_verify_client_wants_a_certificate(tmp_path: Path) -> None:
    local = node_config(certfile="/c.pem", cafile="/ca.pem", verify_client="optional")
    client, _ = client_of(tmp_path, local=local)
    resp = client.post("/reload")
    assert (resp.status_code, said(resp)) == (403, "client certificate required")
    with_cert = {"appliance.peercert": {"subject": ((("commonName", "ops"),),)}}
    assert client.post("/reload", environ_base=with_cert).status_code == 202


def test_credentials_are_compared_in_constant_time_without_a_short_cut() -> None:
    calls: list[tuple[bytes, bytes]] = []

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return a == b

    header = basic("root", "s3cret")["Authorization"]
    assert not basic_credentials_match(header, "admin", "s3cret", compare=spy)
    assert calls == [(b"root", b"admin"), (b"s3cret", b"s3cret")]  # the password is compared all the same
    calls.clear()
    assert not basic_credentials_match("Bearer x", "admin", "s3cret", compare=spy)
    assert len(calls) == 2
    assert basic_credentials_match(basic("admin", "pa:ss")["Authorization"], "admin", "pa:ss")


def test_client_allowed() -> None:
    def resolve(host: str) -> set[str]:
        return {"db1.example": {"10.9.0.1"}}.get(host, set())

    assert client_allowed("10.9.0.1", ["db1.example"], resolve=resolve)
    assert client_allowed("::ffff:10.0.0.7", ["10.0.0.0/24"], resolve=resolve)
    assert client_allowed("10.0.0.2", [], ["http://10.0.0.2:8008/patroni"], resolve=resolve)
    assert not client_allowed("10.0.1.7", ["10.0.0.0/24", "db1.example"], resolve=resolve)
    assert not client_allowed(None, ["0.0.0.0/0"], resolve=resolve)


# --- health answers are unaffected ------------------------------------------------------------------------

def test_head_and_options_still_status_only(tmp_path: Path) -> None:
    client, _ = client_of(tmp_path, standard_cluster(), local=secured())
    for method in ("HEAD", "OPTIONS"):
        resp = client.open("/primary", method=method)
        assert resp.status_code == 200 and resp.data == b""
        resp = client.open("/replica", method=method)
        assert resp.status_code == 503 and resp.data == b""
    # Not a health path, but a control one: 405 naming the methods it takes (JSON, like every error).
    for method in ("OPTIONS", "GET"):
        resp = client.open("/switchover", method=method)
        assert (resp.status_code, resp.headers.get("Allow")) == (405, "POST, DELETE") and resp.is_json
    assert client.get("/nosuch").status_code == 404


# --- failsafe ------------------------------------------------------------------------------------------

FAILSAFE_BODY = {"name": "node2", "conn_url": "postgres://10.0.0.2:5432/postgres",
                 "api_url": "https://10.0.0.2:8008/patroni", "slots": {}}


def test_post_failsafe_is_accepted_by_a_replica_and_recorded_for_its_manager(tmp_path: Path) -> None:
    from appliance.channel.failsafe import last_received

    doc = state(role="replica", failsafe_mode=True, postgres={"running": True, "role": "replica",
                                                               "receive_lsn": 12345})
    mgr = FakeManager(str(tmp_path / "run"), doc=doc)
    client, _ = client_of(tmp_path, manager=mgr)
    resp = post(client, "/failsafe", FAILSAFE_BODY)
    assert (resp.status_code, said(resp), resp.headers.get("lsn")) == (200, "Accepted", "12345")
    received = last_received(str(tmp_path / "run"))
    assert received is not None and received.name == "node2"


def test_post_failsafe_refused_by_a_primary_and_when_off(tmp_path: Path) -> None:
    from appliance.channel.failsafe import last_received

    primary = FakeManager(str(tmp_path / "a"), doc=state(role="primary", failsafe_mode=True))
    client, _ = client_of(tmp_path, manager=primary)
    assert (post(client, "/failsafe", FAILSAFE_BODY).status_code, said(post(client, "/failsafe", FAILSAFE_BODY))) \
        == (500, "Running as a leader")
    off = FakeManager(str(tmp_path / "b"), doc=state(role="replica"))
    client, _ = client_of(tmp_path, manager=off)
    assert post(client, "/failsafe", FAILSAFE_BODY).status_code == 502
    assert client.get("/failsafe").status_code == 502
    assert last_received(str(tmp_path / "a")) is None and last_received(str(tmp_path / "b")) is None


@pytest.mark.parametrize("body", [{}, {"name": 5}, {"name": "n2", "evil": 1}, {"name": "n2", "slots": [1]},
                                  {"conn_url": "x"}])
def test_post_failsafe_bad_bodies(tmp_path: Path, body: dict[str, Any]) -> None:
    from appliance.channel.failsafe import last_received

    mgr = FakeManager(str(tmp_path / "run"), doc=state(role="replica", failsafe_mode=True))
    client, _ = client_of(tmp_path, manager=mgr)
    assert post(client, "/failsafe", body).status_code == 400
    assert last_received(str(tmp_path / "run")) is None


def test_post_failsafe_needs_credentials_but_not_the_allowlist(tmp_path: Path) -> None:
    mgr = FakeManager(str(tmp_path / "run"), doc=state(role="replica", failsafe_mode=True))
    client, _ = client_of(tmp_path, standard_cluster(), manager=mgr, local=secured(allowlist=["10.1.0.0/16"]))
    outsider = {"REMOTE_ADDR": "192.168.1.5"}
    assert post(client, "/failsafe", FAILSAFE_BODY, environ_base=outsider).status_code == 401
    ok = post(client, "/failsafe", FAILSAFE_BODY, headers=basic("admin", "s3cret"), environ_base=outsider)
    assert ok.status_code == 200
    assert post(client, "/reload", headers=basic("admin", "s3cret"), environ_base=outsider).status_code == 403


def test_get_failsafe_lists_the_members(tmp_path: Path) -> None:
    members = {"node1": "https://10.0.0.1:8008/patroni", "node2": "https://10.0.0.2:8008/patroni"}
    mgr = FakeManager(str(tmp_path / "run"), doc=state(failsafe_mode=True, failsafe=members))
    client, _ = client_of(tmp_path, manager=mgr)
    assert client.get("/failsafe").get_json() == members
