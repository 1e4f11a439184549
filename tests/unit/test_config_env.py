"""Environment layer: APPLIANCE_ nesting and JSON values, POSTGRES_* and *_FILE secrets."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from appliance.config import ConfigError, build_local, load_local, resolve
from appliance.config.envvars import parse_env_value


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("64MB", "64MB"),
        ("30", 30),
        ("true", True),
        ("null", None),
        ('["a:2379","b:2379"]', ["a:2379", "b:2379"]),
        ('{"username": "u"}', {"username": "u"}),
        ("", ""),
        ("not json {", "not json {"),
    ],
)
def test_values_are_json_when_they_parse(raw: str, expected: Any) -> None:
    assert parse_env_value(raw) == expected


def test_nesting_and_lower_cased_keys() -> None:
    env = {
        "APPLIANCE_POSTGRESQL__PARAMETERS__WORK_MEM": "64MB",
        "APPLIANCE_ETCD3__HOSTS": '["a:2379","b:2379"]',
        "APPLIANCE_TAGS__NOFAILOVER": "true",
        "APPLIANCE_HAPROXY__PRIMARY_PORT": "6000",
        "APPLIANCE_SCOPE": "batman",
    }
    layers = load_local(None, env)
    config = build_local(layers)
    assert config.postgresql.parameters == {"work_mem": "64MB"}
    assert config.etcd3.hosts == ["a:2379", "b:2379"]
    assert config.tags == {"nofailover": True}
    assert config.haproxy.primary_port == 6000
    assert config.scope == "batman"
    assert layers.provenance["etcd3.hosts"] == "env APPLIANCE_ETCD3__HOSTS"


def test_string_fields_keep_the_raw_string() -> None:
    env = {"APPLIANCE_NAME": "123", "APPLIANCE_RESTAPI__AUTHENTICATION__USERNAME": "true",
           "APPLIANCE_RESTAPI__AUTHENTICATION__PASSWORD": "0042"}
    config = build_local(load_local(None, env))
    assert config.name == "123"
    assert config.restapi.authentication is not None
    assert config.restapi.authentication.username == "true"
    assert config.restapi.authentication.password == "0042"


def test_comma_separated_hosts_like_patroni() -> None:
    config = build_local(load_local(None, {"APPLIANCE_ETCD3__HOSTS": "a:2379, b:2379"}))
    assert config.etcd3.hosts == ["a:2379", "b:2379"]


def test_json_object_refined_by_a_deeper_variable() -> None:
    env = {"APPLIANCE_RESTAPI": '{"listen": "1.1.1.1:8008", "connect_address": "n1:8008"}',
           "APPLIANCE_RESTAPI__LISTEN": "2.2.2.2:8008"}
    layers = load_local(None, env)
    config = build_local(layers)
    assert (config.restapi.listen, config.restapi.connect_address) == ("2.2.2.2:8008", "n1:8008")
    assert layers.provenance["restapi.connect_address"] == "env APPLIANCE_RESTAPI"
    assert layers.provenance["restapi.listen"] == "env APPLIANCE_RESTAPI__LISTEN"


def test_env_overrides_file(tmp_path: Path) -> None:
    path = tmp_path / "a.yml"
    path.write_text("scope: from-file\nname: n1\n")
    config = build_local(load_local(str(path), {"APPLIANCE_SCOPE": "from-env"}))
    assert (config.scope, config.name) == ("from-env", "n1")


def test_non_config_and_foreign_variables_are_skipped() -> None:
    env = {"APPLIANCE_CONFIG": "/etc/pgappliance", "APPLIANCE_DEMO_DIR": "/var/tmp/demo", "PATH": "/usr/bin",
           "POSTGRES_DB": "app"}
    assert load_local(None, env).data == {}


def test_empty_segment_is_an_error() -> None:
    with pytest.raises(ConfigError, match="empty key segment"):
        load_local(None, {"APPLIANCE_POSTGRESQL____LISTEN": "x"})


# ---- the official postgres image's variables and *_FILE twins (docker-library semantics)

SUPERUSER = "postgresql.authentication.superuser"


def secret_file(tmp_path: Path, name: str, content: str) -> str:
    path = tmp_path / name
    path.write_text(content)
    return str(path)


def test_postgres_user_and_password() -> None:
    layers = load_local(None, {"POSTGRES_USER": "admin", "POSTGRES_PASSWORD": "123"})
    superuser = build_local(layers).postgresql.authentication.superuser
    assert (superuser.username, superuser.password) == ("admin", "123")
    assert layers.provenance[f"{SUPERUSER}.password"] == "env POSTGRES_PASSWORD"


@pytest.mark.parametrize(
    ("var", "key"),
    [
        ("POSTGRES_PASSWORD", "postgresql.authentication.superuser.password"),
        ("POSTGRES_USER", "postgresql.authentication.superuser.username"),
        ("APPLIANCE_REPLICATION_PASSWORD", "postgresql.authentication.replication.password"),
        ("APPLIANCE_RESTAPI__AUTHENTICATION__PASSWORD", "restapi.authentication.password"),
        ("APPLIANCE_ETCD3__PASSWORD", "etcd3.password"),
    ],
)
def test_file_twin_is_read_and_trailing_newline_dropped(tmp_path: Path, var: str, key: str) -> None:
    path = secret_file(tmp_path, "secret", "s3cr3t value\n")
    env = {f"{var}_FILE": path}
    if var.startswith("APPLIANCE_RESTAPI"):
        env["APPLIANCE_RESTAPI__AUTHENTICATION__USERNAME"] = "admin"
    layers = load_local(None, env)
    config = build_local(layers).model_dump()
    value: Any = config
    for part in key.split("."):
        value = value[part]
    assert value == "s3cr3t value"
    assert layers.provenance[key] == f"env {var}_FILE ({path})"


@pytest.mark.parametrize("var", ["POSTGRES_PASSWORD", "POSTGRES_USER", "APPLIANCE_REPLICATION_PASSWORD",
                                 "APPLIANCE_ETCD3__PASSWORD"])
def test_both_var_and_file_is_an_error(tmp_path: Path, var: str) -> None:
    env = {var: "plain-secret", f"{var}_FILE": secret_file(tmp_path, "s", "file-secret")}
    with pytest.raises(ConfigError) as err:
        load_local(None, env)
    message = str(err.value)
    assert f"both {var} and {var}_FILE are set (but are exclusive)" in message
    assert "plain-secret" not in message and "file-secret" not in message


def test_unreadable_file_is_an_error_naming_the_variable(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing")
    with pytest.raises(ConfigError) as err:
        load_local(None, {"APPLIANCE_REPLICATION_PASSWORD_FILE": missing})
    (problem,) = err.value.problems
    assert problem.key == "postgresql.authentication.replication.password"
    assert problem.source == "env APPLIANCE_REPLICATION_PASSWORD_FILE"
    assert missing in problem.reason


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_permission_denied_file(tmp_path: Path) -> None:
    path = secret_file(tmp_path, "s", "x")
    os.chmod(path, 0)
    with pytest.raises(ConfigError, match="cannot read"):
        load_local(None, {"POSTGRES_PASSWORD_FILE": path})


def test_directory_as_secret_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_local(None, {"POSTGRES_PASSWORD_FILE": str(tmp_path)})


def test_empty_variable_counts_as_unset(tmp_path: Path) -> None:
    env = {"POSTGRES_PASSWORD": "", "POSTGRES_PASSWORD_FILE": secret_file(tmp_path, "s", "from-file")}
    assert build_local(load_local(None, env)).postgresql.authentication.superuser.password == "from-file"


def test_alias_and_generic_variable_for_the_same_key_conflict() -> None:
    env = {"POSTGRES_PASSWORD": "a", "APPLIANCE_POSTGRESQL__AUTHENTICATION__SUPERUSER__PASSWORD": "b"}
    with pytest.raises(ConfigError, match="set it in one variable only"):
        load_local(None, env)


def test_parameter_ending_in_file_is_not_a_twin() -> None:
    env = {"APPLIANCE_POSTGRESQL__PARAMETERS__SSL_CERT_FILE": "/etc/ssl/server.crt"}
    eff = resolve(load_local(None, env), None)
    assert eff.postgresql_parameters["ssl_cert_file"] == "/etc/ssl/server.crt"


@pytest.mark.parametrize(("raw", "expected"), [("true", True), ("false", False), ("quorum", "quorum")])
def test_synchronous_mode_from_the_env_is_a_boolean_or_the_word_quorum(raw: str, expected: object) -> None:
    """compose.yaml's APPLIANCE_BOOTSTRAP__DCS__SYNCHRONOUS_MODE: "true" was kept as the string
    'true' once the field also took "quorum", and every container refused to start (e2e)."""
    env = {"APPLIANCE_BOOTSTRAP__DCS__SYNCHRONOUS_MODE": raw}
    effective = resolve(load_local(None, env), None)
    assert effective.dynamic.synchronous_mode == expected


def test_synchronous_mode_from_the_env_refuses_other_words() -> None:
    with pytest.raises(ConfigError, match="synchronous_mode"):
        resolve(load_local(None, {"APPLIANCE_BOOTSTRAP__DCS__SYNCHRONOUS_MODE": "on"}), None)
