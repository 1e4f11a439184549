"""The control API on real processes: switchover, failover, restart, reinitialize, pause, config; HTTPS + auth."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

from appliance.demo.cluster import DemoCluster
from appliance.net.http import Client, request
from appliance.tls import identity
from tests.integration.ha_helpers import api_get, healthy, read_view, sql, wait_until
from tests.support.cluster import demo_cluster, free_port

pytestmark = pytest.mark.integration

TTL = 5
PG_CTL = "/usr/lib/postgresql/15/bin/pg_ctl"


@pytest.fixture(scope="module")
def cluster() -> Iterator[DemoCluster]:
    with demo_cluster(timeout=240) as c:
        wait_until("a healthy cluster", lambda: healthy(c), 60)
        yield c


def call(url: str, method: str = "GET", body: Any = None, timeout: float = 60,
         client: Client | None = None) -> tuple[int, str]:
    answer = request(url, client, method=method, body=body, timeout=timeout)
    return answer.status, answer.body.decode()


def api(cluster: DemoCluster, node: str, method: str, path: str, body: Any = None,
        timeout: float = 60, auth: bool = True) -> tuple[int, str]:
    """A request to a node's REST API over HTTPS as the demo's operator (``auth=False``: anonymous)."""
    answer = request(f"https://{cluster.layout.host(node)}:8008{path}", cluster.api_client(), method=method,
                     body=body, timeout=timeout, authenticate=auth)
    return answer.status, answer.body.decode()


def err(text: str) -> str:
    """The message of an error answer (every 4xx/5xx is JSON {"error", "field"})."""
    return str(json.loads(text)["error"])


def patroni(cluster: DemoCluster, node: str) -> dict[str, Any]:
    doc = api_get(cluster, node, "/patroni")
    assert isinstance(doc, dict)
    return doc


def streaming_replica(cluster: DemoCluster, node: str) -> bool:
    doc = patroni(cluster, node)
    return (doc.get("role"), doc.get("state"), doc.get("replication_state")) == ("replica", "running", "streaming")


def settled(cluster: DemoCluster, primary: str | None = None) -> str:
    """Wait for one primary and every other node a streaming replica; returns the primary."""

    def check() -> str | None:
        found = healthy(cluster)
        if found is None or (primary is not None and found != primary):
            return None
        others = [n for n in cluster.nodes if n != found]
        return found if all(streaming_replica(cluster, n) for n in others) else None

    return wait_until(f"{primary or 'a primary'} with two streaming replicas", check, 120)


def replicas(cluster: DemoCluster, primary: str) -> list[str]:
    return sorted(n for n in cluster.nodes if n != primary)


# --- switchover and failover ------------------------------------------------------------------------------

def test_immediate_switchover_to_a_named_candidate(cluster: DemoCluster) -> None:
    old = settled(cluster)
    candidate = replicas(cluster, old)[0]
    code, text = api(cluster, old, "POST", "/switchover", {"leader": old, "candidate": candidate})
    assert (code, text) == (200, f'Successfully switched over to "{candidate}"'), text
    assert read_view(cluster).leader_name == candidate
    settled(cluster, candidate)  # the old primary rejoins as a streaming replica
    assert patroni(cluster, old)["role"] == "replica"


def test_refusals_explain_themselves(cluster: DemoCluster) -> None:
    primary = settled(cluster)
    code, text = api(cluster, primary, "POST", "/switchover", {"leader": primary, "candidate": "ghost"})
    assert code == 412 and json.loads(text)["message"] == "candidate does not exists"
    other = replicas(cluster, primary)[0]
    code, text = api(cluster, primary, "POST", "/switchover", {"leader": other})
    assert code == 412 and json.loads(text)["message"] == "leader name does not match"
    code, _ = api(cluster, primary, "POST", "/switchover", {"candidate": other})
    assert code == 400
    assert read_view(cluster).failover is None


def test_scheduled_switchover_happens_at_its_time(cluster: DemoCluster) -> None:
    old = settled(cluster)
    bystander, candidate = replicas(cluster, old)
    # The election ignores the candidate of a *scheduled* failover key once it is due (core/election.py
    # _requested_candidate), so any replica may win the race: keep the bystander out of it.
    res = cluster.supervisorctl(bystander, "stop", "manager")
    assert res.returncode == 0, res.stdout + res.stderr
    at = datetime.now(UTC) + timedelta(seconds=6)
    code, text = api(cluster, old, "POST", "/switchover",
                     {"leader": old, "candidate": candidate, "scheduled_at": at.isoformat()})
    assert (code, text) == (202, "Switchover scheduled")
    scheduled = wait_until("the schedule in /cluster",
                           lambda: api_get(cluster, old, "/cluster").get("scheduled_switchover"), 5)
    assert scheduled["to"] == candidate and scheduled["from"] == old
    time.sleep(max(0.0, (at - datetime.now(UTC)).total_seconds() - 2))
    assert read_view(cluster).leader_name == old, "switched over before its time"
    wait_until(f"{candidate} leading", lambda: read_view(cluster).leader_name == candidate, 30)
    assert datetime.now(UTC) >= at
    assert cluster.supervisorctl(bystander, "start", "manager").returncode == 0
    settled(cluster, candidate)


def test_delete_a_scheduled_switchover(cluster: DemoCluster) -> None:
    primary = settled(cluster)
    at = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert api(cluster, primary, "POST", "/switchover", {"leader": primary, "scheduled_at": at})[0] == 202
    assert api(cluster, primary, "DELETE", "/switchover") == (200, "scheduled switchover deleted")
    code, text = api(cluster, primary, "DELETE", "/switchover")
    assert (code, err(text)) == (404, "no switchover is scheduled")
    assert read_view(cluster).failover is None


def test_failover_to_a_named_member(cluster: DemoCluster) -> None:
    old = settled(cluster)
    target = replicas(cluster, old)[0]
    code, text = api(cluster, target, "POST", "/failover", {"candidate": target})
    assert (code, text) == (200, f'Successfully failed over to "{target}"')
    settled(cluster, target)


# --- configuration ------------------------------------------------------------------------------------------

def test_config_patch_applies_on_every_node(cluster: DemoCluster) -> None:
    primary = settled(cluster)
    code, text = api(cluster, primary, "PATCH", "/config", {"loop_wait": 30})
    assert code == 400 and json.loads(text)["field"] == "ttl"  # the timing rule; nothing written
    code, text = api(cluster, primary, "PATCH", "/config",
                     {"maximum_lag_on_failover": 2097152, "postgresql": {"parameters": {"work_mem": "12MB"}}})
    assert code == 200, text
    other = replicas(cluster, primary)[0]
    code, text = api(cluster, other, "GET", "/config")
    config = json.loads(text)
    assert config["maximum_lag_on_failover"] == 2097152 and config["loop_wait"] == 1
    for node in cluster.nodes:
        wait_until(f"work_mem on {node}", partial(lambda n: sql(cluster.node_dsn(n), "SHOW work_mem")[0][0] == "12MB",
                                                  node), 15)


def test_restart_pending_after_a_restart_requiring_change(cluster: DemoCluster) -> None:
    primary = settled(cluster)
    first, second = replicas(cluster, primary)
    code, text = api(cluster, primary, "PATCH", "/config", {"postgresql": {"parameters": {"max_connections": 120}}})
    assert code == 200, text
    for node in cluster.nodes:
        wait_until(f"pending_restart on {node}",
                   partial(lambda n: patroni(cluster, n).get("pending_restart"), node), 20)
    code, text = api(cluster, first, "POST", "/restart", {"role": "primary"})
    assert code == 503 and err(text).startswith("restart conditions are not satisfied: host role mismatch")
    # Raising a shared-memory setting: replicas first, then the primary.
    for node in (first, second, primary):
        started = patroni(cluster, node)["postmaster_start_time"]
        assert api(cluster, node, "POST", "/restart", {"restart_pending": True}) == (200, "restarted successfully")
        def restarted(n: str = node, s: str = started) -> bool:
            doc = patroni(cluster, n)
            return doc["postmaster_start_time"] != s and not doc.get("pending_restart") and doc["state"] == "running"

        wait_until(f"{node} restarted and no longer pending", restarted, 30)
        assert sql(cluster.node_dsn(node), "SHOW max_connections")[0][0] == "120"
    code, text = api(cluster, first, "POST", "/restart", {"restart_pending": True})
    assert code == 503 and "pending restart flag is not set" in err(text)
    settled(cluster, primary)


# --- reinitialize -------------------------------------------------------------------------------------------

def test_reinitialize_a_replica(cluster: DemoCluster) -> None:
    primary = settled(cluster)
    target = replicas(cluster, primary)[-1]
    code, text = api(cluster, primary, "POST", "/reinitialize")
    assert (code, err(text)) == (503, "I am the leader, can not reinitialize")
    marker = cluster.layout.data_dir(target) / "reinit-marker"
    marker.write_text("wiped by a re-clone\n")
    started = patroni(cluster, target)["postmaster_start_time"]
    assert api(cluster, target, "POST", "/reinitialize", {"force": False}) == (200, "reinitialize started")
    wait_until(f"{target} re-cloned and streaming",
               lambda: not marker.exists() and streaming_replica(cluster, target)
               and patroni(cluster, target)["postmaster_start_time"] != started, 90)
    settled(cluster, primary)


# --- pause -------------------------------------------------------------------------------------------------

def test_no_failover_while_paused(cluster: DemoCluster) -> None:
    primary = settled(cluster)
    assert api(cluster, primary, "PATCH", "/config", {"pause": True})[0] == 200
    for node in cluster.nodes:
        wait_until(f"{node} paused", partial(lambda n: patroni(cluster, n).get("pause") is True, node), 15)
    stop = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    result = subprocess.run([*stop, PG_CTL, "stop", "-m", "immediate", "-D", str(cluster.layout.data_dir(primary))],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    deadline = time.monotonic() + 3 * TTL
    while time.monotonic() < deadline:
        view = read_view(cluster)
        assert view.leader_name == primary, f"leader moved to {view.leader_name} while paused"
        for node in replicas(cluster, primary):
            assert patroni(cluster, node).get("role") != "primary", f"{node} promoted while paused"
        time.sleep(0.5)
    assert api(cluster, primary, "PATCH", "/config", {"pause": None})[0] == 200
    settled(cluster)


# --- HTTPS and Basic auth of a lone API process -------------------------------------------------------------

@pytest.fixture
def tls_api(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`appliance api` alone (no manager, no etcd) over HTTPS with Basic auth and an allowlist; etcd and
    PostgreSQL TLS are turned off on purpose (nothing of them runs here)."""
    identity.init_secrets(tmp_path / "secrets")
    tls, _ = identity.issue_node(str(tmp_path / "secrets" / "ca.crt"), str(tmp_path / "secrets" / "ca.key"),
                                 tmp_path / "tls", dns_names=["localhost"], ip_addresses=["127.0.0.1"])
    port = free_port()
    config = {
        "name": "tls1", "scope": "tls",
        "restapi": {"listen": f"127.0.0.1:{port}", "connect_address": f"127.0.0.1:{port}",
                    "certfile": tls.cert_file, "keyfile": tls.key_file, "allowlist": ["127.0.0.0/8"],
                    "authentication": {"username": "admin", "password": "s3cret"}},
        "etcd3": {"hosts": [f"127.0.0.1:{free_port()}"]},
        "security": {"etcd_tls": False, "etcd_auth": False, "postgresql_tls": False},
        "appliance": {"run_dir": str(tmp_path / "run")},
    }
    cert = Path(tls.ca_file)
    path = tmp_path / "node.yml"
    path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    proc = subprocess.Popen([sys.executable, "-m", "appliance", "api", "--config", str(path)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield f"https://127.0.0.1:{port}", cert
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_https_with_basic_auth(tls_api: tuple[str, Path]) -> None:
    base, cert = tls_api
    trusting = Client(cafile=str(cert))
    code = wait_until("the API over HTTPS", lambda: call(base + "/patroni", client=trusting, timeout=2)[0], 20)
    assert code == 200
    assert call(base + "/reload", "POST", client=trusting)[0] == 401
    code, text = call(base + "/reload", "POST", client=trusting.with_auth("admin", "s3cret"))
    assert code == 503 and "manager" in err(text)  # authenticated; no manager runs here, so nothing is queued
    assert call(base + "/openapi.json", client=trusting)[0] == 200
    with pytest.raises(OSError):  # plain HTTP to the HTTPS port
        call(base.replace("https", "http") + "/patroni", timeout=2)
