"""A fresh demo cluster tried as an attacker on the same network would: every channel refuses the
anonymous, the plaintext and the foreign; no secret shows anywhere; Patroni's tools keep working
over TLS; a node certificate and the REST password rotate on a running cluster."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from appliance.demo import procs
from appliance.demo.cluster import DemoCluster
from appliance.demo.layout import node_tls
from appliance.net.http import Client, request
from appliance.tls import pki
from tests.integration.ha_helpers import healthy, read_view, sql, wait_until
from tests.support.cluster import demo_cluster, free_port

pytestmark = pytest.mark.integration

PATRONI_VENV = Path(os.environ.get("PATRONI_VENV", "/opt/patroni-venv"))


@pytest.fixture(scope="module")
def cluster() -> Iterator[DemoCluster]:
    with demo_cluster(timeout=240) as c:
        wait_until("a healthy cluster", lambda: healthy(c), 60)
        yield c


def url(cluster: DemoCluster, node: str, path: str) -> str:
    return f"https://{cluster.layout.host(node)}:8008{path}"


def intents_queued(cluster: DemoCluster) -> list[str]:
    return [str(p) for n in cluster.nodes for p in (cluster.layout.run_dir(n) / "intents").glob("*.json")]


UNSAFE = [
    ("POST", "/switchover", {"leader": "node1", "candidate": "node2"}),
    ("POST", "/failover", {"candidate": "node2"}),
    ("DELETE", "/switchover", None),
    ("PATCH", "/config", {"postgresql": {"parameters": {"archive_command": "id > /tmp/pwned"}}}),
    ("PUT", "/config", {"ttl": 30, "loop_wait": 10, "retry_timeout": 10}),
    ("POST", "/restart", {}),
    ("POST", "/reinitialize", {"force": True}),
    ("POST", "/reload", None),
    ("DELETE", "/restart", None),
]


@pytest.mark.parametrize("who", ["anonymous", "wrong password", "wrong user"])
def test_unsafe_requests_without_the_credentials_change_nothing(cluster: DemoCluster, who: str) -> None:
    before = read_view(cluster)
    ca = cluster.secrets.ca_file
    client = {"anonymous": Client(cafile=ca), "wrong password": Client(cafile=ca, username="appliance", password="x"),
              "wrong user": Client(cafile=ca, username="admin", password=cluster.secrets.restapi_password)}[who]
    for node in cluster.nodes:
        for method, path, body in UNSAFE:
            answer = request(url(cluster, node, path), client, method=method, body=body, timeout=10)
            assert answer.status == 401, (node, method, path, answer.status, answer.body)
            assert answer.headers.get("WWW-Authenticate") == 'Basic realm="Patroni"'
    after = read_view(cluster)
    assert after.config == before.config and after.config_revision == before.config_revision
    assert after.leader_name == before.leader_name and after.failover == before.failover
    assert intents_queued(cluster) == []
    assert not Path("/tmp/pwned").exists()
    # Health and status stay readable without credentials: load balancers hold no secret.
    assert request(url(cluster, "node1", "/health"), Client(cafile=ca)).status == 200
    assert request(url(cluster, "node1", "/cluster"), Client(cafile=ca)).status == 200


def test_plain_http_and_unverified_clients_get_nothing(cluster: DemoCluster) -> None:
    with pytest.raises(OSError):
        request(f"http://{cluster.layout.host('node1')}:8008/patroni", timeout=3)
    with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):
        request(url(cluster, "node1", "/patroni"), Client(), timeout=3)  # the system CAs do not know ours


def _pg(cluster: DemoCluster, node: str, **kw: Any) -> psycopg.Connection[Any]:
    return psycopg.connect(host=cluster.layout.host(node), port=5432, user="postgres", dbname="postgres",
                           password=cluster.secrets.superuser_password, connect_timeout=3, autocommit=True, **kw)


def test_postgres_accepts_tls_only_and_replicates_over_tls(cluster: DemoCluster) -> None:
    primary = healthy(cluster)
    assert primary is not None
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        _pg(cluster, primary, sslmode="disable")
    with _pg(cluster, primary, sslmode="verify-full", sslrootcert=cluster.secrets.ca_file) as conn:
        rows = conn.execute("SELECT s.ssl, s.version FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
                            "WHERE a.backend_type = 'walsender'").fetchall()
        mine = conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
    assert len(rows) == len(cluster.nodes) - 1 and all(r[0] for r in rows), rows
    assert mine == (True,)
    # A certificate from another CA, or a name it does not carry, is refused by libpq.
    other = Path(cluster.dir / "other-ca.crt")
    other.write_bytes(pki.generate_ca("impostor").cert_pem)
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        _pg(cluster, primary, sslmode="verify-full", sslrootcert=str(other))
    with pytest.raises(psycopg.OperationalError, match="does not match host name"):
        psycopg.connect(host="impostor.example", hostaddr=cluster.layout.host(primary), port=5432, user="postgres",
                        password=cluster.secrets.superuser_password, sslmode="verify-full",
                        sslrootcert=cluster.secrets.ca_file, connect_timeout=3)
    # Through HAProxy, TLS passes through to the primary.
    assert sql(cluster.dsn("primary"), "SELECT NOT pg_is_in_recovery()") == [(True,)]


def _all_secrets(cluster: DemoCluster) -> dict[str, str]:
    s = cluster.secrets
    found = {"superuser": s.superuser_password, "replication": s.replication_password, "restapi": s.restapi_password,
             "etcd": s.etcd_password, "etcd root": s.etcd_root_password}
    keys = [Path(s.ca_key_file), *(cluster.layout.tls_dir(n) / "node.key" for n in cluster.nodes)]
    for key in keys:
        # Any line of a private key's base64 body is as secret as the key.
        body = [line for line in key.read_text().splitlines() if line and not line.startswith("-----")]
        found[f"key {key}"] = body[0]
    return found


def _demo_pids(cluster: DemoCluster) -> list[int]:
    pids: list[int] = []
    for node in cluster.nodes:
        supervisord = cluster.supervisord_pid(node)
        if supervisord is not None:
            pids += [supervisord, *procs.descendants(supervisord)]
        postmaster = procs.postmaster_pid(cluster.layout.data_dir(node))
        if postmaster is not None:
            pids += [postmaster, *procs.descendants(postmaster)]
    return sorted(set(pids))


def test_no_secret_in_argv_environment_logs_state_or_answers(cluster: DemoCluster) -> None:
    secrets = _all_secrets(cluster)
    places: dict[str, str] = {"ps -eo args": subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True,
                                                            check=True).stdout}
    pids = _demo_pids(cluster)
    assert len(pids) > 10  # supervisords, etcd, managers, APIs, postmasters and their children
    for pid in pids:
        try:
            places[f"/proc/{pid}/environ ({' '.join(procs.cmdline(pid))[:60]})"] = \
                Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
    for path in cluster.dir.rglob("*"):
        if path.is_file() and (path.suffix == ".log" or path.name in ("state.json", "supervisord.conf",
                                                                        "postgresql.appliance.conf", "haproxy.cfg")):
            places[str(path)] = path.read_text(errors="replace")
    client = cluster.api_client()
    for route in ("/patroni", "/cluster", "/config", "/history", "/events", "/metrics", "/openapi.json", "/primary"):
        places[f"GET {route}"] = request(url(cluster, "node1", route), client).body.decode()
    leaks = [(what, where) for what, value in secrets.items() for where, text in places.items() if value in text]
    assert leaks == []


def test_pgappliance_insecure_is_zero_for_every_channel(cluster: DemoCluster) -> None:
    text = request(url(cluster, "node2", "/metrics"), Client(cafile=cluster.secrets.ca_file)).body.decode()
    lines = [line for line in text.splitlines() if line.startswith("pgappliance_insecure{")]
    assert len(lines) == 5 and all(line.endswith(" 0.0") for line in lines), lines
    doc = request(url(cluster, "node2", "/patroni"), Client(cafile=cluster.secrets.ca_file)).json()
    assert doc["insecure_channels"] == []


@pytest.mark.skipif(not (PATRONI_VENV / "bin" / "check_patroni").exists() and shutil.which("pip") is None,
                    reason="check_patroni cannot be installed")
def test_check_patroni_passes_its_cluster_checks_over_tls(cluster: DemoCluster) -> None:
    tool = PATRONI_VENV / "bin" / "check_patroni"
    if not tool.exists():
        pip = subprocess.run([str(PATRONI_VENV / "bin" / "pip"), "install", "-q", "check-patroni"],
                             capture_output=True, text=True, timeout=600, check=False)
        if pip.returncode != 0:
            pytest.skip(f"cannot install check_patroni: {pip.stderr.strip()[-300:]}")
    endpoints = ",".join(url(cluster, n, "") for n in cluster.nodes)
    for check in (["cluster_has_leader"], ["cluster_node_count", "--warning", "3:", "--critical", "3:"],
                  ["cluster_is_in_maintenance"]):
        done = subprocess.run([str(tool), "-e", endpoints, "--ca_file", cluster.secrets.ca_file, *check],
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
    unverified = subprocess.run([str(tool), "-e", endpoints, "cluster_has_leader"], capture_output=True, text=True,
                                timeout=60, check=False)
    assert unverified.returncode != 0  # without the CA it cannot trust the nodes


PATRONI_HAPROXY = """\
global
    maxconn 100
