"""The demo's layout, generated node configs, secrets, health judgement and CLI wiring (no processes)."""

from __future__ import annotations

import configparser
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from appliance.cli.main import cli
from appliance.config.schema import LocalConfig
from appliance.demo.cluster import DemoCluster, DemoError, node_environment
from appliance.demo.layout import (
    DemoLayout,
    Secrets,
    check_net,
    check_reachable,
    load_layout,
    load_or_create_secrets,
    node_config,
    save_layout,
    write_node_files,
    write_proxy_files,
)
from appliance.demo.status import (
    _fill_lag,
    health_problems,
    patroni_problems,
    routing_from_csv,
    routing_problems,
)

CREDS = Secrets("su-pass", "repl-pass", "api-pass", "etcd-pass", "etcd-root-pass")


@pytest.fixture
def creds(tmp_path: Path) -> Secrets:
    """Real generated secrets (the node files issue a certificate from their CA)."""
    return load_or_create_secrets(tmp_path / "secrets")


def _layout(tmp_path: Path, **kw: Any) -> DemoLayout:
    return DemoLayout(dir=tmp_path, net="127.0.9", token="demo-tok", **kw)


def test_check_net() -> None:
    assert check_net("127.0.2") == "127.0.2"
    for bad in ("10.0.0", "127.0", "127.0.2.1", "127.x.2", "127.0.256"):
        with pytest.raises(ValueError, match=r"127\.A\.B"):
            check_net(bad)


def test_node_config_uses_the_node_address_and_standard_ports(tmp_path: Path) -> None:
    layout = _layout(tmp_path)
    config = LocalConfig.model_validate(node_config(layout, "node2", CREDS))
    assert config.scope == "demo" and config.name == "node2"
    assert config.postgresql.listen == "127.0.9.2:5432"
    assert config.postgresql.data_dir == str(tmp_path / "node2" / "pgdata")
    assert config.postgresql.authentication.superuser.password == "su-pass"
    assert config.postgresql.authentication.replication.password == "repl-pass"
    assert config.restapi.listen == "127.0.9.2:8008"
    assert config.etcd3.hosts == ["127.0.9.1:2379", "127.0.9.2:2379", "127.0.9.3:2379"]
    assert config.etcd.data_dir == str(tmp_path / "node2" / "etcd")
    assert config.etcd.advertise_peer == "127.0.9.2:2380"
    assert config.etcd.initial_cluster.split(",")[1] == "node2=https://127.0.9.2:2380"
    assert config.etcd.initial_cluster_token == "demo-tok"
    assert config.appliance.run_dir == str(tmp_path / "node2" / "run")
    assert config.haproxy.enabled is False
    # Secure by default: every credential and the node's TLS files.
    assert config.restapi.authentication is not None and config.restapi.authentication.password == "api-pass"
    assert (config.etcd3.username, config.etcd3.password) == ("appliance", "etcd-pass")
    assert config.etcd.root_password == "etcd-root-pass"
    assert config.tls.cert_file == str(tmp_path / "node2" / "tls" / "node.crt")
    assert config.security.restapi_tls and config.security.etcd_auth


def test_client_config_is_a_patronictl_config(tmp_path: Path, creds: Secrets) -> None:
    from appliance.demo.layout import client_tls, write_client_files

    layout = _layout(tmp_path)
    write_client_files(layout, creds)
    doc = yaml.safe_load(layout.client_config_path.read_text())
    assert stat.S_IMODE(layout.client_config_path.stat().st_mode) == 0o600
    assert doc["etcd3"]["protocol"] == "https" and doc["etcd3"]["username"] == "appliance"
    assert doc["ctl"]["cacert"] == client_tls(layout, creds).ca_file
    config = LocalConfig.model_validate(doc)
    assert config.restapi.authentication is not None


