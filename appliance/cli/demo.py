"""``appliance demo``: run a three-node cluster plus HAProxy on loopback, no Docker needed."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any, TypeVar

import click

from appliance.demo.cluster import DemoCluster, DemoError
from appliance.demo.layout import DEFAULT_DIR

F = TypeVar("F", bound=Callable[..., Any])


def _dir_option(func: F) -> F:
    return click.option(
        "--dir",
        "directory",
        default=lambda: os.environ.get("APPLIANCE_DEMO_DIR", DEFAULT_DIR),
        show_default="$APPLIANCE_DEMO_DIR or " + DEFAULT_DIR,
        type=click.Path(file_okay=False),
        help="Where the demo keeps its configs, data and logs.",
    )(func)


def _open(directory: str) -> DemoCluster:
    return DemoCluster(directory)


def _fail(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))


@click.group()
def demo() -> None:
    """A local three-node demo cluster on 127.0.2.1-3 with one HAProxy (5000/5001/7000)."""


@demo.command()
@_dir_option
@click.option("--net", envvar="APPLIANCE_DEMO_NET", help="Node N listens on NET.N  [default: 127.0.2]")
@click.option("--proxy-address", envvar="APPLIANCE_DEMO_PROXY_ADDRESS", help="HAProxy bind address [127.0.0.1]")
@click.option("--primary-port", envvar="APPLIANCE_DEMO_PRIMARY_PORT", type=int, help="read-write port [5000]")
@click.option("--replica-port", envvar="APPLIANCE_DEMO_REPLICA_PORT", type=int, help="read-only port [5001]")
@click.option("--stats-port", envvar="APPLIANCE_DEMO_STATS_PORT", type=int, help="HAProxy stats port [7000]")
@click.option("--programs", help="Comma-separated node programs (debugging), e.g. etcd  [etcd,manager,api]")
@click.option("--timeout", default=180.0, show_default=True, help="Seconds to wait for a healthy cluster.")
@click.option("--no-wait", is_flag=True, help="Start the processes and return at once.")
def up(
    directory: str,
    net: str | None,
    proxy_address: str | None,
    primary_port: int | None,
    replica_port: int | None,
    stats_port: int | None,
    programs: str | None,
    timeout: float,
    no_wait: bool,
) -> None:
    """Create (or resume) the demo in DIR, start it and wait until it is healthy."""
    ports = (primary_port or 5000, replica_port or 5001, stats_port or 7000)
    explicit = any(p is not None for p in (primary_port, replica_port, stats_port))
    try:
        cluster = DemoCluster(
            directory,
            net=net,
            proxy_ports=ports if explicit else None,
            proxy_address=proxy_address,
            programs=programs.split(",") if programs else None,
        )
        resumed = cluster.exists
        status = cluster.up(wait=not no_wait, timeout=timeout)
    except (DemoError, ValueError) as exc:
        raise _fail(exc) from None
    click.echo(("Resumed" if resumed else "Created") + f" the demo in {cluster.dir}.")
    click.echo(_endpoints(status))


def _endpoints(status: dict[str, Any]) -> str:
    proxy = status["proxy"]
    password = f"PGPASSWORD=$(cat {status['dsn']['password_file']})"
    lines = [
        f"  read-write (primary):  {password} psql '{status['dsn']['primary']}'",
        f"  read-only (replicas):  {password} psql '{status['dsn']['replicas']}'",
        f"  REST API changes:      user appliance, password in {status['dir']}/secrets/restapi_password; "
        f"CA {status['ca_file']}",
        f"  operator config:       appliance list --config {status['client_config']}  (patronictl -c works too)",
        f"  HAProxy stats:         {proxy['stats_url']}  (Prometheus: {proxy['stats_url']}metrics)",
    ]
    lines += [f"  {m['name']} REST API:      {m['api_url']}/patroni" for m in status["members"]]
    lines.append("  etcd endpoints:        " + ",".join(status["etcd"]))
    lines.append(f"  data and logs:         {status['dir']}  (logs in nodeN/log/, proxy/log/)")
    return "\n".join(lines)


def _table(status: dict[str, Any]) -> str:
    rows = [("Member", "Host", "Role", "State", "TL", "Lag", "etcd", "supervisord")]
    for m in status["members"]:
        lag = "" if m["lag"] is None else str(m["lag"])
        supervisord = m["supervisord"] + (f" (FATAL: {m['fatal']})" if m.get("fatal") else "")
        rows.append(
            (
                m["name"],
                m["host"],
                m["role"] or "",
                m["state"] or "",
                str(m["timeline"] or ""),
                lag,
                m["etcd"],
                supervisord,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    text = [" | ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    text.insert(1, "-+-".join("-" * w for w in widths))
    proxy = status["proxy"]
    text.append(f"proxy: supervisord {proxy['supervisord']}, stats {proxy['stats_url']}")
    routing = proxy.get("routing")
    if routing is not None:
        text.append(
            f"routing: :{proxy['primary_port']} -> {', '.join(routing['primary']) or 'nobody'}; "
            f":{proxy['replica_port']} -> {', '.join(routing['replicas']) or 'nobody'}"
        )
    return f"Cluster: {status['scope']} ({status['dir']})\n" + "\n".join(text)


@demo.command()
@_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the machine-readable document.")
def status(directory: str, as_json: bool) -> None:
    """Show each member's role, state, timeline and lag."""
    try:
        doc = _open(directory).status()
    except (DemoError, ValueError) as exc:
        raise _fail(exc) from None
    click.echo(json.dumps(doc, indent=2) if as_json else _table(doc))


@demo.command()
@_dir_option
@click.argument("node")
def kill(directory: str, node: str) -> None:
    """Simulate a crash of NODE: SIGKILL its supervisord, programs and postmaster."""
    try:
        killed = _open(directory).kill(node)
    except (DemoError, ValueError) as exc:
        raise _fail(exc) from None
    click.echo(f"killed {node}: pids {' '.join(map(str, killed)) or '(none were running)'}")


@demo.command()
@_dir_option
@click.argument("node")
def start(directory: str, node: str) -> None:
    """Start NODE's supervisord again (after kill or stop)."""
    try:
        pid = _open(directory).start(node)
    except (DemoError, ValueError) as exc:
        raise _fail(exc) from None
    click.echo(f"{node}: supervisord running (pid {pid})")


@demo.command()
@_dir_option
@click.argument("node")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds before leftovers are killed.")
def stop(directory: str, node: str, timeout: float) -> None:
    """Stop NODE cleanly (SIGTERM to its supervisord; the manager stops PostgreSQL)."""
    try:
        _open(directory).stop(node, timeout=timeout)
    except (DemoError, ValueError) as exc:
        raise _fail(exc) from None
    click.echo(f"{node}: stopped")


@demo.command()
@_dir_option
@click.option("--purge", is_flag=True, help="Also remove DIR (data, configs, secrets, logs).")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds before leftovers are killed.")
def down(directory: str, purge: bool, timeout: float) -> None:
    """Stop every node and the proxy; the data stays unless --purge."""
    try:
        _open(directory).down(purge=purge, timeout=timeout)
    except (DemoError, ValueError) as exc:
        raise _fail(exc) from None
    click.echo(f"demo in {directory}: stopped" + (" and removed" if purge else " (data kept)"))
