"""The demo runtime with real processes: three supervisords with etcd, the proxy's HAProxy, kill/start/down."""

from __future__ import annotations

import importlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from appliance.demo import procs
from appliance.demo.cluster import DemoCluster
from appliance.demo.layout import PROXY
from appliance.net.http import request
from appliance.runtime.supervisor import FATAL_MARKER, LogTarget, Program, SupervisorSpec, render_supervisord_conf
from tests.support.cluster import demo_cluster, demo_cluster_fixture

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not all(shutil.which(b) for b in ("etcd", "etcdctl", "haproxy")), reason="needs etcd, etcdctl and haproxy"
    ),
]

etcd_demo = demo_cluster_fixture(programs=("etcd",), scope="module", timeout=90)


def _etcdctl(cluster: DemoCluster, *args: str, hosts: list[str] | None = None,
             user: str | None = "root") -> subprocess.CompletedProcess[str]:
    """etcdctl over TLS with the operator's client certificate, as etcd's root user by default."""
    endpoints = ",".join(f"https://{h}" for h in (hosts or [f"{cluster.layout.host(n)}:2379" for n in cluster.nodes]))
    client = cluster.layout.client_dir
    command = ["etcdctl", f"--endpoints={endpoints}", "--command-timeout=3s", f"--cacert={cluster.secrets.ca_file}",
               f"--cert={client / 'node.crt'}", f"--key={client / 'node.key'}", *args]
    env = dict(os.environ)
    if user is not None:  # in the environment, not in argv (ps)
        password = cluster.secrets.etcd_root_password if user == "root" else cluster.secrets.etcd_password
        env["ETCDCTL_USER"] = f"{user}:{password}"
    return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False, env=env)


def _program_pid(cluster: DemoCluster, node: str, program: str) -> int | None:
    supervisord = cluster.supervisord_pid(node)
    if supervisord is None:
        return None
    for pid in procs.descendants(supervisord):
        argv = procs.cmdline(pid)
        if argv and Path(argv[0]).name == program:
            return pid
    return None


def test_three_member_etcd_cluster_forms(etcd_demo: DemoCluster) -> None:
    health = _etcdctl(etcd_demo, "endpoint", "health")
    assert health.returncode == 0, health.stderr
    assert (health.stdout + health.stderr).count("is healthy") == 3
    members = _etcdctl(etcd_demo, "member", "list")
    assert sorted(line.split(", ")[2] for line in members.stdout.splitlines()) == ["node1", "node2", "node3"]
    status = etcd_demo.status()
    assert [m["etcd"] for m in status["members"]] == ["healthy"] * 3
    assert status["etcd"] == [f"https://{etcd_demo.layout.host(n)}:2379" for n in etcd_demo.nodes]


def _auth_is_on(cluster: DemoCluster) -> bool:
    """With auth on, a request without credentials is denied (etcdctl 3.4 had no `auth status`)."""
    return "permission denied" in _etcdctl(cluster, "get", "/service/demo/leader", user=None).stderr


def test_etcd_refuses_clients_without_a_certificate_or_credentials(etcd_demo: DemoCluster) -> None:
    """The attacks of the issue: anyone who reached 2379 could put the leader key (no TLS, no users)."""
    deadline = time.monotonic() + 60
    while not _auth_is_on(etcd_demo):  # the etcd_auth one-shot turns it on once the members have quorum
        assert time.monotonic() < deadline, "etcd auth is still off"
        time.sleep(0.5)
    leader_key = "/service/demo/leader"
    endpoint = f"https://{etcd_demo.layout.host('node1')}:2379"
    anonymous = subprocess.run(["etcdctl", f"--endpoints={endpoint}", "--command-timeout=3s",
                                "--insecure-transport=false", "--insecure-skip-tls-verify", "put", leader_key, "evil"],
                               capture_output=True, text=True, timeout=30, check=False)
    assert anonymous.returncode != 0  # no client certificate: the TLS handshake fails
    plaintext = subprocess.run(["etcdctl", f"--endpoints=http://{etcd_demo.layout.host('node1')}:2379",
                                "--command-timeout=3s", "put", leader_key, "evil"], capture_output=True, text=True,
                               timeout=30, check=False)
    assert plaintext.returncode != 0
    no_credentials = _etcdctl(etcd_demo, "put", leader_key, "evil", user=None)
    assert no_credentials.returncode != 0 and "permission denied" in no_credentials.stderr
    wrong = subprocess.run(["etcdctl", f"--endpoints={endpoint}", "--command-timeout=3s",
                            f"--cacert={etcd_demo.secrets.ca_file}", "--user=appliance:wrong", "put", "x", "y"],
                           capture_output=True, text=True, timeout=30, check=False)
    assert wrong.returncode != 0
    # The appliance user may use its cluster's prefix, and nothing else.
    assert _etcdctl(etcd_demo, "put", "/service/demo/probe", "ok", user="appliance").returncode == 0
    outside = _etcdctl(etcd_demo, "put", "/service/other/leader", "evil", user="appliance")
    assert outside.returncode != 0 and "permission denied" in outside.stderr
    assert _etcdctl(etcd_demo, "get", leader_key, "--print-value-only").stdout.strip() != "evil"
    _etcdctl(etcd_demo, "del", "/service/demo/probe")


def test_programs_run_as_postgres_and_only_the_selected_ones(etcd_demo: DemoCluster) -> None:
    for node in etcd_demo.nodes:
        supervisord = etcd_demo.supervisord_pid(node)
        assert supervisord is not None
        names = {Path(procs.cmdline(p)[0]).name for p in procs.descendants(supervisord)}
        assert names == {"etcd", "python"}  # etcd, the FATAL listener (and the etcd_auth one-shot)
        if subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() == "0":
            owner = Path(f"/proc/{supervisord}").stat().st_uid
            assert owner == int(subprocess.run(["id", "-u", "postgres"], capture_output=True, text=True).stdout)