def test_secrets_are_created_once_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "secrets"
    first = load_or_create_secrets(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    for name in ("postgres_password", "replication_password", "restapi_password", "etcd_password",
                 "etcd_root_password", "ca.key"):
        assert stat.S_IMODE((path / name).stat().st_mode) == 0o600, name
    values = [first.superuser_password, first.replication_password, first.restapi_password, first.etcd_password,
              first.etcd_root_password]
    assert len(set(values)) == 5 and all(len(v) >= 24 for v in values)
    assert load_or_create_secrets(path) == first
    assert "password" not in repr(first).replace("_password", "")  # no secret in a repr


def test_layout_round_trip(tmp_path: Path) -> None:
    layout = _layout(tmp_path, proxy_ports=(15000, 15001, 17000), programs=("etcd",))
    save_layout(layout)
    assert load_layout(tmp_path) == layout
    assert load_layout(tmp_path / "nowhere") is None


def test_an_existing_demo_keeps_its_settings(tmp_path: Path) -> None:
    save_layout(_layout(tmp_path))
    assert DemoCluster(tmp_path).layout.net == "127.0.9"
    assert DemoCluster(tmp_path, net="127.0.9").exists
    with pytest.raises(DemoError, match=r"made with --net 127\.0\.9"):
        DemoCluster(tmp_path, net="127.0.5")
    with pytest.raises(DemoError, match="proxy ports"):
        DemoCluster(tmp_path, proxy_ports=(1, 2, 3))


def test_unknown_program_and_node_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DemoError, match="unknown programs"):
        DemoCluster(tmp_path / "new", programs=["etcd", "pgbouncer"])
    with pytest.raises(ValueError, match="unknown node 'node7'"):
        DemoCluster(tmp_path / "new").node_dsn("node7")


def test_node_files_keep_an_edited_config(tmp_path: Path, creds: Secrets) -> None:
    layout = _layout(tmp_path, programs=("etcd",))
    write_node_files(layout, "node1", creds, user=None)
    path = layout.config_path("node1")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    edited = yaml.safe_load(path.read_text())
    edited["tags"] = {"nofailover": True}
    path.write_text(yaml.safe_dump(edited))
    write_node_files(layout, "node1", creds, user=None)
    assert yaml.safe_load(path.read_text())["tags"] == {"nofailover": True}
    conf = configparser.RawConfigParser()
    conf.read(layout.supervisord_conf("node1"))
    assert [s for s in conf.sections() if s.startswith("program:")] == ["program:etcd", "program:etcd_auth"]
    assert conf.get("supervisord", "nodaemon") == "false"


def test_proxy_files(tmp_path: Path, creds: Secrets) -> None:
    write_proxy_files(_layout(tmp_path, proxy_ports=(15000, 15001, 17000)), creds, user=None)
    text = (tmp_path / "proxy" / "haproxy.cfg").read_text()
    assert "bind 127.0.0.1:15000" in text and "server node3 127.0.9.3:5432" in text
    assert f"check-ssl verify required ca-file {tmp_path / 'proxy' / 'ca.crt'}" in text
    conf = configparser.RawConfigParser()
    conf.read(tmp_path / "proxy" / "supervisord.conf")
    assert conf.get("program:haproxy", "priority") == "30"


