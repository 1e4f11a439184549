"""The container entrypoint: settings from env/peers/hostname, secrets, checks, rendered files, PID 1 exit."""

from __future__ import annotations

import configparser
import gzip
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from appliance.config.errors import ConfigError
from appliance.config.schema import LocalConfig
from appliance.dcs.etcd_transport import EtcdMember
from appliance.postgres.validate import Checks
from appliance.runtime import container as ct
from appliance.runtime.cluster_health import parse_stats_csv, problems
from appliance.runtime.container_identity import IdentityError
from appliance.runtime.entrypoint import Plan, prepare, remove_stale_pid_file
from appliance.runtime.initdb_scripts import (
    PsqlTarget,
    _run_dir_of,
    classify,
    run_all,
    wait_finished,
    wait_for_verdict,
    wait_settled,
)
from appliance.runtime.supervise import fatal_exit_code
from appliance.tls import identity, pki
from tests.unit.pg_fakes import fake_checks
from tests.unit.test_runtime_entrypoint_etcd import FakeGateway

PEERS_DOWN = ("https://node2:2379", "https://node3:2379")


def node_yaml(tmp_path: Path, **extra: Any) -> Path:
    data = {
        "postgresql": {"data_dir": str(tmp_path / "vol" / "data")},
        "etcd": {"data_dir": str(tmp_path / "vol" / "etcd")},
        "appliance": {"run_dir": str(tmp_path / "run")},
        **extra,
    }
    path = tmp_path / "in.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def cluster_ca(tmp_path: Path) -> dict[str, str]:
    """The cluster CA as scripts/up gives it to every node (files only root may read)."""
    directory = tmp_path / "secrets"
    identity.init_ca(directory)
    return {"APPLIANCE_TLS__CA_FILE": str(directory / "ca.crt"),
            "APPLIANCE_TLS__CA_KEY_FILE": str(directory / "ca.key")}


def run_prepare(tmp_path: Path, env: dict[str, str], gateway: FakeGateway | None = None,
                hostname: str = "node1", ca: bool = True, checks: Checks | None = None) -> Plan:
    env = {"APPLIANCE_CONFIG": str(node_yaml(tmp_path)), **(cluster_ca(tmp_path) if ca else {}), **env}
    return prepare(env, hostname=hostname, rendered=str(tmp_path / "run" / "appliance.yml"),
                   gateway=gateway or FakeGateway([], down=PEERS_DOWN), python="/venv/bin/python",
                   home="/var/lib/postgresql", owner=None, etcd_wait=0.0, checks=checks or fake_checks())


