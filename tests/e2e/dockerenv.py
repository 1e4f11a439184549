"""A compose project of the appliance for e2e tests: build, up, faults, and what the cluster says.

Everything goes through the docker CLI (and ``docker compose`` or ``docker-compose``); the host
talks to each container directly on the project's bridge network (its IP), so that every node's
HAProxy and REST API can be reached and only node1 needs published ports.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from appliance.net.http import Client, request
from appliance.runtime.cluster_health import fetch_stats, problems

REPO = Path(__file__).resolve().parents[2]
NODES = ("node1", "node2", "node3")
PSQL = "/usr/lib/postgresql/15/bin/psql"
T = TypeVar("T")
Completed = subprocess.CompletedProcess[str]


def docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode == 0


def compose_command() -> list[str]:
    if subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise RuntimeError("neither 'docker compose' nor 'docker-compose' is installed")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(args: Sequence[str], timeout: float = 120, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, **kw)
    if check and result.returncode != 0:
        output = result.stdout[-2000:] + result.stderr[-2000:]
        raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}): {output}")
    return result


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, interval: float = 0.5,
             detail: Callable[[], str] = lambda: "") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}. {detail()}")
        time.sleep(interval)


class Project:
    """One compose project (unique name) built from compose.yaml plus a test override."""

    def __init__(self, name: str, workdir: Path, image: str, password: str, dbname: str) -> None:
        self.name = name
        self.workdir = workdir
        self.image = image
        self.password = password
        self.dbname = dbname
        self.compose = compose_command()
        self.ports = {k: free_port() for k in ("RW", "RO", "STATS", "API")}
        self.env = {**os.environ, "PGAPPLIANCE_IMAGE": image, "PGAPPLIANCE_SECRETS": str(workdir / "secrets"),
                    "PGAPPLIANCE_SCOPE": "e2e", "PGAPPLIANCE_ETCD_TOKEN": f"{name}-etcd",
                    **{f"PGAPPLIANCE_PORT_{k}": str(v) for k, v in self.ports.items()}}

    @property
    def secrets(self) -> Path:
        return self.workdir / "secrets"

    def secret(self, name: str) -> str:
        return (self.secrets / name).read_text().strip()

    @property
    def ca_file(self) -> str:
        return str(self.secrets / "ca.crt")

    def client(self, authenticate: bool = True) -> Client:
        """Trusts the cluster CA; the operator's REST API credentials unless ``authenticate`` is off."""
        if not authenticate:
            return Client(cafile=self.ca_file)
        return Client(cafile=self.ca_file, username="appliance", password=self.secret("restapi_password"))

    @property
    def network(self) -> str:
        return f"{self.name}_default"

    def volume(self, node: str) -> str:
        return f"{self.name}_{node}-data"

    def run_compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        files = ["-f", str(REPO / "compose.yaml"), "-f", str(self.workdir / "override.yaml")]
        return run([*self.compose, "-p", self.name, *files, *args], timeout=timeout, env=self.env, cwd=str(REPO))

    # -- containers --------------------------------------------------------------------------------

    def cid(self, node: str) -> str:
        out = run(["docker", "ps", "-a", "-q", "--filter", f"label=com.docker.compose.project={self.name}",
                   "--filter", f"label=com.docker.compose.service={node}"]).stdout.split()
        if not out:
            raise AssertionError(f"no container for {node} in project {self.name}")
        return out[0]

    def inspect(self, node: str) -> dict[str, Any]:
        return dict(json.loads(run(["docker", "inspect", self.cid(node)]).stdout)[0])

    def ip(self, node: str) -> str | None:
        networks = self.inspect(node)["NetworkSettings"]["Networks"]
        address = (networks.get(self.network) or {}).get("IPAddress")
        return address or None

    def docker(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["docker", *args], timeout=timeout, check=check)

    def psql(self, node: str, sql: str, timeout: float = 20, dbname: str | None = None) -> Completed:
        """psql inside the container through the local socket (works while it is cut off)."""
        command = [PSQL, "-h", "/run/pgappliance/pgsocket", "-U", "postgres", "-d", dbname or self.dbname, "-Atc", sql]
        return run(["docker", "exec", self.cid(node), "timeout", str(int(timeout)), *command], timeout=timeout + 30,
                   check=False)

    def logs(self, node: str, tail: int = 60) -> str:
        try:
            result = run(["docker", "logs", "--tail", str(tail), self.cid(node)], timeout=30, check=False)
        except (AssertionError, RuntimeError, subprocess.TimeoutExpired) as exc:
            return f"(no logs: {exc})"
        return result.stdout + result.stderr

    # -- what the cluster says ---------------------------------------------------------------------

    def api(self, node: str, path: str, timeout: float = 2.0) -> dict[str, Any] | None:
        ip = self.ip(node)
        if ip is None:
            return None
        try:
            doc = request(f"https://{ip}:8008{path}", self.client(), timeout=timeout).json()
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    def cluster(self, nodes: Sequence[str] = NODES) -> dict[str, Any] | None:
        for node in nodes:
            doc = self.api(node, "/cluster")
            if doc and doc.get("members"):
                return doc
        return None

    def leader(self, nodes: Sequence[str] = NODES) -> str | None:
        doc = self.cluster(nodes)
        names = [m["name"] for m in (doc or {}).get("members", []) if m.get("role") == "leader"]
        return names[0] if len(names) == 1 else None

    def health_problems(self) -> list[str]:
        proxies = {}
        for node in NODES:
            ip = self.ip(node)
            proxies[node] = fetch_stats(ip) if ip else None
        return problems(self.cluster(), proxies, expect=len(NODES))

    def wait_healthy(self, timeout: float = 240) -> float:
        start = time.monotonic()
        wait_for("a healthy cluster (one running leader, two streaming replicas, HAProxy routing right)",
                 lambda: not self.health_problems(), timeout, 1.0, lambda: "; ".join(self.health_problems()))
        return time.monotonic() - start

    def sync_standby(self) -> str | None:
        names = [m["name"] for m in (self.cluster() or {}).get("members", []) if m.get("role") == "sync_standby"]
        return names[0] if len(names) == 1 else None

    def wait_settled(self, timeout: float = 240, stable: float = 6.0) -> None:
        """Healthy, and the synchronous standby named in the sync key unchanged for ``stable`` s.

        The primary may still move the sync key to another standby right after a replica (re)joins,
        through an empty key: a fault injected in that window finds no eligible candidate. Faults
        are injected on a settled cluster."""
        deadline = time.monotonic() + timeout
        self.wait_healthy(timeout)
        seen: tuple[str | None, float] = (None, time.monotonic())
        while time.monotonic() < deadline:
            name = self.sync_standby()
            if name != seen[0]:
                seen = (name, time.monotonic())
            elif name is not None and time.monotonic() - seen[1] >= stable and not self.health_problems():
                return
            time.sleep(0.5)
        raise AssertionError(f"the sync standby did not settle within {timeout:.0f} s: {self.cluster()}")

    def connect(self, node: str, port: int = 5000, timeout: int = 3,
                dbname: str | None = None) -> psycopg.Connection[Any]:
        ip = self.ip(node)
        if ip is None:
            raise psycopg.OperationalError(f"{node} has no address on {self.network}")
        # Through HAProxy (TLS passes through) the certificate is whichever node's it routes to: the
        # CA is verified there; straight to a node, its name too.
        return psycopg.connect(host=ip, port=port, user="postgres", password=self.password,
                               dbname=dbname or self.dbname, connect_timeout=timeout, autocommit=True,
                               sslmode="verify-full" if port == 5432 else "verify-ca", sslrootcert=self.ca_file)

    def query(self, node: str, sql: str, port: int = 5000, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.connect(node, port) as conn:
            return list(conn.execute(sql, params).fetchall())
