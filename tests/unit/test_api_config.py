"""GET/PATCH/PUT /config against a FakeStore: merge patch, validation before any write, CAS, pause/resume."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from appliance.dcs.base import DCSError
from tests.unit.api_fakes import CONFIG, Cluster, make_app, standard_cluster

CONFIG_KEY = "/service/demo/config"


def client_of(tmp_path: Path, cluster: Cluster) -> FlaskClient:
    app, _ = make_app(tmp_path, cluster)
    return app.test_client()


def stored(cluster: Cluster) -> dict[str, Any]:
    return json.loads(cluster.raw()[CONFIG_KEY])


def revision(cluster: Cluster) -> int:
    row = cluster.store.entry(CONFIG_KEY)
    assert row is not None
    return row.mod_revision


def test_get_config_reads_the_dcs(tmp_path: Path) -> None:
    cluster = standard_cluster()
    resp = client_of(tmp_path, cluster).get("/config")
    assert (resp.status_code, resp.get_json()) == (200, CONFIG)


def test_get_config_without_a_config_key_is_502(tmp_path: Path) -> None:
    app, mgr = make_app(tmp_path, standard_cluster(config=None))
    mgr.doc["cluster"]["config"] = None
    assert app.test_client().get("/config").status_code == 502


def test_patch_merges_and_writes_with_cas(tmp_path: Path) -> None:
    cluster = standard_cluster()
    client = client_of(tmp_path, cluster)
    resp = client.patch("/config", json={"maximum_lag_on_failover": 2097152,
                                         "postgresql": {"parameters": {"work_mem": "8MB", "max_connections": None}}})
    expected = copy.deepcopy(CONFIG)
    expected["maximum_lag_on_failover"] = 2097152
    expected["postgresql"]["parameters"] = {"work_mem": "8MB"}
    assert (resp.status_code, resp.get_json()) == (200, expected)
    assert stored(cluster) == expected


def test_pause_and_resume(tmp_path: Path) -> None:
    cluster = standard_cluster()
    client = client_of(tmp_path, cluster)
    assert client.patch("/config", json={"pause": True}).get_json()["pause"] is True
    assert stored(cluster)["pause"] is True
    resp = client.patch("/config", json={"pause": None})
    assert resp.status_code == 200 and "pause" not in resp.get_json()
    assert stored(cluster) == CONFIG


def test_unchanged_patch_writes_nothing(tmp_path: Path) -> None:
    cluster = standard_cluster()
    before = revision(cluster)
    resp = client_of(tmp_path, cluster).patch("/config", json={"ttl": 5, "pause": None})
    assert resp.status_code == 200
    assert revision(cluster) == before


@pytest.mark.parametrize(("patch", "field"), [
    ({"loop_wait": 10}, "ttl"),  # loop_wait + 2*retry_timeout <= ttl is reported on ttl
    ({"ttl": "soon"}, "ttl"),
    ({"postgresql": {"parameters": {"max_connections": 10}}}, "postgresql.parameters.max_connections"),
    ({"maximum_lag_on_failover": -1}, "maximum_lag_on_failover"),
    ({"bogus_setting": 1}, "bogus_setting"),
    ({"postgresql": {"use_slots": "maybe"}}, "postgresql.use_slots"),
])
def test_invalid_patch_is_400_naming_the_field_and_writes_nothing(tmp_path: Path, patch: dict[str, Any],
                                                                   field: str) -> None:
    cluster = standard_cluster()
    before = cluster.raw()
    resp = client_of(tmp_path, cluster).patch("/config", json=patch)
    assert resp.status_code == 400
    body = resp.get_json()
    assert body["field"] == field, body
    assert "PATCH /config" in body["error"]
    assert cluster.raw() == before


@pytest.mark.parametrize(("data", "code"), [(None, 411), (b"nope", 400), (b"[]", 400), (b"{}", 400), (b"null", 400)])
def test_bad_bodies(tmp_path: Path, data: bytes | None, code: int) -> None:
    cluster = standard_cluster()
    before = cluster.raw()
    client = client_of(tmp_path, cluster)
    for method in ("PATCH", "PUT"):
        resp = client.open("/config", method=method, data=data, content_type="application/json")
        assert resp.status_code == code
        assert "error" in resp.get_json()
    assert cluster.raw() == before


def test_patch_without_a_config_key_is_503(tmp_path: Path) -> None:
    cluster = standard_cluster(config=None)
    resp = client_of(tmp_path, cluster).patch("/config", json={"pause": True})
    assert resp.status_code == 503
    assert CONFIG_KEY not in cluster.raw()


class _Racing:
    """A DCS where another writer changes the config key between our read and our CAS write."""

    def __init__(self, cluster: Cluster, fail_writes: bool = False) -> None:
        self.cluster = cluster
        self.dcs = cluster.api_dcs()
        self.fail_writes = fail_writes

    def read(self) -> Any:
        return self.dcs.read()

    def write_failover(self, *args: Any) -> bool:
        raise AssertionError("not used")

    def clear_failover(self, *args: Any) -> bool:
        raise AssertionError("not used")

    def write_config(self, config: dict[str, Any], expected_revision: int | None) -> bool:
        if self.fail_writes:
            raise DCSError("etcd: no leader")
        view = self.cluster.node("node2").read()
        assert self.cluster.node("node2").write_config({**(view.config or {}), "ttl": 6}, view.config_revision)
        return self.dcs.write_config(config, expected_revision)


def test_patch_cas_conflict_is_409(tmp_path: Path) -> None:
    cluster = standard_cluster()
    app, _ = make_app(tmp_path)
    app.config["API_CONTEXT"].dcs = _Racing(cluster)
    resp = app.test_client().patch("/config", json={"pause": True})
    assert resp.status_code == 409
    assert "pause" not in stored(cluster) and stored(cluster)["ttl"] == 6  # only the other writer's change


def test_put_replaces_the_whole_config(tmp_path: Path) -> None:
    cluster = standard_cluster()
    client = client_of(tmp_path, cluster)
    new = {"ttl": 30, "loop_wait": 10, "retry_timeout": 10, "postgresql": {"parameters": {"work_mem": "16MB"}}}
    resp = client.put("/config", json=new)
    assert (resp.status_code, resp.get_json()) == (200, new)
    assert stored(cluster) == new
    before = revision(cluster)
    assert client.put("/config", json=new).status_code == 200
    assert revision(cluster) == before  # unchanged: no write


def test_put_creates_a_missing_config_key(tmp_path: Path) -> None:
    cluster = standard_cluster(config=None)
    assert client_of(tmp_path, cluster).put("/config", json={"ttl": 10}).status_code == 200
    assert stored(cluster) == {"ttl": 10}


def test_invalid_put_writes_nothing(tmp_path: Path) -> None:
    cluster = standard_cluster()
    before = cluster.raw()
    resp = client_of(tmp_path, cluster).put("/config", json={"ttl": 5, "loop_wait": 5})
    assert resp.status_code == 400 and resp.get_json()["field"] == "ttl"
    assert cluster.raw() == before


def test_put_dcs_write_failure_is_502(tmp_path: Path) -> None:
    cluster = standard_cluster()
    app, _ = make_app(tmp_path)
    app.config["API_CONTEXT"].dcs = _Racing(cluster, fail_writes=True)
    assert app.test_client().put("/config", json={"ttl": 10}).status_code == 502
    assert stored(cluster) == CONFIG