def parse_conf(path: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser()
    parser.read(path)
    return parser


def test_three_node_container_renders_every_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    plan = run_prepare(tmp_path, {"APPLIANCE_PEERS": "node1,node2,node3", "POSTGRES_PASSWORD_FILE": str(secret),
                                  "APPLIANCE_SCOPE": "batman", "ETCD_NAME": "conflicts-with-flags"})
    config = plan.config
    assert (config.name, config.scope) == ("node1", "batman")
    assert config.restapi.connect_address == "node1:8008"
    assert config.postgresql.connect_address == "node1:5432"
    assert config.etcd3.hosts == ["node1:2379", "node2:2379", "node3:2379"]
    assert config.etcd.initial_cluster == ("node1=https://node1:2380,node2=https://node2:2380,"
                                           "node3=https://node3:2380")
    assert config.etcd.initial_cluster_token == "pgappliance-batman"
    assert config.appliance.peers == ["node2", "node3"]
    assert plan.etcd is not None and plan.etcd.state == "new"
    # Secrets go into the rendered YAML (0600), never into the programs' environment.
    rendered = yaml.safe_load(Path(plan.rendered).read_text())
    auth = rendered["postgresql"]["authentication"]
    assert auth["superuser"]["password"] == "s3cret"
    assert auth["replication"]["password"] == ct.derive_replication_password("s3cret", "batman")
    assert not [k for k in plan.env if "PASSWORD" in k or k.startswith("ETCD_")]
    assert "APPLIANCE_PEERS" not in plan.env and "s3cret" not in repr(plan.env)
    assert plan.env["APPLIANCE_CONFIG"] == plan.rendered
    assert stat.S_IMODE(os.stat(plan.rendered).st_mode) == 0o600
    # Secure by default: a certificate issued from the cluster CA, every credential there.
    assert config.restapi.certfile == str(tmp_path / "run" / "tls" / "node.crt")
    assert config.etcd3.protocol == "https" and config.etcd3.cacert == str(tmp_path / "run" / "tls" / "ca.crt")
    assert config.restapi.authentication is not None and config.etcd3.password and config.etcd.root_password
    assert config.tls.ca_key_file is None  # the programs never see the CA key
    cert = pki.read_file(config.restapi.certfile)
    assert pki.check_certificate(cert, ca_pem=pki.read_file(str(tmp_path / "secrets" / "ca.crt")),
                                 names=["node1", "localhost", "127.0.0.1"]) == []
    conf = parse_conf(plan.supervisord_conf)
    programs = [s for s in conf.sections() if s.startswith(("program:", "fcgi-program:"))]
    assert programs == ["program:etcd", "program:etcd_auth", "program:fencer", "program:haproxy", "fcgi-program:api",
                        "program:manager", "program:initdb_scripts"]
    assert "PASSWORD" not in Path(plan.supervisord_conf).read_text()
    etcd = shlex.split(conf.get("program:etcd", "command"))
    assert etcd[etcd.index("--initial-cluster-token") + 1] == "pgappliance-batman"
    assert conf.get("program:initdb_scripts", "autorestart") == "false"
    assert conf.get("supervisord", "silent") == "true"
    assert (tmp_path / "run" / "initdb-scripts.pending").exists()
    haproxy = (tmp_path / "run" / "haproxy.cfg").read_text()
    assert "resolvers dns" in haproxy and "parse-resolv-conf" in haproxy
    assert ("server node2 node2:5432 maxconn 100 check port 8008 check-ssl verify required ca-file "
            f"{tmp_path / 'run' / 'tls' / 'ca.crt'} resolvers dns init-addr last,libc,none") in haproxy


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_haproxy_accepts_peers_that_do_not_resolve_yet(tmp_path: Path) -> None:
    plan = run_prepare(tmp_path, {"APPLIANCE_PEERS": "pga-nowhere-1,pga-nowhere-2", "POSTGRES_PASSWORD": "x"},
                       gateway=FakeGateway([], down=["https://pga-nowhere-1:2379", "https://pga-nowhere-2:2379"]),
                       hostname="pga-nowhere-1")
    cfg = os.path.join(plan.config.appliance.run_dir, "haproxy.cfg")
    result = subprocess.run(["haproxy", "-c", "-f", cfg], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


def test_single_node_uses_loopback_for_etcd_and_haproxy(tmp_path: Path) -> None:
    plan = run_prepare(tmp_path, {"POSTGRES_PASSWORD": "x"}, hostname="3f2a1b", ca=False)
    config = plan.config
    assert config.name == "3f2a1b" and plan.identity.single
    assert config.etcd3.hosts == ["127.0.0.1:2379"]
    assert config.etcd.advertise_peer == "127.0.0.1:2380" and config.etcd.initial_cluster == ""
    assert plan.etcd is not None and plan.etcd.reason == "a single-member cluster"
    haproxy = (tmp_path / "run" / "haproxy.cfg").read_text()
    assert "server 3f2a1b 127.0.0.1:5432 maxconn 100 check port 8008 check-ssl verify required" in haproxy
    assert "resolvers" not in haproxy
    # A lone node with no CA makes its own, once, on its volume, and its own passwords too.
    own = tmp_path / "vol" / "pgappliance-ca"
    assert stat.S_IMODE((own / "ca.key").stat().st_mode) == 0o600
    secrets_dir = tmp_path / "vol" / "pgappliance-secrets"
    generated = (secrets_dir / "restapi_password").read_text()
    assert config.restapi.authentication is not None and config.restapi.authentication.password == generated
    again = run_prepare(tmp_path, {"POSTGRES_PASSWORD": "x"}, hostname="3f2a1b", ca=False)
    assert again.config.restapi.authentication == config.restapi.authentication
    assert (own / "ca.crt").read_bytes() == pki.read_file(str(tmp_path / "run" / "tls" / "ca.crt"))


def test_a_cluster_without_a_ca_is_refused(tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match="needs one CA: set APPLIANCE_TLS__CA_FILE"):
        run_prepare(tmp_path, {"APPLIANCE_PEERS": "node1,node2,node3", "POSTGRES_PASSWORD": "x"}, ca=False)


def test_an_expired_or_foreign_certificate_is_refused(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    past = datetime.now(UTC) - timedelta(days=900)
    identity.init_ca(tmp_path / "secrets", now=past)  # the cluster CA, long in service
    ca_env = cluster_ca(tmp_path)
    foreign = tmp_path / "foreign"
    identity.init_ca(foreign)
    for name, ca_dir, when in (("foreign", foreign, None), ("expired", tmp_path / "secrets", past)):
        tls, _ = identity.issue_node(str(ca_dir / "ca.crt"), str(ca_dir / "ca.key"), tmp_path / name,
                                     dns_names=["node1"], ip_addresses=[], now=when)
        env = {"APPLIANCE_PEERS": "node1,node2", "POSTGRES_PASSWORD": "x", "APPLIANCE_TLS__CERT_FILE": tls.cert_file,
               "APPLIANCE_TLS__KEY_FILE": tls.key_file, "APPLIANCE_TLS__CA_FILE": ca_env["APPLIANCE_TLS__CA_FILE"]}
        with pytest.raises(IdentityError, match=r"tls\.cert_file .*(not by the cluster CA|expired)"):
            run_prepare(tmp_path, env, ca=False)


def test_protections_turned_off_on_purpose_are_named_at_start(tmp_path: Path) -> None:
    off = {f"APPLIANCE_SECURITY__{c.upper()}": "false"
           for c in ("restapi_tls", "restapi_auth", "etcd_tls", "etcd_auth", "postgresql_tls")}
    plan = run_prepare(tmp_path, {"APPLIANCE_PEERS": "node1,node2", "POSTGRES_PASSWORD": "x", **off}, ca=False)
    assert plan.config.restapi.certfile is None and plan.config.etcd3.protocol == "http"
    assert plan.config.etcd.initial_cluster.startswith("node1=http://node1:2380")
    insecure = [n for n in plan.notes if n.startswith("INSECURE")]
    assert len(insecure) == 5 and "security.etcd_tls: false" in " ".join(insecure)


def test_yaml_and_env_win_over_derived_defaults(tmp_path: Path) -> None:
    yml = node_yaml(tmp_path, etcd3={"hosts": ["etcd.example:2379"]}, name="pg-a")
    env = {"APPLIANCE_CONFIG": str(yml), "APPLIANCE_PEERS": "node1,node2", "POSTGRES_PASSWORD": "x",
           "APPLIANCE_RESTAPI__CONNECT_ADDRESS": "10.0.0.1:8008"}
    env.update(cluster_ca(tmp_path))
    plan = prepare(env, hostname="node1", rendered=str(tmp_path / "run" / "appliance.yml"),
                   gateway=FakeGateway([], down=["https://etcd.example:2379"]), owner=None, etcd_wait=0.0)
    assert plan.config.name == "pg-a"
    assert plan.config.etcd3.hosts == ["etcd.example:2379"]
    assert plan.config.restapi.connect_address == "10.0.0.1:8008"
    assert plan.config.etcd.name == "node1"  # etcd members are named after their hosts


def test_missing_password_on_an_empty_data_dir_stops_the_container(tmp_path: Path) -> None:
    with pytest.raises(ct.EntrypointError, match="Database is uninitialized and superuser password is not"):
        run_prepare(tmp_path, {})


def test_an_initialised_data_dir_needs_no_password(tmp_path: Path) -> None:
    data = tmp_path / "vol" / "data"
    data.mkdir(parents=True)
    (data / "PG_VERSION").write_text("15\n")
    plan = run_prepare(tmp_path, {})
    assert plan.initialised
    assert not (tmp_path / "run" / "initdb-scripts.pending").exists()
    assert "initdb_scripts" not in Path(plan.supervisord_conf).read_text()


def test_demo_flag_is_the_only_default_password(tmp_path: Path) -> None:
    plan = run_prepare(tmp_path, {"APPLIANCE_DEMO_INSECURE": "1"})
    assert plan.config.postgresql.authentication.superuser.password == "postgres"
    assert "APPLIANCE_DEMO_INSECURE" not in plan.env
    assert any("Never use this beyond a demo" in note for note in plan.notes)


def test_var_and_var_file_are_exclusive(tmp_path: Path) -> None:
    with pytest.raises(ct.EntrypointError, match="both POSTGRES_PASSWORD and POSTGRES_PASSWORD_FILE are set"):
        ct.resolve_file_twins({"POSTGRES_PASSWORD": "a", "POSTGRES_PASSWORD_FILE": "/x"})
    with pytest.raises(ct.EntrypointError, match="APPLIANCE_REPLICATION_PASSWORD_FILE: cannot read /nonexistent"):
        ct.resolve_file_twins({"APPLIANCE_REPLICATION_PASSWORD_FILE": "/nonexistent"})
    env = ct.resolve_file_twins({"APPLIANCE_RESTAPI__AUTHENTICATION__PASSWORD_FILE": str(node_yaml(tmp_path))})
    assert "APPLIANCE_RESTAPI__AUTHENTICATION__PASSWORD" in env


def test_a_bad_parameter_fails_the_start_naming_its_variable(tmp_path: Path) -> None:
    """Today work_mem=banana started a container Docker called healthy, PostgreSQL failing forever."""
    env = {"POSTGRES_PASSWORD": "x", "APPLIANCE_POSTGRESQL__PARAMETERS__WORK_MEM": "banana",
           "APPLIANCE_POSTGRESQL__PARAMETERS__PRIMARY_SLOT_NAME": "evil"}
    with pytest.raises(ConfigError) as caught:
        run_prepare(tmp_path, env, checks=fake_checks(reject=["work_mem"]))
    text = str(caught.value)
    assert "postgresql.parameters.work_mem (env APPLIANCE_POSTGRESQL__PARAMETERS__WORK_MEM)" in text
    assert "'banana'" in text
    assert "primary_slot_name (env APPLIANCE_POSTGRESQL__PARAMETERS__PRIMARY_SLOT_NAME)" in text
    assert "managed by the appliance" in text


@pytest.mark.parametrize(("var", "value", "key"), [
    ("APPLIANCE_RESTAPI__LISTEN", "0.0.0.0:99999", "restapi.listen"),
    ("APPLIANCE_HAPROXY__BIND_ADDRESS", "0.0.0.0\n    server evil 6.6.6.6:5432", "haproxy.bind_address"),
    ("APPLIANCE_HAPROXY__REPLICA_MAX_LAG", "16MB\nlisten x", "haproxy.replica_max_lag"),
    ("APPLIANCE_ETCD3__HOSTS", '["node1:2379", "no such host:2379"]', "etcd3.hosts"),
    ("APPLIANCE_ETCD__INITIAL_CLUSTER_TOKEN", "tok --force-new-cluster", "etcd.initial_cluster_token"),
])
def test_values_for_rendered_files_are_refused_at_load_naming_the_key(tmp_path: Path, var: str, value: str,
                                                                       key: str) -> None:
    with pytest.raises(ConfigError, match=rf"{re.escape(key)}.*\(env {var}\)"):
        run_prepare(tmp_path, {"POSTGRES_PASSWORD": "x", var: value})


def test_bad_settings_fail_with_the_key_and_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="APPLIANCE_RESTAPI__LISTN"):
        run_prepare(tmp_path, {"POSTGRES_PASSWORD": "x", "APPLIANCE_RESTAPI__LISTN": "1"})
    with pytest.raises(ct.EntrypointError, match="not a host name"):
        run_prepare(tmp_path, {"POSTGRES_PASSWORD": "x", "APPLIANCE_PEERS": "node1,http://node2"})


def test_wiped_member_rejoins_through_the_rendered_etcd_command(tmp_path: Path) -> None:
    members = [EtcdMember(str(i), f"node{i}", (f"https://node{i}:2380",), (f"https://node{i}:2379",))
               for i in (1, 2, 3)]
    gateway = FakeGateway(members)
    plan = run_prepare(tmp_path, {"APPLIANCE_PEERS": "node1 node2 node3", "POSTGRES_PASSWORD": "x"}, gateway)
    assert gateway.calls == ["remove 1", "add https://node1:2380"]
    etcd = shlex.split(parse_conf(plan.supervisord_conf).get("program:etcd", "command"))
    assert etcd[etcd.index("--initial-cluster-state") + 1] == "existing"
    assert etcd[etcd.index("--initial-cluster") + 1] == (
        "node2=https://node2:2380,node3=https://node3:2380,node1=https://node1:2380")
    assert "--client-cert-auth=true" in etcd and "--peer-client-cert-auth=true" in etcd


def test_stale_runtime_files_are_cleaned(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "pgsocket").mkdir(parents=True)
    for name in ("supervisord.fatal", "supervisor.sock", "state.json", "pgsocket/.s.PGSQL.5432.lock"):
        (run / name).write_text("old")
    data = tmp_path / "vol" / "data"
    data.mkdir(parents=True)
    (data / "PG_VERSION").write_text("15\n")
    (data / "postmaster.pid").write_text(f"{os.getpid()}\n{data}\n1\n5432\n")
    plan = run_prepare(tmp_path, {})
    assert not (run / "supervisord.fatal").exists() and not (run / "state.json").exists()
    assert os.listdir(run / "pgsocket") == []
    assert not (data / "postmaster.pid").exists()
    assert any("stale" in note for note in plan.notes)
    assert remove_stale_pid_file(str(data)) is None


def test_identity_and_peer_parsing() -> None:
    assert ct.parse_peers('["b", "a", "b"]') == ["b", "a"]
    assert ct.parse_peers(" a, b  c ") == ["a", "b", "c"]
    ident = ct.identity(["node2", "node3"], "node1")
    assert ident.members == ("node1", "node2", "node3") and ident.others == ("node2", "node3")
    assert ct.identity(["db1.example", "db2.example"], "db1", ["db1.example"]).host == "db1.example"
    assert ct.identity([], "abc").single


def test_derived_ports_follow_the_listen_settings() -> None:
    base = LocalConfig.model_validate({"postgresql": {"listen": "0.0.0.0:6432"}, "restapi": {"listen": "0.0.0.0:9008"}})
    tree = ct.derived_defaults(base, ct.identity(["a", "b"], "a"), {}, {"PGDATA": "/pg"})
    assert tree["postgresql"] == {"connect_address": "a:6432", "data_dir": "/pg"}
    assert tree["restapi"] == {"connect_address": "a:9008"}


# -- /docker-entrypoint-initdb.d -------------------------------------------------------------------


@pytest.mark.parametrize(("doc", "verdict"), [
    (None, None),
    ({"role": "uninitialized", "state": "initializing new cluster"}, None),
    ({"role": "primary", "state": "starting", "timeline": 1}, None),
    ({"role": "primary", "state": "running", "timeline": 1}, "bootstrap"),
    ({"role": "primary", "state": "running", "timeline": 2}, "not-bootstrap"),
    ({"role": "replica", "state": "running", "timeline": 1}, "not-bootstrap"),
])
def test_only_a_timeline_1_primary_is_the_bootstrap_node(doc: dict[str, Any] | None, verdict: str | None) -> None:
    assert classify(doc) == verdict


def test_waiting_for_the_verdict_is_bounded() -> None:
    now = [0.0]
    docs = iter([None, {"role": "replica"}])
    assert wait_for_verdict(lambda: next(docs), 10, lambda: now[0], lambda s: now.__setitem__(0, now[0] + s)) \
        == "not-bootstrap"
    assert wait_for_verdict(lambda: None, 5, lambda: now[0], lambda s: now.__setitem__(0, now[0] + s)) is None


def fake_psql(tmp_path: Path, fail_on: str = "") -> PsqlTarget:
    log = tmp_path / "psql.log"
    script = tmp_path / "psql"
    script.write_text(f"#!/bin/sh\necho \"ARGS $*\" >> {log}\ncat >> {log}\n"
                      + (f"grep -q '{fail_on}' {log} && exit 3\n" if fail_on else "") + "exit 0\n")
    script.chmod(0o755)
    return PsqlTarget(str(script), {"PATH": os.environ["PATH"], "MARK": str(tmp_path / "sh.log")})


def test_init_scripts_run_in_name_order_by_kind(tmp_path: Path) -> None:
    initdb = tmp_path / "initdb.d"
    initdb.mkdir()
    (initdb / "10-schema.sql").write_text("CREATE TABLE t();\n")
    (initdb / "20-data.sql.gz").write_bytes(gzip.compress(b"INSERT INTO t DEFAULT VALUES;\n"))
    (initdb / "30-exec.sh").write_text("#!/bin/sh\necho exec >> \"$MARK\"\n")
    (initdb / "30-exec.sh").chmod(0o755)
    (initdb / "40-sourced.sh").write_text("echo sourced >> \"$MARK\"\n")
    (initdb / "50-readme.txt").write_text("ignored\n")
    target = fake_psql(tmp_path)
    assert run_all(target, initdb, "app") == 0
    log = (tmp_path / "psql.log").read_text()
    assert "CREATE DATABASE" in log and "db=app" in log
    assert log.index("CREATE TABLE t()") < log.index("INSERT INTO t DEFAULT VALUES")
    assert "ON_ERROR_STOP=1" in log and "--dbname app" in log
    assert (tmp_path / "sh.log").read_text().split() == ["exec", "sourced"]


def test_a_lost_connection_runs_the_same_script_again_once_ready(tmp_path: Path) -> None:
    initdb = tmp_path / "initdb.d"
    initdb.mkdir()
    (initdb / "1.sql").write_text("SELECT 1;\n")
    flag = tmp_path / "lost-once"
    script = tmp_path / "psql"
    script.write_text(f"#!/bin/sh\ncat >> {tmp_path}/psql.log\n"
                      f"if [ ! -e {flag} ]; then touch {flag}; exit 2; fi\nexit 0\n")
    script.chmod(0o755)
    calls: list[str] = []

    def ready() -> bool:
        calls.append("ready")
        return True

    target = PsqlTarget(str(script), {"PATH": os.environ["PATH"]}, ready=ready)
    assert run_all(target, initdb, "postgres") == 0
    assert calls == ["ready"]
    assert (tmp_path / "psql.log").read_text().count("SELECT 1;") == 2
    gone = PsqlTarget(str(script), {"PATH": os.environ["PATH"]}, ready=lambda: False)
    flag.unlink()
    assert run_all(gone, initdb, "postgres") == 1


def test_scripts_wait_for_streaming_replicas_within_a_bound() -> None:
    now = [0.0]
    streaming = {"members": [{"name": "a", "role": "leader", "state": "running", "timeline": 1},
                             {"name": "b", "role": "replica", "state": "streaming", "timeline": 1}]}
    docs = iter([None, {"members": streaming["members"][:1]}, streaming])
    tick = (lambda: now[0], lambda s: now.__setitem__(0, now[0] + s))
    assert wait_settled(lambda: next(docs), 2, 60, *tick)
    assert not wait_settled(lambda: None, 2, 5, *tick)


def test_waiting_for_the_scripts_to_finish(tmp_path: Path) -> None:
    rendered = tmp_path / "appliance.yml"
    rendered.write_text(yaml.safe_dump({"appliance": {"run_dir": str(tmp_path)}}))
    assert _run_dir_of(str(rendered)) == tmp_path
    assert _run_dir_of(str(tmp_path / "missing.yml")) == Path("/run/pgappliance")
    assert wait_finished(tmp_path, 0)
    (tmp_path / "initdb-scripts.running").touch()
    now = [0.0]
    assert not wait_finished(tmp_path, 3, lambda: now[0], lambda s: now.__setitem__(0, now[0] + s))


def test_a_failing_script_stops_the_rest(tmp_path: Path) -> None:
    initdb = tmp_path / "initdb.d"
    initdb.mkdir()
    (initdb / "1.sql").write_text("BROKEN;\n")
    (initdb / "2.sql").write_text("NEVER;\n")
    assert run_all(fake_psql(tmp_path, fail_on="BROKEN"), initdb, "postgres") == 1
    assert "NEVER" not in (tmp_path / "psql.log").read_text()


# -- PID 1 exit status, cluster health ----------------------------------------------------------------


def test_fatal_marker_makes_the_container_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "supervisord.fatal"
    assert fatal_exit_code(str(marker)) == 0
    marker.write_text("haproxy FATAL at 1\n")
    assert fatal_exit_code(str(marker)) == 1
    assert "haproxy FATAL at 1" in capsys.readouterr().err


def test_supervise_runs_supervisord_in_process_and_reports_fatal(tmp_path: Path) -> None:
    conf = tmp_path / "supervisord.conf"
    marker = tmp_path / "supervisord.fatal"
    conf.write_text(f"""[supervisord]
nodaemon=true
logfile=/dev/null
pidfile={tmp_path}/s.pid
[program:false]
command=/bin/false
startsecs=1
startretries=0
autorestart=false
[eventlistener:fatal_listener]
command={sys.executable} -m appliance.runtime.fatal_listener --marker {marker} --programs false
events=PROCESS_STATE_FATAL
""")
    result = subprocess.run([sys.executable, "-m", "appliance.runtime.supervise", "-c", str(conf), "--marker",
                             str(marker)], capture_output=True, text=True, timeout=60, cwd=str(tmp_path),
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert result.returncode == 1, result.stderr
    assert "false FATAL" in result.stderr


STATS = """# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,
primary,FRONTEND,,,0,0,1000,0,0,0,0,0,0,,,,,OPEN,
primary,node1,0,0,0,0,100,0,0,0,,0,,0,0,0,0,UP,
primary,node2,0,0,0,0,100,0,0,0,,0,,0,0,0,0,DOWN,
primary,BACKEND,0,0,0,0,100,0,0,0,0,0,,0,0,0,0,UP,
replicas,node1,0,0,0,0,100,0,0,0,,0,,0,0,0,0,DOWN,
replicas,node2,0,0,0,0,100,0,0,0,,0,,0,0,0,0,UP 1/2,
"""


def test_cluster_health_checks_members_and_routing() -> None:
    stats = parse_stats_csv(STATS)
    assert stats == {"primary": {"node1": "UP", "node2": "DOWN"}, "replicas": {"node1": "DOWN", "node2": "UP"}}
    cluster = {"members": [{"name": "node1", "role": "leader", "state": "running", "timeline": 2},
                           {"name": "node2", "role": "replica", "state": "streaming", "timeline": 2}]}
    assert problems(cluster, {"node1": stats, "node2": stats}, expect=2) == []
    assert problems(cluster, {"node1": stats}, expect=3) == ["2 members, want 3: node1, node2"]
    lagging = {"members": [cluster["members"][0], {**cluster["members"][1], "state": "in archive recovery"}]}
    assert problems(lagging, {}, expect=2) == ["node2: replica is 'in archive recovery', want 'streaming'"]
    swapped = parse_stats_csv(STATS.replace("primary,node2,0,0,0,0,100,0,0,0,,0,,0,0,0,0,DOWN",
                                            "primary,node2,0,0,0,0,100,0,0,0,,0,,0,0,0,0,UP"))
    assert problems(cluster, {"node3": swapped}, expect=2) == [
        "node3: HAProxy routes 5000 to ['node1', 'node2'], want ['node1']"]
    assert problems(None, {}, expect=3) == ["the REST API does not answer /cluster"]


def test_watchdog_handover_never_touches_a_file_that_is_not_a_device(tmp_path: Path) -> None:
    from appliance.runtime.entrypoint import hand_over_watchdog

    target = tmp_path / "not-a-watchdog"
    target.write_text("keep me")
    target.chmod(0o644)
    before = target.stat()
    config = LocalConfig.model_validate({"watchdog": {"mode": "required", "device": str(target)}})
    hand_over_watchdog(config, (12345, 12345))
    after = target.stat()
    assert (after.st_uid, after.st_gid, stat.S_IMODE(after.st_mode)) == (before.st_uid, before.st_gid, 0o644)
    hand_over_watchdog(LocalConfig.model_validate({"watchdog": {"device": str(tmp_path / "missing")}}),
                       (12345, 12345))  # a missing device is no error here: the fencer reports it


def test_watchdog_mode_takes_patroni_spellings() -> None:
    assert LocalConfig.model_validate({"watchdog": {"mode": False}}).watchdog.mode == "off"
    assert LocalConfig.model_validate({"watchdog": {"mode": "require"}}).watchdog.mode == "required"
    with pytest.raises(ValueError):
        LocalConfig.model_validate({"watchdog": {"mode": "sometimes"}})
