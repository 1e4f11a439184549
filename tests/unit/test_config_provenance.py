"""Provenance of every effective value, the flat table, and secrets kept out of errors and output."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import (
    REDACTED,
    ConfigError,
    build_local,
    flat_view,
    is_secret_key,
    load_local,
    provenance_rows,
    render_provenance,
    resolve,
)

SECRET = "Tr0ub4dor&3"


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("postgresql.authentication.superuser.password", True),
        ("restapi.authentication.password", True),
        ("etcd3.key", True),
        ("postgresql.parameters.ssl_key_file", True),
        ("restapi.keyfile_password", True),
        ("etcd.initial_cluster_token", True),
        ("vault.client_secret", True),
        ("postgresql.authentication.superuser.username", False),
        ("postgresql.parameters.work_mem", False),
        ("postgresql.parameters.max_locks_per_transaction", False),
        ("etcd3.hosts", False),
    ],
)
def test_secret_keys(key: str, secret: bool) -> None:
    assert is_secret_key(key) is secret


def test_every_effective_leaf_has_a_source(tmp_path: Path) -> None:
    path = tmp_path / "a.yml"
    path.write_text("scope: demo\npostgresql:\n  parameters:\n    work_mem: 8MB\n")
    eff = resolve(load_local(str(path), {"APPLIANCE_NAME": "n2"}), {"ttl": 30, "loop_wait": 10,
                                                                    "retry_timeout": 10})
    view = flat_view(eff.local, eff.dynamic, eff.postgresql_parameters)
    assert set(view) == set(eff.provenance)
    assert eff.provenance["scope"] == f"file {path}:1"
    assert eff.provenance["postgresql.parameters.work_mem"] == f"file {path}:4"
    assert eff.provenance["name"] == "env APPLIANCE_NAME"
    assert eff.provenance["ttl"] == "dcs config"
    assert eff.provenance["synchronous_mode"] == "default"
    assert eff.provenance["haproxy.primary_port"] == "default"
    assert eff.provenance["postgresql.parameters.port"].endswith("(postgresql.listen)")


def test_table_redacts_secrets(tmp_path: Path) -> None:
    secret_file = tmp_path / "pw"
    secret_file.write_text(SECRET + "\n")
    env = {"POSTGRES_PASSWORD_FILE": str(secret_file), "APPLIANCE_REPLICATION_PASSWORD": SECRET,
           "APPLIANCE_ETCD3__PASSWORD": SECRET}
    eff = resolve(load_local(None, env), None)
    rows = {key: (value, source) for key, value, source in provenance_rows(eff)}
    assert rows["postgresql.authentication.superuser.password"] == (
        REDACTED, f"env POSTGRES_PASSWORD_FILE ({secret_file})")
    assert rows["postgresql.authentication.replication.password"][0] == REDACTED
    assert rows["etcd3.password"][0] == REDACTED
    assert rows["restapi.authentication"] == ("null", "default")
    text = render_provenance(eff)
    assert SECRET not in text
    assert text.splitlines()[0].split() == ["KEY", "VALUE", "SOURCE"]
    assert any(line.startswith("postgresql.parameters.wal_level ") and line.rstrip().endswith("default")
               for line in text.splitlines())


def test_errors_never_echo_secrets(tmp_path: Path) -> None:
    path = tmp_path / "a.yml"
    path.write_text(f"restapi:\n  authentication:\n    password: ['{SECRET}']\n")
    with pytest.raises(ConfigError) as err:
        build_local(load_local(str(path), {}))
    assert "restapi.authentication.password" in {p.key for p in err.value.problems}
    assert SECRET not in str(err.value)
    env = {"APPLIANCE_ETCD3__PASSWORD": SECRET, "APPLIANCE_ETCD3": f'{{"password": "{SECRET}", "hots": 1}}'}
    with pytest.raises(ConfigError) as err:
        load_local(None, env)
    assert SECRET not in str(err.value)


def test_non_secret_bad_values_are_shown() -> None:
    with pytest.raises(ConfigError) as err:
        build_local(load_local(None, {"APPLIANCE_HAPROXY__STATS_PORT": "seven"}))
    assert "(got 'seven')" in str(err.value)


def test_not_applied_secrets_are_redacted() -> None:
    # No secret is cluster-wide today; the redaction still guards a dynamic extra named like one.
    layers = load_local(None, {})
    eff = resolve(layers, {"standby_cluster": {"password": SECRET}})
    assert SECRET not in render_provenance(eff)
