"""The operator CLI (`appliance list/switchover/edit-config/...`) as a subprocess against one real demo cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from appliance.demo.cluster import DemoCluster
from tests.integration.ha_helpers import healthy, wait_until
from tests.support.cluster import demo_cluster, free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster() -> Iterator[DemoCluster]:
    with demo_cluster(timeout=240) as c:
        yield c


def run(*args: str, stdin: str | None = None, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    return subprocess.run([sys.executable, "-m", "appliance", *args], input=stdin, capture_output=True, text=True,
                          timeout=timeout, env=env, check=False)


def ctl(cluster: DemoCluster, *args: str, node: str = "node1", **kw: object) -> subprocess.CompletedProcess[str]:
    """A command run "inside" a node: only its config file is given."""
    return run(*args, "--config", str(cluster.layout.config_path(node)), **kw)  # type: ignore[arg-type]


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"rc={result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return result.stdout


def members(cluster: DemoCluster, node: str = "node1") -> list[dict[str, Any]]:
    return list(json.loads(ok(ctl(cluster, "list", "-f", "json", node=node))))


def leader(cluster: DemoCluster) -> str:
    found = [m["Member"] for m in members(cluster) if m["Role"] == "Leader"]
    assert len(found) == 1, found
    return str(found[0])


def test_list_json_shows_three_members_and_one_leader(cluster: DemoCluster) -> None:
    wait_until("a healthy cluster", lambda: healthy(cluster), 60)
    items = members(cluster, node="node2")
    assert sorted(m["Member"] for m in items) == ["node1", "node2", "node3"]
    assert [m["Role"] for m in items].count("Leader") == 1
    assert all(m["Cluster"] == "demo" for m in items)
    assert {m["State"] for m in items if m["Role"] != "Leader"} <= {"streaming", "running"}


def test_list_pretty_and_topology_and_dsn(cluster: DemoCluster) -> None:
    text = ok(ctl(cluster, "list"))
    assert text.splitlines()[0].startswith("+ Cluster: demo (")
    assert "| Member | Host" in text
    topo = ok(ctl(cluster, "topology"))
    assert topo.count("| + node") == 2
    primary = leader(cluster)
    assert ok(ctl(cluster, "dsn")).strip() == f"host={cluster.layout.host(primary)} port=5432"


def test_from_outside_with_a_client_config_or_url(cluster: DemoCluster) -> None:
    client = str(cluster.client_config)
    items = json.loads(ok(run("list", "--config", client, "-f", "json")))
    assert len(items) == 3
    assert len(json.loads(ok(run("list", "demo", "--config", client, "-f", "json")))) == 3
    url = f"https://{cluster.layout.host('node3')}:8008"
    ca = cluster.secrets.ca_file
    assert len(json.loads(ok(run("list", "--url", url, "--cacert", ca, "-f", "json")))) == 3
    # Without the CA the node's certificate cannot be verified: refused, not silently trusted.
    refused = run("list", "--url", url, "-f", "json")
    assert refused.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in refused.stderr


def test_etcd_without_a_client_certificate_is_refused_clearly(cluster: DemoCluster) -> None:
    hosts = ",".join(cluster.layout.etcd_hosts())
    result = run("list", "--dcs", hosts, "--scope", "demo", timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "etcd unreachable" in result.stderr and "TLS" in result.stderr


def test_show_config_and_provenance(cluster: DemoCluster) -> None:
    text = ok(ctl(cluster, "show-config"))
    assert "ttl: 5" in text and "loop_wait: 1" in text
    prov = ok(ctl(cluster, "show-config", "--provenance", node="node2"))
    lines = prov.splitlines()
    assert lines[0].split() == ["KEY", "VALUE", "SOURCE"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert f"file {cluster.layout.config_path('node2')}:" in rows["name"]
    assert rows["ttl"].rstrip().endswith("dcs config")
    assert "******" in rows["postgresql.authentication.superuser.password"]


def test_edit_config_set_and_pg_param_visible_in_show_config(cluster: DemoCluster) -> None:
    result = ok(ctl(cluster, "edit-config", "-s", "maximum_lag_on_failover=2097152", "-p", "work_mem=16MB",
                    "--force"))
    assert "+maximum_lag_on_failover: 2097152" in result
    assert "Configuration changed" in result
    text = ok(ctl(cluster, "show-config", node="node3"))
    assert "maximum_lag_on_failover: 2097152" in text and "work_mem: 16MB" in text
    ok(ctl(cluster, "edit-config", "-p", "work_mem=null", "-q", "--force"))
    assert "work_mem" not in ok(ctl(cluster, "show-config"))


def test_edit_config_refuses_invalid_values_naming_the_field(cluster: DemoCluster) -> None:
    result = ctl(cluster, "edit-config", "-p", "max_connections=10", "--force")
    assert result.returncode == 1
    assert "max_connections" in result.stderr and "at least 25" in result.stderr
    assert "Traceback" not in result.stderr
    declined = ctl(cluster, "edit-config", "-s", "maximum_lag_on_failover=1", stdin="n\n")
    assert declined.returncode == 1 and "Apply these changes?" in declined.stdout
    assert "maximum_lag_on_failover: 2097152" in ok(ctl(cluster, "show-config"))


def test_pause_and_resume_show_in_the_list_footer(cluster: DemoCluster) -> None:
    assert "Success: cluster management is paused" in ok(ctl(cluster, "pause", "--wait"))
    assert "Maintenance mode: on" in ok(ctl(cluster, "list", node="node3"))
    again = ctl(cluster, "pause")
    assert again.returncode == 1 and "already paused" in again.stderr
    assert "Success: cluster management is resumed" in ok(ctl(cluster, "resume", "--wait"))
    assert "Maintenance mode" not in ok(ctl(cluster, "list"))


def test_switchover_to_a_candidate_then_history(cluster: DemoCluster) -> None:
    before = leader(cluster)
    candidate = "node3" if before != "node3" else "node2"
    out = ok(ctl(cluster, "switchover", "--candidate", candidate, "--force", node="node2"))
    assert "Current cluster topology" in out
    assert f'Successfully switched over to "{candidate}"' in out
    wait_until("the new leader in the list", lambda: leader(cluster) == candidate, 30)
    wait_until("a healthy cluster again", lambda: healthy(cluster) == candidate, 90)
    history = json.loads(ok(ctl(cluster, "history", "-f", "json")))
    assert history and history[-1]["New Leader"] == candidate


def test_switchover_prompts_like_patronictl_and_can_be_declined(cluster: DemoCluster) -> None:
    current = leader(cluster)
    result = ctl(cluster, "switchover", stdin="\n\n\nn\n")
    assert result.returncode == 1
    assert f"Primary [{current}]: " in result.stdout
    assert "Candidate ['" in result.stdout and "] []: " in result.stdout
    assert "When should the switchover take place (e.g. " in result.stdout and " )  [now]: " in result.stdout
    assert f"Are you sure you want to switchover cluster demo, demoting current leader {current}? [y/N]: " \
        in result.stdout
    assert leader(cluster) == current


def test_unreachable_dcs_is_a_clear_one_line_error() -> None:
    dead = f"127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    result = run("list", "--dcs", dead, "--scope", "demo", timeout=60)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith("Error: etcd unreachable at 127.0.0.1:") and dead.split(",")[1] in lines[0]


def test_unknown_cluster_and_unreachable_api_are_clear(cluster: DemoCluster) -> None:
    result = run("list", "--config", str(cluster.client_config), "--scope", "nosuch")
    # The operator's etcd user is limited to the demo's keys: another cluster is not even readable.
    assert result.returncode == 1 and "etcd denied access to cluster 'nosuch'" in result.stderr
    dead = run("list", "--url", f"http://127.0.0.1:{free_port()}")
    assert dead.returncode == 1 and "cannot reach the REST API at http://127.0.0.1:" in dead.stderr
