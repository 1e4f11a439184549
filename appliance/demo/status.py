"""The demo's view of its members: each node's /patroni, etcd /health and supervisord, plus health."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

from appliance.core.model import PgState, ReplicationState, Role
from appliance.demo.layout import (
    API_PORT,
    ETCD_CLIENT_PORT,
    ETCD_PEER_PORT,
    PG_PORT,
    SCOPE,
    DemoLayout,
    Secrets,
)
from appliance.net.http import Client, request

HTTP_TIMEOUT = 1.0


def fetch_json(url: str, client: Client | None = None, timeout: float = HTTP_TIMEOUT) -> tuple[Any, str | None]:
    """(body, None) on any HTTP answer with a JSON body (a 503 health answer still has one)."""
    try:
        answer = request(url, client, timeout=timeout)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return None, str(reason)
    try:
        return json.loads(answer.body or b"null"), None
    except ValueError:
        return None, f"HTTP {answer.status}"


def operator_client(layout: DemoLayout, creds: Secrets) -> Client:
    """The demo CA, the operator's client certificate (etcd requires one) and the API credentials."""
    cert, key = layout.client_dir / "node.crt", layout.client_dir / "node.key"
    return Client(cafile=creds.ca_file, certfile=str(cert) if cert.exists() else None,
                  keyfile=str(key) if key.exists() else None, username="appliance",
                  password=creds.restapi_password)


def dsn(creds: Secrets, host: str, port: int, with_password: bool = True, secure: bool = True) -> str:
    """libpq URI over TLS, verifying the node certificate against the demo CA."""
    user = f"postgres:{quote(creds.superuser_password, safe='')}" if with_password else "postgres"
    tls = f"sslmode=verify-full&sslrootcert={quote(creds.ca_file)}" if secure else "sslmode=disable"
    return f"postgresql://{user}@{host}:{port}/postgres?{tls}"


def _role(patroni: Mapping[str, Any]) -> str | None:
    role = patroni.get("role")
    return Role.PRIMARY if role == Role.MASTER else role


def _etcd_state(host: str, client: Client, scheme: str = "https") -> str:
    body, error = fetch_json(f"{scheme}://{host}:{ETCD_CLIENT_PORT}/health", client)
    if error is not None:
        return "unreachable"
    return "healthy" if isinstance(body, dict) and body.get("health") == "true" else "unhealthy"


def _member(layout: DemoLayout, node: str, supervisord: Mapping[str, Any], client: Client) -> dict[str, Any]:
    host = layout.host(node)
    api_url = f"{layout.scheme}://{host}:{API_PORT}"
    patroni, error = fetch_json(f"{api_url}/patroni", client)
    ok = isinstance(patroni, dict)
    info: dict[str, Any] = patroni if ok else {}
    return {
        "name": node,
        "host": host,
        "role": _role(info) if ok else None,
        "state": info.get("state") if ok else "unreachable",
        "replication_state": info.get("replication_state"),
        "timeline": info.get("timeline"),
        "lag": None,
        "xlog": info.get("xlog") or {},
        "api_url": api_url,
        "api_error": error,
        "ports": {"pg": PG_PORT, "api": API_PORT, "etcd_client": ETCD_CLIENT_PORT, "etcd_peer": ETCD_PEER_PORT},
        "data_dir": str(layout.data_dir(node)),
        "etcd": _etcd_state(host, client, layout.scheme),
        **supervisord,
    }


def _fill_lag(members: list[dict[str, Any]]) -> None:
    """lag = the primary's current WAL location - the replica's replayed location (bytes)."""
    primaries = [m for m in members if m["role"] == Role.PRIMARY]
    location = primaries[0]["xlog"].get("location") if len(primaries) == 1 else None
    for member in members:
        if member["role"] == Role.PRIMARY:
            member["lag"] = 0
            continue
        replayed = member["xlog"].get("replayed_location")
        if isinstance(location, int) and isinstance(replayed, int):
            member["lag"] = max(0, location - replayed)


def routing_from_csv(text: str) -> dict[str, list[str]]:
    """HAProxy's ``;csv`` stats -> {"primary": [servers UP], "replicas": [servers UP]}."""
    rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
    routing: dict[str, list[str]] = {"primary": [], "replicas": []}
    for row in rows:
        backend, server = row.get("pxname"), row.get("svname")
        if backend in routing and server not in ("FRONTEND", "BACKEND") and row.get("status") == "UP":
            routing[backend].append(str(server))
    return routing


def proxy_status(layout: DemoLayout, running: bool) -> dict[str, Any]:
    """The proxy's ports, whether its stats page answers, and which servers it routes to."""
    primary, replicas, stats = layout.proxy_ports
    stats_url = f"http://{layout.proxy_address}:{stats}/"
    routing: dict[str, list[str]] | None = None
    try:
        answer = request(stats_url + ";csv", timeout=HTTP_TIMEOUT)
        if answer.status == 200:
            routing = routing_from_csv(answer.body.decode())
    except OSError:
        pass
    return {
        "address": layout.proxy_address,
        "primary_port": primary,
        "replica_port": replicas,
        "stats_port": stats,
        "stats_url": stats_url,
        "supervisord": "running" if running else "stopped",
        "stats_answers": routing is not None,
        "routing": routing,
    }


