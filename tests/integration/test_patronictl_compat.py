"""The real patronictl (Patroni 4.1 from PyPI, in its own venv) against our cluster: list, switchover, config.

The venv is built once in /opt/patroni-venv (skipped when it is already there); when Patroni cannot be
installed (no network, incompatible), the module is skipped with pip's reason.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from appliance.demo.cluster import DemoCluster
from tests.integration.ha_helpers import healthy, read_view, wait_until
from tests.support.cluster import demo_cluster

pytestmark = pytest.mark.integration

VENV = Path(os.environ.get("PATRONI_VENV", "/opt/patroni-venv"))
PATRONICTL = VENV / "bin" / "patronictl"
PACKAGES = ['patroni[etcd3,psycopg3]==4.1.*', "psycopg2-binary"]


def _install() -> str | None:
    """Create the venv and install Patroni; None on success, else why not."""
    steps = [["/usr/bin/python3", "-m", "venv", str(VENV)], [str(VENV / "bin" / "pip"), "install", "-q", *PACKAGES]]
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, timeout=600, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{' '.join(step[:3])}: {exc}"
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            return f"{' '.join(step[:3])} failed: {' '.join(tail)}"
    return None


@pytest.fixture(scope="module")
def patronictl() -> str:
    if not PATRONICTL.exists():
        why = _install()
        if why is not None or not PATRONICTL.exists():
            pytest.skip(f"cannot install Patroni into {VENV}: {why}")
    version = subprocess.run([str(PATRONICTL), "version"], capture_output=True, text=True, timeout=60, check=False)
    if version.returncode != 0:
        pytest.skip(f"patronictl does not run: {version.stderr.strip()[-300:]}")
    return str(PATRONICTL)


@pytest.fixture(scope="module")
def cluster(patronictl: str) -> Iterator[DemoCluster]:
    with demo_cluster(timeout=240) as c:
        yield c


@pytest.fixture(scope="module")
def ctl_config(cluster: DemoCluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Patroni's own keys for a secure cluster: etcd3 over TLS with a client certificate and the
    appliance user, ctl.cacert for the REST API's certificates, restapi.authentication for changes."""
    client = yaml.safe_load(cluster.client_config.read_text())
    etcd3 = dict(client["etcd3"], hosts=",".join(cluster.layout.etcd_hosts()))
    doc = {"scope": "demo", "namespace": "/service/", "etcd3": etcd3, "ctl": client["ctl"],
           "restapi": client["restapi"]}
    path = tmp_path_factory.mktemp("patronictl") / "patronictl.yml"
    path.write_text(yaml.safe_dump(doc))
    path.chmod(0o600)
    return str(path)


def pctl(patronictl: str, config: str, *args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PATRONI", "APPLIANCE_"))}
    return subprocess.run([patronictl, "-c", config, *args], capture_output=True, text=True, timeout=timeout,
                          env=env, check=False)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"rc={result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result.stdout


def listed(patronictl: str, config: str) -> list[dict[str, Any]]:
    return list(json.loads(ok(pctl(patronictl, config, "list", "-f", "json"))))


def test_patronictl_list_shows_our_members(cluster: DemoCluster, patronictl: str, ctl_config: str) -> None:
    primary = wait_until("a healthy cluster", lambda: healthy(cluster), 60)
    view = read_view(cluster)

    def both_streaming() -> list[dict[str, Any]] | None:
        found = listed(patronictl, ctl_config)
        return found if sum(m.get("State") == "streaming" for m in found) == 2 else None

    items = wait_until("both replicas streaming", both_streaming, 30)
    by_name = {str(m["Member"]): m for m in items}
    assert sorted(by_name) == ["node1", "node2", "node3"]
    assert by_name[primary]["Role"] == "Leader" and by_name[primary]["State"] == "running"
    for name, m in by_name.items():
        assert m["Cluster"] == "demo"
        assert m["Host"] == cluster.layout.host(name)
        member = view.member(name)
        assert member is not None and m["TL"] == member.timeline
        if name != primary:
            assert m["Role"] == "Replica" and m["State"] == "streaming"
            assert isinstance(m["Receive LSN"], str) and "/" in m["Receive LSN"]
    pretty = ok(pctl(patronictl, ctl_config, "list"))
    assert f"Cluster: demo ({view.initialize})" in pretty


def test_patronictl_reads_config_and_history(cluster: DemoCluster, patronictl: str, ctl_config: str) -> None:
    config = yaml.safe_load(ok(pctl(patronictl, ctl_config, "show-config")))
    assert config == read_view(cluster).config
    ok(pctl(patronictl, ctl_config, "history"))


def test_patronictl_pause_and_resume_through_our_api(cluster: DemoCluster, patronictl: str, ctl_config: str) -> None:
    assert "Success: cluster management is paused" in ok(pctl(patronictl, ctl_config, "pause"))
    assert "Maintenance mode: on" in ok(pctl(patronictl, ctl_config, "list"))
    assert (read_view(cluster).config or {}).get("pause") is True
    assert "Success: cluster management is resumed" in ok(pctl(patronictl, ctl_config, "resume"))
    assert not (read_view(cluster).config or {}).get("pause")


def test_patronictl_switchover_is_carried_out_by_our_managers(cluster: DemoCluster, patronictl: str,
                                                              ctl_config: str) -> None:
    old = wait_until("a healthy cluster", lambda: healthy(cluster), 60)
    candidate = "node2" if old != "node2" else "node3"
    out = ok(pctl(patronictl, ctl_config, "switchover", "--leader", old, "--candidate", candidate, "--force"))
    assert "falling back to DCS" not in out, out  # our REST API answered the request itself
    assert f'Successfully switched over to "{candidate}"' in out, out
    wait_until("the candidate leading", lambda: read_view(cluster).leader_name == candidate, 30)
    wait_until("the old leader back as a replica", lambda: healthy(cluster) == candidate, 90)
    items = listed(patronictl, ctl_config)
    assert [m["Member"] for m in items if m["Role"] == "Leader"] == [candidate]
    history = read_view(cluster).history
    assert history and history[-1].new_leader == candidate
