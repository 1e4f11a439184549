"""Layer precedence, YAML files and directories, and errors naming key, layer and line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from appliance.config import ConfigError, build_local, load_local, resolve

DCS = {"ttl": 30, "loop_wait": 10, "retry_timeout": 10, "postgresql": {"parameters": {"work_mem": "4MB"}}}


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


# (layers present, expected work_mem, expected source prefix)
WORK_MEM_CASES = [
    ({"dcs", "file", "env"}, "16MB", "env APPLIANCE_POSTGRESQL__PARAMETERS__WORK_MEM"),
    ({"dcs", "file"}, "8MB", "file "),
    ({"dcs"}, "4MB", "dcs config"),
    ({"file", "env"}, "16MB", "env APPLIANCE_POSTGRESQL__PARAMETERS__WORK_MEM"),
    (set(), None, None),
]


@pytest.mark.parametrize(("present", "expected", "source"), WORK_MEM_CASES)
def test_parameter_precedence(tmp_path: Path, present: set[str], expected: str | None, source: str | None) -> None:
    path = write(tmp_path / "a.yml", "postgresql:\n  parameters:\n    work_mem: 8MB\n") if "file" in present else None
    env = {"APPLIANCE_POSTGRESQL__PARAMETERS__WORK_MEM": "16MB"} if "env" in present else {}
    eff = resolve(load_local(path, env), DCS if "dcs" in present else None)
    assert eff.postgresql_parameters.get("work_mem") == expected
    if source is not None:
        assert eff.provenance["postgresql.parameters.work_mem"].startswith(source)
    else:
        assert "postgresql.parameters.work_mem" not in eff.provenance


# A local key: default < file < env; the DCS has no say.
LISTEN_CASES = [
    ({"file", "env"}, "10.0.0.3:8008", "env APPLIANCE_RESTAPI__LISTEN"),
    ({"file"}, "10.0.0.2:8008", "file "),
    (set(), "0.0.0.0:8008", "default"),
]


@pytest.mark.parametrize(("present", "expected", "source"), LISTEN_CASES)
def test_local_key_precedence(tmp_path: Path, present: set[str], expected: str, source: str) -> None:
    path = write(tmp_path / "a.yml", "restapi:\n  listen: 10.0.0.2:8008\n") if "file" in present else None
    env = {"APPLIANCE_RESTAPI__LISTEN": "10.0.0.3:8008"} if "env" in present else {}
    eff = resolve(load_local(path, env), DCS)
    assert eff.local.restapi.listen == expected
    assert eff.provenance["restapi.listen"].startswith(source)


# A dynamic-only key: the DCS wins; without a DCS config, env > file > bootstrap.dcs > default.
TTL_CASES: list[tuple[set[str], int, str]] = [
    ({"dcs", "bootstrap", "file", "env"}, 30, "dcs config"),
    ({"bootstrap", "file", "env"}, 50, "env APPLIANCE_TTL"),
    ({"bootstrap", "file"}, 40, "file "),
    ({"bootstrap"}, 35, "file "),
    (set(), 5, "default"),
]


@pytest.mark.parametrize(("present", "expected", "source"), TTL_CASES)
def test_dynamic_key_precedence(tmp_path: Path, present: set[str], expected: int, source: str) -> None:
    text = "bootstrap:\n  dcs:\n    ttl: 35\n    loop_wait: 5\n    retry_timeout: 5\n" if "bootstrap" in present else ""
    text += "ttl: 40\n" if "file" in present else ""
    env = {"APPLIANCE_TTL": "50"} if "env" in present else {}
    eff = resolve(load_local(write(tmp_path / "a.yml", text), env), DCS if "dcs" in present else None)
    assert eff.dynamic.ttl == expected
    assert eff.provenance["ttl"].startswith(source)


def test_directory_merged_in_name_order(tmp_path: Path) -> None:
    conf = tmp_path / "conf.d"
    conf.mkdir()
    write(conf / "20-b.yaml", "name: from-b\nrestapi:\n  listen: 10.0.0.2:8008\n")
    write(conf / "10-a.yml", "name: from-a\nscope: alpha\n")
    write(conf / "30-c.yml", "name: from-c\n")
    write(conf / "notes.txt", "name: ignored\n")
    layers = load_local(str(conf), {})
    config = build_local(layers)
    assert (config.name, config.scope, config.restapi.listen) == ("from-c", "alpha", "10.0.0.2:8008")
    assert layers.provenance["name"] == f"file {conf / '30-c.yml'}:1"
    assert layers.provenance["scope"] == f"file {conf / '10-a.yml'}:2"
    assert [Path(f).name for f in layers.files] == ["10-a.yml", "20-b.yaml", "30-c.yml"]


def test_several_paths_later_wins_and_lists_replace(tmp_path: Path) -> None:
    first = write(tmp_path / "a.yml", "etcd3:\n  hosts: [a:2379, b:2379]\n  protocol: https\n")
    second = write(tmp_path / "b.yml", "etcd3:\n  hosts: [c:2379]\n")
    config = build_local(load_local([first, second], {}))
    assert config.etcd3.hosts == ["c:2379"]
    assert config.etcd3.protocol == "https"


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.yml", "scope: x\nrestapi:\n  listen: 0.0.0.0:8008\n   connect_address: y\n")
    with pytest.raises(ConfigError) as err:
        load_local(path, {})
    assert f"file {path}:4" in str(err.value)
    assert "YAML syntax error" in str(err.value)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path / "list.yml", "- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_local(path, {})


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file or directory"):
        load_local(str(tmp_path / "nope.yml"), {})


def test_empty_file_and_no_file_give_defaults(tmp_path: Path) -> None:
    assert build_local(load_local(write(tmp_path / "e.yml", ""), {})) == build_local(load_local(None, {}))


def test_unknown_key_names_key_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "a.yml", "scope: x\npostgresql:\n  listen: 0.0.0.0:5432\n  data_dri: /x\n")
    with pytest.raises(ConfigError) as err:
        load_local(path, {})
    (problem,) = err.value.problems
    assert problem.key == "postgresql.data_dri"
    assert problem.source == f"file {path}:4"
    assert "unknown key" in problem.reason


def test_unknown_env_key_is_an_error() -> None:
    with pytest.raises(ConfigError) as err:
        load_local(None, {"APPLIANCE_RESTAPI__LISTN": "x"})
    assert err.value.problems[0].key == "restapi.listn"
    assert err.value.problems[0].source == "env APPLIANCE_RESTAPI__LISTN"


BAD_VALUES: list[tuple[str, dict[str, Any], str]] = [
    ("haproxy:\n  primary_port: five\n", {}, "haproxy.primary_port"),
    ("etcd3:\n  protocol: ftp\n", {}, "etcd3.protocol"),
    ("postgresql:\n  listen: localhost\n", {}, "postgresql.listen"),
    ("", {"APPLIANCE_APPLIANCE__LOG_LEVEL": "LOUD"}, "appliance.log_level"),
]


@pytest.mark.parametrize(("text", "env", "key"), BAD_VALUES)
def test_bad_value_names_key_layer_and_reason(tmp_path: Path, text: str, env: dict[str, str], key: str) -> None:
    path = write(tmp_path / "a.yml", text)
    with pytest.raises(ConfigError) as err:
        build_local(load_local(path, env))
    (problem,) = err.value.problems
    assert problem.key == key
    assert problem.source == (f"env {next(iter(env))}" if env else f"file {path}:2")
    assert problem.reason


def test_several_problems_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path / "a.yml", "haproxy:\n  primary_port: x\n  stats_port: y\n")
    with pytest.raises(ConfigError) as err:
        build_local(load_local(path, {}))
    assert {p.key for p in err.value.problems} == {"haproxy.primary_port", "haproxy.stats_port"}
    assert "2 problems" in str(err.value)


def test_local_null_unsets_a_dynamic_parameter_and_names_are_case_insensitive(tmp_path: Path) -> None:
    path = write(tmp_path / "a.yml", "postgresql:\n  parameters:\n    WORK_MEM: null\n    Shared_Buffers: 1GB\n")
    eff = resolve(load_local(path, {}), DCS)
    assert "work_mem" not in eff.postgresql_parameters
    assert eff.postgresql_parameters["shared_buffers"] == "1GB"
    assert eff.provenance["postgresql.parameters.shared_buffers"] == f"file {path}:4"