def test_proxy_stats_page_metrics_and_admin_socket(etcd_demo: DemoCluster) -> None:
    stats_url = etcd_demo.status()["proxy"]["stats_url"]
    assert request(stats_url, timeout=5).status == 200
    assert b"haproxy_server_status" in request(stats_url + "metrics", timeout=5).body
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(etcd_demo.dir / PROXY / "run" / "haproxy.sock"))
        sock.sendall(b"show servers state primary\n")
        answer = b"".join(iter(lambda: sock.recv(65536), b"")).decode()
    assert all(f" {n} " in answer for n in etcd_demo.nodes)


def test_supervisord_restarts_a_killed_etcd(etcd_demo: DemoCluster) -> None:
    old = _program_pid(etcd_demo, "node3", "etcd")
    assert old is not None
    procs.signal_pids([old], signal.SIGKILL)
    etcd_demo.wait_for(
        lambda s: _program_pid(etcd_demo, "node3", "etcd") not in (None, old) and s["members"][2]["etcd"] == "healthy",
        timeout=30,
    )


def test_kill_and_start_a_node(etcd_demo: DemoCluster) -> None:
    tree = [etcd_demo.supervisord_pid("node2")]
    killed = etcd_demo.kill("node2")
    assert tree[0] in killed and len(killed) >= 3  # supervisord, etcd, listener
    assert not any(procs.pid_alive(p) for p in killed)
    status = etcd_demo.status()
    node2 = status["members"][1]
    assert (node2["supervisord"], node2["etcd"], node2["state"]) == ("stopped", "unreachable", "unreachable")
    survivors = [f"{etcd_demo.layout.host(n)}:2379" for n in ("node1", "node3")]
    # Quorum is kept; a new etcd leader may have to be elected first if node2 led.
    deadline = time.monotonic() + 20
    while (put := _etcdctl(etcd_demo, "put", "k", "v", hosts=survivors)).returncode != 0:
        assert time.monotonic() < deadline, put.stderr
        time.sleep(0.5)
    etcd_demo.start("node2")
    etcd_demo.wait_healthy(timeout=60)
    assert (
        _etcdctl(
            etcd_demo, "get", "k", "--print-value-only", hosts=[f"{etcd_demo.layout.host('node2')}:2379"]
        ).stdout.strip()
        == "v"
    )


def test_down_leaves_no_process_behind(etcd_demo: DemoCluster) -> None:
    pids = [
        p for n in [*etcd_demo.nodes, PROXY] if (s := etcd_demo.supervisord_pid(n)) for p in [s, *procs.descendants(s)]
    ]
    assert len(pids) >= 3 * 3 + 3
    etcd_demo.down(timeout=60)
    assert not [p for p in pids if procs.pid_alive(p)]
    assert procs.pids_mentioning(str(etcd_demo.dir)) == []
    assert (etcd_demo.dir / "node1" / "etcd").is_dir()  # the data stays
    assert all(m["supervisord"] == "stopped" for m in etcd_demo.status()["members"])


def test_a_fatal_critical_program_stops_supervisord_with_a_marker(tmp_path: Path) -> None:
    program = Program("etcd", ["/bin/false"], 10, startsecs=1, startretries=1)
    spec = SupervisorSpec(run_dir=str(tmp_path), programs=[program], log=LogTarget.files(tmp_path), user=None)
    conf = tmp_path / "supervisord.conf"
    conf.write_text(render_supervisord_conf(spec))
    env = {"PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    child = subprocess.Popen([sys.executable, "-m", "supervisor.supervisord", "-c", str(conf)], env=env)
    try:
        assert child.wait(timeout=60) == 0  # supervisord exits 0: hence the marker
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert (tmp_path / FATAL_MARKER).read_text().startswith("etcd FATAL")


def _primary_of(status: dict[str, Any]) -> str | None:
    found = [m["name"] for m in status["members"] if m["role"] == "primary" and m["state"] == "running"]
    return found[0] if len(found) == 1 else None


def _full_stack_missing() -> str | None:
    for module in ("appliance.manager.main", "appliance.api.server"):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            return f"the full demo needs {module}, which does not import yet: {exc}"
    return None


@pytest.mark.skipif(_full_stack_missing() is not None, reason=str(_full_stack_missing()))
def test_full_demo_up_failover_and_down() -> None:
    psycopg = pytest.importorskip("psycopg")
    with demo_cluster(timeout=240) as cluster:
        first = cluster.primary()
        assert first is not None
        with psycopg.connect(cluster.dsn("primary"), connect_timeout=5) as conn:
            assert conn.execute("select pg_is_in_recovery()").fetchone() == (False,)
            conn.execute("create table if not exists demo_t(x int)")
            conn.execute("insert into demo_t values (1)")
        cluster.wait_for(lambda s: all(m["lag"] == 0 for m in s["members"]), timeout=30)
        with psycopg.connect(cluster.dsn("replicas"), connect_timeout=5) as conn:
            assert conn.execute("select pg_is_in_recovery()").fetchone() == (True,)
        cluster.kill(first)
        cluster.wait_for(lambda s: _primary_of(s) not in (None, first), timeout=120)
        cluster.start(first)
        status = cluster.wait_healthy(timeout=180)
        assert {m["name"]: m["role"] for m in status["members"]}[first] == "replica"
        with psycopg.connect(cluster.dsn("primary"), connect_timeout=5) as conn:
            assert conn.execute("select count(*) from demo_t").fetchone() == (1,)
