"""Is the whole cluster healthy? One running leader, streaming replicas, every HAProxy routing right.

``python -m appliance.runtime.cluster_health --wait 300`` (run inside a node: scripts/up does
``docker compose exec node1 ...``) waits until it is, printing what is still missing; the e2e tests
use :func:`problems` with what they fetch from outside.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from appliance.core.model import ClusterRole, PgState, ReplicationState
from appliance.net.http import Client, request

# HAProxy's "listen" sections (appliance.proxy.haproxy).
PRIMARY_BACKEND = "primary"
LEADER_ROLES = (ClusterRole.LEADER, ClusterRole.STANDBY_LEADER)
REPLICA_BACKEND = "replicas"


def parse_stats_csv(text: str) -> dict[str, dict[str, str]]:
    """HAProxy's ``/;csv`` stats: {backend: {server: status}} (status UP, DOWN, MAINT, ...)."""
    lines = text.lstrip("# ").splitlines()
    out: dict[str, dict[str, str]] = {}
    for row in csv.DictReader(io.StringIO("\n".join(lines))):
        server = row.get("svname", "")
        if server in ("FRONTEND", "BACKEND", ""):
            continue
        out.setdefault(row.get("pxname", ""), {})[server] = (row.get("status") or "").split(" ")[0]
    return out


def _up(stats: Mapping[str, Mapping[str, str]], backend: str) -> set[str]:
    return {server for server, status in stats.get(backend, {}).items() if status == "UP"}


def member_problems(cluster: Mapping[str, Any] | None, expect: int) -> list[str]:
    """What keeps /cluster from one running leader and ``expect - 1`` streaming replicas."""
    if not cluster:
        return ["the REST API does not answer /cluster"]
    members = list(cluster.get("members") or [])
    found: list[str] = []
    if len(members) != expect:
        found.append(f"{len(members)} members, want {expect}: {', '.join(m.get('name', '?') for m in members)}")
    leaders = [m for m in members if m.get("role") in LEADER_ROLES]
    if len(leaders) != 1:
        found.append(f"{len(leaders)} leaders, want 1")
    for m in leaders:
        if m.get("state") != PgState.RUNNING:
            found.append(f"leader {m.get('name')} is {m.get('state')!r}, want 'running'")
    for m in members:
        if m not in leaders and m.get("state") != ReplicationState.STREAMING:
            found.append(f"{m.get('name')}: {m.get('role')} is {m.get('state')!r}, want 'streaming'")
    timelines = {m.get("timeline") for m in members}
    if len(timelines) > 1:
        found.append(f"members on different timelines: {sorted(str(t) for t in timelines)}")
    return found


def routing_problems(cluster: Mapping[str, Any], proxies: Mapping[str, Mapping[str, Mapping[str, str]] | None],
                     names: Mapping[str, str] | None = None) -> list[str]:
    """Every node's HAProxy sends 5000 to the leader only and 5001 to the replicas only.

    ``proxies``: stats by node; ``names``: HAProxy server name by member name (default: the same)."""
    names = names or {}
    members = list(cluster.get("members") or [])
    leader = {names.get(m["name"], m["name"]) for m in members if m.get("role") in LEADER_ROLES}
    replicas = {names.get(m["name"], m["name"]) for m in members} - leader
    found: list[str] = []
    for node, stats in sorted(proxies.items()):
        if stats is None:
            found.append(f"{node}: the HAProxy stats page does not answer")
            continue
        if _up(stats, PRIMARY_BACKEND) != leader:
            found.append(f"{node}: HAProxy routes 5000 to {sorted(_up(stats, PRIMARY_BACKEND))}, want {sorted(leader)}")
        if _up(stats, REPLICA_BACKEND) != replicas:
            found.append(f"{node}: HAProxy routes 5001 to {sorted(_up(stats, REPLICA_BACKEND))}, "
                         f"want {sorted(replicas)}")
    return found


def problems(cluster: Mapping[str, Any] | None, proxies: Mapping[str, Mapping[str, Mapping[str, str]] | None],
             expect: int, names: Mapping[str, str] | None = None) -> list[str]:
    found = member_problems(cluster, expect)
    if found or cluster is None:
        return found
    return routing_problems(cluster, proxies, names)


def _get(url: str, client: Client | None = None, timeout: float = 3.0) -> bytes | None:
    try:
        return request(url, client, timeout=timeout, authenticate=False).body
    except (OSError, ValueError):
        return None


def fetch_cluster(api: str, client: Client | None = None) -> dict[str, Any] | None:
    body = _get(f"{api.rstrip('/')}/cluster", client)
    try:
        doc = json.loads(body) if body else None
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def fetch_stats(host: str, port: int = 7000) -> dict[str, dict[str, str]] | None:
    body = _get(f"http://{host}:{port}/;csv")
    return parse_stats_csv(body.decode()) if body else None


def observe(api: str, expect: int, stats_port: int, client: Client | None = None) -> list[str]:
    cluster = fetch_cluster(api, client)
    hosts = [str(m.get("host")) for m in (cluster or {}).get("members", [])]
    if expect == 1:
        hosts = ["127.0.0.1"]
    proxies = {host: fetch_stats(host, stats_port) for host in hosts}
    # A single node's HAProxy names its only server after the node, not after its host.
    names = {str(m["name"]): str(m["name"]) for m in (cluster or {}).get("members", [])}
    return problems(cluster, proxies, expect, names)


def wait_healthy(check: Callable[[], list[str]], timeout: float, report: Callable[[list[str]], None],
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> bool:
    deadline = clock() + timeout
    last: list[str] = []
    while True:
        found = check()
        if not found:
            return True
        if found != last:
            report(found)
            last = found
        if clock() >= deadline:
            return False
        sleep(1.0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--api", default=None, help="a node's REST API (default: this node's, from its config)")
    parser.add_argument("--members", type=int, default=3, help="how many members the cluster has")
    parser.add_argument("--stats-port", type=int, default=7000)
    parser.add_argument("--wait", type=float, default=0.0, help="seconds to wait for health (0: check once)")
    args = parser.parse_args(argv)

    def report(found: list[str]) -> None:
        print("waiting: " + "; ".join(found), file=sys.stderr, flush=True)

    from appliance.runtime.healthcheck import local_api

    api, client = local_api()
    api = args.api or api
    ok = wait_healthy(lambda: observe(api, args.members, args.stats_port, client), args.wait, report)
    if not ok:
        found = observe(api, args.members, args.stats_port, client)
        print(f"not healthy after {args.wait:.0f} s: " + "; ".join(found), file=sys.stderr)
        return 1
    cluster = fetch_cluster(api, client) or {}
    for m in sorted(cluster.get("members", []), key=lambda m: str(m.get("name"))):
        print(f"{m.get('name')}: {m.get('role')} {m.get('state')} (timeline {m.get('timeline')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