def _member(name: str, role: str | None, state: str, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": name, "role": role, "state": state, "replication_state": None, "xlog": {}}
    base.update({"api_url": f"http://{name}:8008", "api_error": None, "etcd": "healthy"})
    base.update({"supervisord": "running", "fatal": None, "lag": None})
    return base | kw


def test_lag_is_primary_location_minus_replayed() -> None:
    members = [
        _member("node1", "primary", "running", xlog={"location": 5000}),
        _member("node2", "replica", "running", xlog={"replayed_location": 4000}),
        _member("node3", "replica", "running", xlog={}),
    ]
    _fill_lag(members)
    assert [m["lag"] for m in members] == [0, 1000, None]


def test_healthy_cluster_has_no_problems() -> None:
    members = [
        _member("node1", "primary", "running"),
        _member("node2", "replica", "running", replication_state="streaming"),
        _member("node3", "replica", "running", replication_state="streaming"),
    ]
    assert patroni_problems(members) == []


def test_problems_name_what_is_missing() -> None:
    members = [
        _member("node1", None, "unreachable", api_error="connection refused"),
        _member("node2", "replica", "running", replication_state="in archive recovery"),
        _member("node3", "replica", "starting"),
    ]
    problems = patroni_problems(members)
    assert problems[0].startswith("node1: REST API unreachable") and "connection refused" in problems[0]
    assert "no member has role primary" in problems
    assert any("node2" in p and "'streaming'" in p for p in problems)
    assert any("node3" in p and "'starting'" in p for p in problems)
    two = [_member("node1", "primary", "running"), _member("node2", "primary", "running")]
    assert "more than one primary: node1, node2" in patroni_problems(two)


def test_health_depends_on_the_programs_run() -> None:
    status = {
        "members": [_member("node1", None, "unreachable", etcd="unreachable", supervisord="stopped", fatal="etcd")],
        "proxy": {"stats_answers": False, "stats_url": "http://x/"},
    }
    etcd_only = health_problems(status, ["etcd"])
    assert "node1: supervisord is not running (FATAL: etcd)" in etcd_only
    assert "node1: etcd is unreachable" in etcd_only
    assert not any("REST API" in p for p in etcd_only)
    assert any("REST API" in p for p in health_problems(status, ["etcd", "manager", "api"]))
    assert any(p.startswith("proxy:") for p in etcd_only)


def test_cli_lists_the_entry_points() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for command in ("manager", "api", "demo"):
        assert command in result.output
    demo_help = CliRunner().invoke(cli, ["demo", "--help"])
    for command in ("up", "status", "kill", "start", "stop", "down"):
        assert command in demo_help.output


def test_cli_status_without_a_demo_says_what_to_do(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["demo", "status", "--dir", str(tmp_path / "none")])
    assert result.exit_code == 1
    assert "appliance demo up --dir" in result.output


def test_daemon_commands_require_a_config() -> None:
    result = CliRunner().invoke(cli, ["manager"], env={"APPLIANCE_CONFIG": None})
    assert result.exit_code == 2 and "--config" in result.output


def test_node_environment_drops_what_would_reconfigure_the_nodes() -> None:
    env = {
        "PATH": "/bin",
        "APPLIANCE_NAME": "x",
        "PGPORT": "1",
        "POSTGRES_PASSWORD": "p",
        "ETCD_NAME": "e",
        "HOME": "/r",
    }
    assert node_environment(env) == {"PATH": "/bin", "HOME": "/r"}


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can see that postgres cannot enter a 0700 directory")
def test_a_directory_postgres_cannot_reach_is_refused(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    with pytest.raises(ValueError, match="not reachable by the postgres user"):
        check_reachable(private / "demo", "postgres")
    check_reachable(Path("/var/tmp/some-demo"), "postgres")


STATS_CSV = """# pxname,svname,qcur,status,weight
stats,FRONTEND,,OPEN,
primary,FRONTEND,,OPEN,
primary,node1,0,UP,1
primary,node2,0,DOWN,1
primary,BACKEND,0,UP,1
replicas,node1,0,DOWN,1
replicas,node2,0,UP,1
replicas,node3,0,UP,1
"""


def test_routing_comes_from_the_stats_csv() -> None:
    routing = routing_from_csv(STATS_CSV)
    assert routing == {"primary": ["node1"], "replicas": ["node2", "node3"]}
    members = [
        _member("node1", "primary", "running"),
        _member("node2", "replica", "running"),
        _member("node3", "replica", "running"),
    ]
    assert routing_problems(members, routing) == []
    lagging = routing_problems(members, {"primary": [], "replicas": ["node2"]})
    assert lagging == [
        "proxy: read-write routes to nobody, want ['node1']",
        "proxy: read-only routes to ['node2'], want ['node2', 'node3']",
    ]
