"""The CLI's option resolution, member selection, switchover helpers and one-line errors (no network)."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from appliance.cli.ctl.member_cmds import select_members
from appliance.cli.ctl.rest import Reply, api_base, call
from appliance.cli.ctl.switch_cmds import candidate_names, parse_when, rejections
from appliance.cli.ctl.target import (
    DEFAULT_CONFIG,
    NO_CONFIG,
    CtlError,
    Target,
    config_env,
    find_config,
    resolve,
    split_hosts,
    take_cluster_name,
)
from appliance.cli.ctl.view_cmds import pick_member, watching
from appliance.cli.main import cli
from appliance.core.model import ClusterView, Leader, Member
from appliance.core.tags import Tags

VIEW = ClusterView(
    leader=Leader("n1"),
    members=(Member("n1", conn_url="postgres://10.0.0.1:5432/postgres", state="running"),
             Member("n2", conn_url="postgres://10.0.0.2:5432/postgres", state="running"),
             Member("n3", conn_url="postgres://10.0.0.3:5433/postgres", state="stopped",
                    tags=Tags({"nofailover": True}))),
)


def write_config(tmp_path: Path, **extra: object) -> str:
    doc = {"scope": "prod", "name": "n1", "etcd3": {"hosts": ["10.0.0.1:2379", "10.0.0.2:2379"]},
           "restapi": {"authentication": {"username": "admin", "password": "s3cret"}}, **extra}
    path = tmp_path / "appliance.yml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_split_hosts_accepts_patronictl_forms() -> None:
    assert split_hosts("h1:2379, h2:2379") == ("h1:2379", "h2:2379")
    assert split_hosts("etcd3://h1:2379") == ("h1:2379",)
    assert split_hosts(None) == ()


def test_find_config_explicit_default_or_none() -> None:
    assert find_config("/x.yml", exists=lambda p: True) == "/x.yml"
    with pytest.raises(CtlError, match="does not exist"):
        find_config("/x.yml", exists=lambda p: False)
    assert find_config(None, exists=lambda p: p == DEFAULT_CONFIG) == DEFAULT_CONFIG
    assert find_config(None, exists=lambda p: False) is None


@pytest.mark.skipif(os.path.exists(DEFAULT_CONFIG), reason="this machine has an appliance config")
def test_resolve_without_anything_says_what_to_pass() -> None:
    with pytest.raises(CtlError) as exc:
        resolve({}, env={})
    assert exc.value.message == NO_CONFIG


def test_resolve_from_config_takes_dcs_scope_and_rest_credentials(tmp_path: Path) -> None:
    target = resolve({"config_path": write_config(tmp_path)}, env={"APPLIANCE_DCS": "ignored:1"})
    assert target.etcd_hosts == ("10.0.0.1:2379", "10.0.0.2:2379")
    assert (target.scope, target.namespace) == ("prod", "/service/")
    assert (target.username, target.password) == ("admin", "s3cret")
    overridden = resolve({"config_path": write_config(tmp_path), "dcs": "h9:2379", "scope": "other",
                          "username": "u", "password": "p"}, env={})
    assert (overridden.etcd_hosts, overridden.scope, overridden.username) == (("h9:2379",), "other", "u")


def test_resolve_bad_config_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(CtlError) as exc:
        resolve({"config_path": write_config(tmp_path, bogus=1)}, env={})
    assert "bogus" in exc.value.message and "\n" not in exc.value.message


def test_cli_env_vars_do_not_reach_the_config_layers() -> None:
    env = {"APPLIANCE_DCS": "h:1", "APPLIANCE_API_PASSWORD": "x", "APPLIANCE_SCOPE": "s", "PATH": "/bin"}
    assert config_env(env) == {"APPLIANCE_SCOPE": "s", "PATH": "/bin"}


def test_password_needs_username() -> None:
    with pytest.raises(CtlError, match="needs --username"):
        resolve({"dcs": "h:2379", "password": "p"}, env={})


def test_take_cluster_name() -> None:
    assert take_cluster_name(Target(scope="demo"), ["demo", "n1"]) == (Target(scope="demo"), ["n1"])
    assert take_cluster_name(Target(scope="demo"), ["n1"]) == (Target(scope="demo"), ["n1"])
    assert take_cluster_name(Target(), ["other", "n1"]) == (Target(scope="other"), ["n1"])
    with pytest.raises(CtlError, match="no cluster name"):
        take_cluster_name(Target(), [])


def test_select_members_by_name_and_role() -> None:
    assert [m.name for m in select_members(VIEW, [])] == ["n1", "n2", "n3"]
    assert [m.name for m in select_members(VIEW, [], "replica")] == ["n2", "n3"]
    assert [m.name for m in select_members(VIEW, ["n2", "n1"], "primary")] == ["n1"]
    with pytest.raises(CtlError, match="no member nX in the cluster"):
        select_members(VIEW, ["nX"])


def test_pick_member_for_dsn() -> None:
    assert pick_member(VIEW, None, None).name == "n1"
    assert pick_member(VIEW, "replica", None).name == "n2"  # a running one first
    assert pick_member(VIEW, None, "n3").name == "n3"


def test_candidates_exclude_leader_and_nofailover() -> None:
    assert candidate_names(VIEW) == ["n2"]


def test_parse_when() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert parse_when("now") is None and parse_when("") is None and parse_when(None) is None
    assert parse_when("2030-01-02T00:00+00:00", now) == "2030-01-02T00:00:00+00:00"
    with pytest.raises(CtlError, match="in the past"):
        parse_when("2029-12-31T00:00+00:00", now)
    with pytest.raises(CtlError, match="ISO-8601"):
        parse_when("tomorrow", now)


def test_replies_and_rejections() -> None:
    refused = Reply(412, "", {"message": "switchover is not possible: no good candidates have been found",
                              "candidates": {"n2": "lag 5 MB exceeds maximum_lag_on_failover", "n3": "nofailover"}})
    assert refused.message.startswith("switchover is not possible")
    assert rejections(refused) == ["n2: lag 5 MB exceeds maximum_lag_on_failover", "n3: nofailover"]
    assert rejections(Reply(412, "", {"candidates": [{"name": "n2", "reason": "not running"}]})) == [
        "n2: not running"]
    assert Reply(200, 'Successfully switched over to "n2"\n').message == 'Successfully switched over to "n2"'
    assert Reply(400, "", {"error": "bad", "field": "ttl"}).message == "bad (field ttl)"
    assert api_base("http://h:8008/patroni") == "http://h:8008"


@pytest.mark.skipif(os.path.exists(DEFAULT_CONFIG), reason="this machine has an appliance config")
@pytest.mark.parametrize("command", [["list"], ["switchover", "--force"], ["edit-config", "-s", "ttl=30"],
                                     ["history"], ["pause"]])
def test_commands_without_configuration_fail_in_one_line(command: list[str]) -> None:
    result = CliRunner().invoke(cli, command, env={"APPLIANCE_CONFIG": None, "APPLIANCE_DCS": None,
                                                   "APPLIANCE_API_URL": None})
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {NO_CONFIG}"
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_bad_watch_interval_fails_before_any_network() -> None:
    result = CliRunner().invoke(cli, ["list", "--watch", "-1", "--dcs", "127.0.0.1:1", "--scope", "x"])
    assert result.exit_code == 1
    assert "give a positive number of seconds" in result.output


class _Refuse(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = b"not authenticated: send HTTP Basic credentials (restapi.authentication)\n"
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="Patroni"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_wrong_credentials_are_one_clear_line() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/switchover"
        with pytest.raises(CtlError) as exc:
            call(Target(username="admin", password="wrong"), "POST", url, {"leader": "n1"})
    finally:
        server.shutdown()
        server.server_close()
    assert "refused the credentials (401" in exc.value.message
    assert "--username and --password" in exc.value.message


def test_watching_refreshes_until_ctrl_c() -> None:
    shown: list[str] = []
    calls = iter(["one", "two"])

    def produce() -> str:
        text = next(calls)
        shown.append(text)
        return text

    def sleep(_: float) -> None:
        if len(shown) == 2:
            raise KeyboardInterrupt

    watching(0.01, produce, sleep)
    assert shown == ["one", "two"]