def cluster_status(
    layout: DemoLayout,
    creds: Secrets,
    supervisord: Mapping[str, Mapping[str, Any]],
    proxy_running: bool,
) -> dict[str, Any]:
    """The ``demo status --json`` document; ``supervisord`` maps node -> {supervisord, fatal}."""
    client = operator_client(layout, creds)
    with ThreadPoolExecutor(max_workers=len(layout.nodes) + 1) as pool:
        futures = [pool.submit(_member, layout, n, supervisord.get(n, {}), client) for n in layout.nodes]
        proxy_future = pool.submit(proxy_status, layout, proxy_running)
        members = [f.result() for f in futures]
        proxy = proxy_future.result()
    _fill_lag(members)
    for member in members:
        member.pop("xlog")
    primary_port, replica_port, _ = layout.proxy_ports
    return {
        "scope": SCOPE,
        "dir": str(layout.dir),
        "members": members,
        "etcd": [f"{layout.scheme}://{h}" for h in layout.etcd_hosts()],
        "ca_file": creds.ca_file,
        "client_config": str(layout.client_config_path),
        "proxy": proxy,
        # No password in a document that gets printed and pasted: it is in password_file.
        "dsn": {
            "primary": dsn(creds, layout.proxy_address, primary_port, with_password=False, secure=layout.secure),
            "replicas": dsn(creds, layout.proxy_address, replica_port, with_password=False, secure=layout.secure),
            "password_file": str(creds.dir / "postgres_password"),
        },
    }


def _replica_problem(member: Mapping[str, Any]) -> str | None:
    if member["state"] != PgState.RUNNING:
        return f"{member['name']}: replica state is {member['state']!r}, want 'running'"
    replication = member["replication_state"]
    if replication is not None and replication != ReplicationState.STREAMING:
        return f"{member['name']}: replica replication_state is {replication!r}, want 'streaming'"
    return None


def patroni_problems(members: Sequence[Mapping[str, Any]]) -> list[str]:
    """What keeps the cluster from "one running primary, every other member a streaming replica"."""
    problems = [
        f"{m['name']}: REST API unreachable at {m['api_url']} ({m['api_error']})"
        for m in members
        if m["state"] == "unreachable"
    ]
    primaries = [m for m in members if m["role"] == Role.PRIMARY]
    if not primaries:
        problems.append("no member has role primary")
    elif len(primaries) > 1:
        problems.append("more than one primary: " + ", ".join(m["name"] for m in primaries))
    elif primaries[0]["state"] != PgState.RUNNING:
        problems.append(f"{primaries[0]['name']}: primary state is {primaries[0]['state']!r}")
    for member in members:
        if member["state"] == "unreachable" or member["role"] == Role.PRIMARY:
            continue
        if member["role"] != Role.REPLICA:
            problems.append(f"{member['name']}: role is {member['role']!r}, want 'replica'")
            continue
        problem = _replica_problem(member)
        if problem is not None:
            problems.append(problem)
    return problems


def health_problems(status: Mapping[str, Any], programs: Sequence[str]) -> list[str]:
    """Empty when the demo is healthy for the programs it runs (full stack, or etcd only)."""
    members = status["members"]
    problems = [
        f"{m['name']}: supervisord is not running" + (f" (FATAL: {m['fatal']})" if m.get("fatal") else "")
        for m in members
        if m.get("supervisord") != "running"
    ]
    if "etcd" in programs:
        problems += [f"{m['name']}: etcd is {m['etcd']}" for m in members if m["etcd"] != "healthy"]
    proxy = status["proxy"]
    if not proxy["stats_answers"]:
        problems.append(f"proxy: the HAProxy stats page {proxy['stats_url']} does not answer")
    if "api" in programs and "manager" in programs:
        problems += patroni_problems(members)
        if not problems and proxy.get("routing") is not None:
            problems += routing_problems(members, proxy["routing"])
    return problems


def routing_problems(members: Sequence[Mapping[str, Any]], routing: Mapping[str, list[str]]) -> list[str]:
    """HAProxy must route 5000 to the primary alone and 5001 to every replica (its checks lag ~1 s)."""
    primary = sorted(m["name"] for m in members if m["role"] == Role.PRIMARY)
    replicas = sorted(m["name"] for m in members if m["role"] == Role.REPLICA)
    problems = []
    if sorted(routing["primary"]) != primary:
        problems.append(f"proxy: read-write routes to {routing['primary'] or 'nobody'}, want {primary}")
    if sorted(routing["replicas"]) != replicas:
        problems.append(f"proxy: read-only routes to {routing['replicas'] or 'nobody'}, want {replicas}")
    return problems
