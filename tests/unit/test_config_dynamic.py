"""Dynamic layer: dynamic-only keys, bootstrap seed, timing rule, minimums, last-good fallback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from appliance.config import (
    ConfigError,
    bootstrap_dynamic,
    build_local,
    load_local,
    resolve,
    resolve_or_last_good,
    validate_dynamic,
)
from appliance.config.effective import BOOTSTRAP_REASON, CLUSTER_WIDE_REASON, LISTEN_REASON

DCS: dict[str, Any] = {
    "ttl": 30, "loop_wait": 10, "retry_timeout": 10,
    "postgresql": {"parameters": {"max_connections": 300, "work_mem": "4MB"}, "use_slots": True},
}


def local_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "local.yml"
    path.write_text(text)
    return str(path)


LOCAL_DYNAMIC = """\
ttl: 40
maximum_lag_on_failover: 0
synchronous_mode: true
postgresql:
  use_slots: false
  parameters:
    max_connections: 500
    wal_level: logical
    work_mem: 64MB
"""


def test_dynamic_only_keys_are_not_applied_and_reported(tmp_path: Path) -> None:
    layers = load_local(local_file(tmp_path, LOCAL_DYNAMIC), {"APPLIANCE_LOOP_WAIT": "5"})
    assert "ttl" not in build_local(layers).model_dump()
    eff = resolve(layers, DCS)
    assert (eff.dynamic.ttl, eff.dynamic.loop_wait, eff.dynamic.synchronous_mode) == (30, 10, False)
    assert eff.dynamic.postgresql.use_slots is True
    assert eff.postgresql_parameters["max_connections"] == 300
    assert eff.postgresql_parameters["wal_level"] == "replica"
    assert eff.postgresql_parameters["work_mem"] == "64MB"  # not cluster-wide: local wins
    reported = {n.key: n for n in eff.not_applied}
    assert set(reported) == {"ttl", "loop_wait", "maximum_lag_on_failover", "synchronous_mode",
                             "postgresql.use_slots", "postgresql.parameters.max_connections",
                             "postgresql.parameters.wal_level"}
    ttl = reported["ttl"]
    assert (ttl.value, ttl.in_use, ttl.reason) == (40, 30, CLUSTER_WIDE_REASON)
    assert ttl.source == f"file {tmp_path / 'local.yml'}:1"
    assert reported["loop_wait"].source == "env APPLIANCE_LOOP_WAIT"
    assert "edit-config" in str(reported["postgresql.parameters.max_connections"])


def test_equal_values_are_not_reported(tmp_path: Path) -> None:
    path = local_file(tmp_path, "ttl: 30\npostgresql:\n  parameters:\n    max_connections: '300'\n"
                                "    wal_log_hints: true\n")
    assert resolve(load_local(path, {}), DCS).not_applied == ()


def test_dynamic_only_keys_seed_bootstrap(tmp_path: Path) -> None:
    text = "bootstrap:\n  dcs:\n    ttl: 20\n    loop_wait: 2\n    synchronous_mode: false\n" + LOCAL_DYNAMIC
    layers = load_local(local_file(tmp_path, text), {"APPLIANCE_RETRY_TIMEOUT": "3"})
    doc = bootstrap_dynamic(layers)
    assert (doc["ttl"], doc["loop_wait"], doc["retry_timeout"]) == (40, 2, 3)
    assert doc["synchronous_mode"] is True and doc["maximum_lag_on_failover"] == 0
    assert doc["postgresql"]["use_slots"] is False
    assert doc["postgresql"]["parameters"]["max_connections"] == 500
    assert doc["postgresql"]["parameters"]["max_worker_processes"] == 8
    assert "work_mem" not in doc["postgresql"]["parameters"]
    # Before the DCS has a config, the node runs with the seed and nothing is "not applied".
    eff = resolve(layers, None)
    assert eff.dynamic.ttl == 40 and eff.not_applied == ()
    assert eff.provenance["ttl"].startswith("file ")
    assert eff.provenance["loop_wait"].endswith("(bootstrap.dcs.loop_wait)")


def test_bootstrap_dcs_differences_are_reported(tmp_path: Path) -> None:
    path = local_file(tmp_path, "bootstrap:\n  dcs:\n    ttl: 60\n    loop_wait: 10\n    retry_timeout: 10\n")
    reported = {n.key: n for n in resolve(load_local(path, {}), DCS).not_applied}
    assert set(reported) == {"bootstrap.dcs.ttl"}
    assert reported["bootstrap.dcs.ttl"].reason == BOOTSTRAP_REASON


def test_listen_sets_port_and_reports_a_conflicting_parameter(tmp_path: Path) -> None:
    path = local_file(tmp_path, "postgresql:\n  listen: 10.0.0.1,127.0.0.1:5433\n  parameters:\n    port: 5432\n")
    eff = resolve(load_local(path, {}), DCS)
    assert eff.postgresql_parameters["listen_addresses"] == "10.0.0.1,127.0.0.1"
    assert eff.postgresql_parameters["port"] == 5433
    (note,) = eff.not_applied
    assert (note.key, note.value, note.in_use, note.reason) == ("postgresql.parameters.port", 5432, 5433,
                                                                LISTEN_REASON)


@pytest.mark.parametrize(
    ("env", "terms"),
    [
        ({"APPLIANCE_TTL": "4"}, "(got 1 + 2*2 > 4)"),
        ({"APPLIANCE_LOOP_WAIT": "10"}, "(got 10 + 2*2 > 5)"),
    ],
)
def test_timing_rule_names_ttl_and_the_sources(env: dict[str, str], terms: str) -> None:
    with pytest.raises(ConfigError) as err:
        bootstrap_dynamic(load_local(None, env))
    (problem,) = err.value.problems
    assert problem.key == "ttl"
    assert "loop_wait + 2*retry_timeout must be <= ttl" in problem.reason and terms in problem.reason
    assert "loop_wait from" in problem.reason


def test_timing_rule_in_bootstrap_dcs_fails_build_local_with_file_line(tmp_path: Path) -> None:
    path = local_file(tmp_path, "bootstrap:\n  dcs:\n    ttl: 10\n    loop_wait: 10\n")
    with pytest.raises(ConfigError) as err:
        build_local(load_local(path, {}))
    (problem,) = err.value.problems
    assert problem.key == "bootstrap.dcs.ttl"
    assert problem.source == f"file {path}:3"


def test_validate_dynamic_rejects_with_the_key() -> None:
    with pytest.raises(ConfigError) as err:
        validate_dynamic({"ttl": 5, "loop_wait": 2, "retry_timeout": 2,
                          "postgresql": {"parameters": {"max_connections": 10}}})
    problems = {p.key: p for p in err.value.problems}
    assert set(problems) == {"ttl", "postgresql.parameters.max_connections"}
    assert all(p.source == "dcs config" for p in problems.values())
    assert "at least 25" in problems["postgresql.parameters.max_connections"].reason
    with pytest.raises(ConfigError) as err:
        validate_dynamic({"synchronous_mode": "maybe"}, source="PATCH /config")
    assert str(err.value.problems[0]).startswith("synchronous_mode (PATCH /config): must be true, false or \"quorum\"")


def test_validate_dynamic_accepts_and_fills_defaults() -> None:
    config = validate_dynamic({"ttl": 30, "loop_wait": 10, "retry_timeout": 10, "standby_cluster": None,
                               "postgresql": {"parameters": {"work_mem": "8MB"}, "recovery_conf": {}}})
    assert config.postgresql.parameters["work_mem"] == "8MB"
    assert config.postgresql.parameters["wal_level"] == "replica"


def test_validate_dynamic_rejects_unknown_keys() -> None:
    with pytest.raises(ConfigError, match="tll"):
        validate_dynamic({"tll": 30})


def test_minimums_are_raised_with_a_warning_in_the_effective_view() -> None:
    dcs = {"postgresql": {"parameters": {"max_connections": "10", "max_locks_per_transaction": 16,
                                         "max_worker_processes": 1}}}
    eff = resolve(load_local(None, {}), dcs)
    params = eff.postgresql_parameters
    assert (params["max_connections"], params["max_locks_per_transaction"], params["max_worker_processes"]) \
        == (25, 32, 2)
    assert sum("below the minimum" in w for w in eff.warnings) == 3
    assert "raised to the minimum 25" in eff.provenance["postgresql.parameters.max_connections"]


def test_dcs_parameters_merge_with_cluster_wide_defaults() -> None:
    eff = resolve(load_local(None, {}), {"postgresql": {"parameters": {"max_connections": 50}}})
    assert eff.postgresql_parameters["max_connections"] == 50
    assert eff.postgresql_parameters["wal_log_hints"] == "on"
    assert eff.provenance["postgresql.parameters.wal_log_hints"] == "default"
    assert eff.provenance["postgresql.parameters.max_connections"] == "dcs config"


def test_dcs_unknown_and_local_only_keys_warn() -> None:
    dcs = {"standby_cluster": {"host": "x"}, "custom": 1, "postgresql": {"data_dir": "/x", "bogus": 1}}
    eff = resolve(load_local(None, {}), dcs)
    joined = "\n".join(eff.warnings)
    for key in ("standby_cluster", "custom", "postgresql.data_dir", "postgresql.bogus"):
        assert f"{key} (dcs config)" in joined


def test_bad_dcs_config_raises_from_resolve() -> None:
    with pytest.raises(ConfigError) as err:
        resolve(load_local(None, {}), {"ttl": 3})
    assert err.value.problems[0].source.startswith("dcs config")


def test_bad_dcs_config_falls_back_to_the_last_good_one() -> None:
    layers = load_local(None, {})
    good = {"ttl": 30, "loop_wait": 10, "retry_timeout": 10}
    eff, error = resolve_or_last_good(layers, good, None)
    assert error is None and eff.dynamic.ttl == 30
    eff, error = resolve_or_last_good(layers, {"ttl": "soon"}, good)
    assert error is not None and error.problems[0].key == "ttl"
    assert eff.dynamic.ttl == 30
    assert eff.provenance["ttl"] == "dcs config (last good)"
    assert eff.warnings[0].startswith("DCS config rejected")


def test_bad_dcs_config_without_a_last_good_uses_the_seed() -> None:
    eff, error = resolve_or_last_good(load_local(None, {"APPLIANCE_TTL": "9"}), {"ttl": 1}, None)
    assert error is not None
    assert eff.dynamic.ttl == 9


def test_bad_local_config_still_raises_from_the_fallback() -> None:
    layers = load_local(None, {"APPLIANCE_HAPROXY__STATS_PORT": "x"})
    with pytest.raises(ConfigError, match=r"haproxy\.stats_port"):
        resolve_or_last_good(layers, {"ttl": 1}, None)