defaults
    mode tcp
    retries 2
    timeout client 30m
    timeout connect 4s
    timeout server 30m
    timeout check 5s
listen batman
    bind 127.0.0.1:{port}
    option httpchk
    http-check expect status 200
    default-server inter 1s fall 3 rise 2 on-marked-down shutdown-sessions
{servers}
"""


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_patronis_documented_haproxy_config_with_check_ssl_routes_to_the_primary(cluster: DemoCluster,
                                                                                  tmp_path: Path) -> None:
    port = free_port()
    servers = "\n".join(f"    server {n} {cluster.layout.host(n)}:5432 maxconn 100 check port 8008 check-ssl verify "
                        f"required ca-file {cluster.secrets.ca_file}" for n in cluster.nodes)
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(PATRONI_HAPROXY.format(port=port, servers=servers))
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        dsn = (f"host=127.0.0.1 port={port} user=postgres dbname=postgres password={cluster.secrets.superuser_password}"
               f" sslmode=verify-full sslrootcert={cluster.secrets.ca_file} connect_timeout=2")
        # HAProxy starts with every server up until its checks say otherwise (rise 2, inter 3s):
        # wait for the checks to settle, then every connection must land on the primary.
        wait_until("HAProxy routing to the primary",
                   lambda: sql(dsn, "SELECT NOT pg_is_in_recovery()") == [(True,)], 30)
        time.sleep(7)  # two more check rounds
        assert all(sql(dsn, "SELECT NOT pg_is_in_recovery()") == [(True,)] for _ in range(5))
    finally:
        proc.terminate()
        proc.wait(10)


def _served_serial(host: str, port: int, ca: str, postgres: bool = False, client: tuple[str, str] | None = None) -> int:
    """The serial of the certificate a server presents (PostgreSQL after its SSLRequest)."""
    from cryptography import x509

    context = ssl.create_default_context(cafile=ca)
    if client:
        context.load_cert_chain(*client)
    with socket.create_connection((host, port), timeout=3) as raw:
        if postgres:
            raw.sendall((8).to_bytes(4, "big") + (80877103).to_bytes(4, "big"))
            assert raw.recv(1) == b"S"
        with context.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return int(x509.load_der_x509_certificate(der).serial_number)


def test_node_certificate_and_rest_password_rotate_without_a_restart(cluster: DemoCluster) -> None:
    node, host, ca = "node3", cluster.layout.host("node3"), cluster.secrets.ca_file
    api_pid = [p for p in _demo_pids(cluster) if "api" in procs.cmdline(p)]
    operator = (str(cluster.layout.client_dir / "node.crt"), str(cluster.layout.client_dir / "node.key"))
    old_serial = _served_serial(host, 8008, ca)
    assert _served_serial(host, 5432, ca, postgres=True) == old_serial
    (cluster.layout.tls_dir(node) / "node.crt").unlink()  # due: the next issue makes a new one in place
    new = node_tls(cluster.layout, node, cluster.secrets, cluster.user)
    new_serial = int(pki.load_certificate(pki.read_file(new.cert_file)).serial_number)
    wait_until("the API serving the new certificate", lambda: _served_serial(host, 8008, ca) == new_serial, 20)
    # etcd loads its certificate at every new handshake; PostgreSQL at the reload the manager does.
    assert _served_serial(host, 2379, ca, client=operator) == new_serial
    assert request(url(cluster, node, "/reload"), cluster.api_client(), method="POST").status == 202
    wait_until("PostgreSQL serving the new certificate",
               lambda: _served_serial(host, 5432, ca, postgres=True) == new_serial, 20)
    assert [p for p in _demo_pids(cluster) if "api" in procs.cmdline(p)] == api_pid  # no restart
    # The REST password: changed in the node's configuration, in force within seconds.
    path = cluster.layout.config_path(node)
    doc = yaml.safe_load(path.read_text())
    doc["restapi"]["authentication"]["password"] = "rotated-secret-1"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    rotated = Client(cafile=ca, username="appliance", password="rotated-secret-1")

    def takes_new() -> bool:
        return request(url(cluster, node, "/reload"), rotated, method="POST").status == 202

    wait_until("the new REST password", takes_new, 20)
    assert request(url(cluster, node, "/reload"), cluster.api_client(), method="POST").status == 401
    assert healthy(cluster) is not None
    time.sleep(1)
