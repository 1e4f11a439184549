"""Any PATCH/PUT /config body is either refused with a 4xx naming a field (nothing written) or leaves a
config a pure checker accepts: timings within bounds and the timing rule, strictly typed, parameters
and pg_hba lines this PostgreSQL (here: its stand-in) takes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.config.schema import DynamicConfig, LocalConfig
from appliance.postgres import hba
from appliance.postgres.confsyntax import normalize_name
from appliance.postgres.validate import check_dynamic
from tests.unit.api_fakes import Cluster, make_app, standard_cluster
from tests.unit.pg_fakes import fake_checks

CONFIG_KEY = "/service/demo/config"
REFUSED_VALUES = {"work_mem": "banana"}  # what the stand-in PostgreSQL rejects
LOCAL = LocalConfig.model_validate({"security": {"postgresql_tls": False}})

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
timing_keys = st.sampled_from(["ttl", "loop_wait", "retry_timeout", "maximum_lag_on_failover", "pause",
                               "synchronous_mode", "synchronous_node_count", "primary_start_timeout",
                               "max_timelines_history", "failsafe_mode", "maximum_lag_on_syncnode"])
param_names = st.one_of(st.sampled_from(["work_mem", "shared_buffers", "archive_command", "primary_conninfo",
                                         "wal_level", "max_connections", "Work_Mem", "a.b"]),
                        st.text(min_size=1, max_size=12))
hba_lines = st.one_of(st.sampled_from(["hostssl all all all scram-sha-256", "host all all all trust",
                                       "local all all peer", "hostssl all all all bogus"]), st.text(max_size=30))
bodies = st.fixed_dictionaries({}, optional={
    "top": st.dictionaries(timing_keys, scalars, max_size=4),
    "params": st.dictionaries(param_names, scalars, max_size=3),
    "hba": st.one_of(st.none(), st.lists(hba_lines, max_size=3), scalars),
})


def _body(drawn: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = dict(drawn.get("top", {}))
    postgresql: dict[str, Any] = {}
    if "params" in drawn:
        postgresql["parameters"] = drawn["params"]
    if "hba" in drawn:
        postgresql["pg_hba"] = drawn["hba"]
    if postgresql:
        body["postgresql"] = postgresql
    return body or {"pause": None}


def acceptable(doc: dict[str, Any]) -> list[str]:
    """The pure checker: what is wrong with a stored dynamic config (empty: nothing)."""
    wrong = []
    try:
        cfg = DynamicConfig.model_validate(doc)
    except ValueError as exc:
        return [f"schema: {exc}"]
    if cfg.loop_wait + 2 * cfg.retry_timeout > cfg.ttl:
        wrong.append("timing rule")
    for key in ("ttl", "loop_wait", "retry_timeout", "pause", "synchronous_mode"):
        if key in doc and isinstance(doc[key], str):
            wrong.append(f"{key} stored as a string")
    for name, value in (doc.get("postgresql", {}).get("parameters") or {}).items():
        lower = normalize_name(name)
        if lower is None or (REFUSED_VALUES.get(lower) == value):
            wrong.append(f"parameter {name!r}={value!r}")
    lines = doc.get("postgresql", {}).get("pg_hba")
    if lines is not None and (not isinstance(lines, list) or hba.problems(lines, ssl=False)):
        wrong.append(f"pg_hba {lines!r}")
    return wrong


def _client(tmp_path: Path, cluster: Cluster) -> Any:
    checks = fake_checks(reject=REFUSED_VALUES)
    app, _ = make_app(tmp_path, cluster, check_config=lambda doc, source: check_dynamic(doc, LOCAL, source, checks))
    return app.test_client()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drawn=bodies, put=st.booleans())
def test_any_config_body_is_refused_naming_a_field_or_leaves_a_valid_config(tmp_path: Path, drawn: dict[str, Any],
                                                                           put: bool) -> None:
    cluster = standard_cluster()
    before = cluster.raw()[CONFIG_KEY]
    client = _client(tmp_path, cluster)
    body = _body(drawn)
    if put:
        body = {**json.loads(before), **body}
        resp = client.put("/config", json=body)
    else:
        resp = client.patch("/config", json=body)
    stored = json.loads(cluster.raw()[CONFIG_KEY])
    if resp.status_code >= 400:
        doc = resp.get_json()
        assert 400 <= resp.status_code < 500, doc
        assert isinstance(doc.get("error"), str) and isinstance(doc.get("field"), str) and doc["field"], doc
        assert cluster.raw()[CONFIG_KEY] == before  # nothing written
    else:
        assert resp.status_code == 200
        assert acceptable(stored) == [], (body, stored)
