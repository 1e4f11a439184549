"""Read-only operator commands: list, topology, history, show-config, dsn, version."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click

from appliance import __version__
from appliance.cli.ctl.cluster import read_view, scoped
from appliance.cli.ctl.formatting import FORMATS, dump_config, history_rows, render, render_members
from appliance.cli.ctl.rest import api_base, call
from appliance.cli.ctl.target import NO_CONFIG, CtlError, Target, connection_options, pop_target
from appliance.config import ConfigError, render_provenance, resolve
from appliance.core.model import ClusterView, Member, PgState
from appliance.net.address import conn_url_address

FORMAT_OPTION = click.option("--format", "-f", "fmt", type=click.Choice(FORMATS), default="pretty",
                             show_default=True, help="Output format.")


def watch_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("-W", "watch_default", is_flag=True, help="Refresh every 2 seconds.")(func)
    return click.option("--watch", "-w", "watch", type=float, metavar="SEC", help="Refresh every SEC seconds.")(func)


def watching(interval: float | None, produce: Callable[[], str], sleep: Callable[[float], None] = time.sleep) -> None:
    """Print once, or every ``interval`` s until Ctrl-C (an error is shown in place, not fatal, while watching)."""
    if not interval:
        click.echo(produce())
        return
    try:
        while True:
            try:
                text = produce()
            except click.ClickException as exc:
                text = f"Error: {exc.format_message()}"
            click.clear()
            click.echo(text)
            sleep(interval)
    except KeyboardInterrupt:
        pass


def _interval(watch: float | None, watch_default: bool) -> float | None:
    if watch is not None and watch <= 0:
        raise CtlError(f"--watch {watch}: give a positive number of seconds")
    return watch if watch else (2.0 if watch_default else None)


def _scopes(target: Target, names: tuple[str, ...]) -> list[Target]:
    if not names:
        return [scoped(target, ())[0]]
    return [target.with_scope(name) for name in names]


@click.command("list")
@click.argument("cluster_names", nargs=-1)
@click.option("--extended", "-e", is_flag=True, help="Show pending restarts, scheduled restarts and tags.")
@click.option("--timestamp", "-t", "ts", is_flag=True, help="Print a timestamp first.")
@FORMAT_OPTION
@watch_options
@connection_options
def list_cmd(cluster_names: tuple[str, ...], extended: bool, ts: bool, fmt: str, watch: float | None,
             watch_default: bool, **conn: Any) -> None:
    """List the members of the cluster: role, state, timeline, LSNs and lag."""
    targets = _scopes(pop_target(conn), cluster_names)

    def produce() -> str:
        chunks = [datetime.now().strftime("%Y-%m-%d %H:%M:%S")] if ts else []
        for target in targets:
            chunks.append(render_members(target.scope or "", read_view(target), fmt, extended))
        return "\n".join(chunks)

    watching(_interval(watch, watch_default), produce)


@click.command("topology")
@click.argument("cluster_names", nargs=-1)
@watch_options
@connection_options
def topology_cmd(cluster_names: tuple[str, ...], watch: float | None, watch_default: bool, **conn: Any) -> None:
    """Show the replication tree: the leader, its replicas, and cascading replicas (replicatefrom)."""
    targets = _scopes(pop_target(conn), cluster_names)

    def produce() -> str:
        return "\n".join(render_members(t.scope or "", read_view(t), "pretty", topology=True) for t in targets)

    watching(_interval(watch, watch_default), produce)


@click.command("history")
@click.argument("cluster_name", required=False)
@FORMAT_OPTION
@connection_options
def history_cmd(cluster_name: str | None, fmt: str, **conn: Any) -> None:
    """Show the timeline history: TL, LSN, reason, timestamp, new leader."""
    target, _ = scoped(pop_target(conn), (cluster_name,) if cluster_name else ())
    columns, rows = history_rows(read_view(target))
    click.echo(render(columns, rows, fmt))


@click.command("show-config")
@click.argument("cluster_name", required=False)
@click.option("--provenance", is_flag=True,
              help="This node's effective settings with each value's source (secrets redacted).")
@connection_options
def show_config_cmd(cluster_name: str | None, provenance: bool, **conn: Any) -> None:
    """Show the dynamic configuration stored in the DCS (cluster-wide), as YAML."""
    target, _ = scoped(pop_target(conn), (cluster_name,) if cluster_name else ())
    if provenance and target.layers is None:
        raise CtlError("--provenance shows one node's effective settings: run it on the node, or pass --config")
    view = read_view(target)
    if provenance:
        assert target.layers is not None
        try:
            effective = resolve(target.layers, view.config)
        except ConfigError as exc:
            raise CtlError(str(exc)) from None
        click.echo(render_provenance(effective))
        for item in effective.not_applied:
            click.echo(f"note: {item}")
        return
    click.echo(dump_config(view.config).rstrip("\n"))


ROLES = ("leader", "primary", "standby-leader", "replica", "any")


def pick_member(view: ClusterView, role: str | None, member: str | None) -> Member:
    """The member ``dsn`` (and query-like commands) should talk to."""
    if member:
        found = view.member(member)
        if found is None:
            raise CtlError(f"no member {member} in the cluster (members: {', '.join(m.name for m in view.members)})")
        return found
    role = role or "leader"
    leader = view.member(view.leader_name)
    if role in ("leader", "primary", "standby-leader") or (role == "any" and leader is not None):
        if leader is None:
            raise CtlError("the cluster has no leader right now")
        return leader
    replicas = sorted((m for m in view.members if m.name != view.leader_name),
                      key=lambda m: (m.state != PgState.RUNNING, m.name))
    if not replicas:
        raise CtlError(f"no {role} member found")
    return replicas[0]


@click.command("dsn")
@click.argument("cluster_name", required=False)
@click.option("--role", "-r", type=click.Choice(ROLES), help="Member role  [default: leader]")
@click.option("--member", "-m", help="Member name.")
@connection_options
def dsn_cmd(cluster_name: str | None, role: str | None, member: str | None, **conn: Any) -> None:
    """Print a libpq connection string (host=... port=...) for a member."""
    if role and member:
        raise CtlError("--role and --member exclude each other: pass one of them")
    target, _ = scoped(pop_target(conn), (cluster_name,) if cluster_name else ())
    chosen = pick_member(read_view(target), role, member)
    host, port = conn_url_address(chosen.conn_url)
    click.echo(f"host={host or ''} port={port or 5432}")


@click.command("version")
@click.argument("cluster_name", required=False)
@click.argument("member_names", nargs=-1)
@connection_options
def version_cmd(cluster_name: str | None, member_names: tuple[str, ...], **conn: Any) -> None:
    """Print this CLI's version, and each member's (pgappliance and PostgreSQL) when a cluster is known."""
    click.echo(f"appliance version {__version__}")
    try:
        target = pop_target(conn)
    except CtlError as exc:
        if exc.message == NO_CONFIG:
            return  # no configuration: the local version is all there is to say
        raise
    args = tuple(a for a in (cluster_name, *member_names) if a)
    target, names = scoped(target, args)
    view = read_view(target)
    for m in sorted(view.members, key=lambda x: x.name):
        if names and m.name not in names:
            continue
        reply = call(target, "GET", f"{api_base(m.api_url)}/patroni", timeout=3)
        doc = reply.body if isinstance(reply.body, dict) else {}
        about = doc.get("patroni") or {}
        version = about.get("appliance_version") or about.get("version", "?")
        server = doc.get("server_version")
        pg = f" PostgreSQL {server // 10000}.{server % 10000}" if isinstance(server, int) and server else ""
        click.echo(f"{m.name}: pgappliance {version}{pg}")


COMMANDS: tuple[click.Command, ...] = (list_cmd, topology_cmd, history_cmd, show_config_cmd, dsn_cmd, version_cmd)
