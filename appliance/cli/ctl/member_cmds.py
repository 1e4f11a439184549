"""Per-member and maintenance commands: restart, reload, reinit, flush, pause, resume."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import click

from appliance.cli.ctl.cluster import read_view, scoped
from appliance.cli.ctl.rest import Reply, api_base, call
from appliance.cli.ctl.switch_cmds import next_hour, parse_when, stamp
from appliance.cli.ctl.target import CtlError, Target, connection_options, pop_target
from appliance.core.model import ClusterView, Member, PgState

ROLE_CHOICES = ("leader", "primary", "standby-leader", "replica", "any")
WAIT_INTERVAL = 1.0


def select_members(view: ClusterView, names: Sequence[str], role: str | None = None) -> list[Member]:
    """The named members (all when none is named), filtered by role; an unknown name is an error."""
    known = {m.name: m for m in view.members}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise CtlError(f"no member {', '.join(unknown)} in the cluster (members: {', '.join(sorted(known))})")
    chosen = [known[n] for n in names] if names else sorted(view.members, key=lambda m: m.name)
    if role in ("leader", "primary", "standby-leader"):
        chosen = [m for m in chosen if m.name == view.leader_name]
    elif role == "replica":
        chosen = [m for m in chosen if m.name != view.leader_name]
    if not chosen:
        raise CtlError(f"no {role or ''} member matches: nothing to do".replace("  ", " "))
    return chosen


def _member_target(target: Target, args: Sequence[str]) -> tuple[Target, ClusterView, list[str]]:
    target, names = scoped(target, args)
    return target, read_view(target), names


def _per_member(target: Target, members: list[Member], method: str, path: str, body: Any,
                done: Callable[[Member, Reply], str | None], action: str) -> None:
    """Send one request per member; print patronictl-style lines; exit 1 when any failed."""
    failed = []
    for member in members:
        reply = call(target, method, f"{api_base(member.api_url)}/{path}", body)
        line = done(member, reply)
        if line is not None:
            click.echo(line)
        else:
            failed.append(member.name)
            click.echo(f"Failed: {action} for member {member.name}, status code={reply.status}, ({reply.message})")
    if failed:
        raise CtlError(f"{action} failed on {', '.join(failed)}")


@click.command("restart")
@click.argument("args", nargs=-1, metavar="[CLUSTER] [MEMBER]...")
@click.option("--role", "-r", type=click.Choice(ROLE_CHOICES), default="any", show_default=True)
@click.option("--any", "any_one", is_flag=True, help="Restart a single member only.")
@click.option("--scheduled", help="When: ISO-8601 time, or 'now'.")
@click.option("--pg-version", help="Restart only if the PostgreSQL version is less than this, e.g. 15.5.")
@click.option("--pending", is_flag=True, help="Restart only members with pending restart.")
@click.option("--timeout", type=float, help="Fail if the restart takes longer than this (seconds).")
@click.option("--force", is_flag=True, help="Do not ask for confirmation.")
@connection_options
def restart_cmd(args: tuple[str, ...], role: str, any_one: bool, scheduled: str | None, pg_version: str | None,
                pending: bool, timeout: float | None, force: bool, **conn: Any) -> None:
    """Restart PostgreSQL on the selected members (all by default) via POST /restart."""
    target, view, names = _member_target(pop_target(conn), args)
    members = select_members(view, names, role)
    if any_one:
        members = members[:1]
    if scheduled is None and not force:
        scheduled = click.prompt(f"When should the restart take place (e.g. {next_hour()})  ", type=str,
                                 default="now")
    when = parse_when(scheduled)
    listed = ", ".join(m.name for m in members)
    question = (f"Are you sure you want to schedule restart of members {listed} at {when}?" if when
                else f"Are you sure you want to restart members {listed}?")
    if not force and not click.confirm(question):
        raise CtlError("Aborted restart")
    body: dict[str, Any] = {}
    if pending:
        body["restart_pending"] = True
    if when:
        body["schedule"] = when
    if pg_version:
        body["postgres_version"] = pg_version
    if timeout is not None:
        body["timeout"] = timeout

    def done(member: Member, reply: Reply) -> str | None:
        if reply.status == 200:
            return f"Success: restart on member {member.name}"
        if reply.status == 202:
            return f"Success: restart scheduled on member {member.name}"
        return None

    _per_member(target, members, "POST", "restart", body, done, "restart")


@click.command("reload")
@click.argument("args", nargs=-1, metavar="[CLUSTER] [MEMBER]...")
@click.option("--role", "-r", type=click.Choice(ROLE_CHOICES), default="any", show_default=True)
@click.option("--force", is_flag=True, help="Do not ask for confirmation.")
@connection_options
def reload_cmd(args: tuple[str, ...], role: str, force: bool, **conn: Any) -> None:
    """Re-read the local configuration on the selected members (POST /reload)."""
    target, view, names = _member_target(pop_target(conn), args)
    members = select_members(view, names, role)
    listed = ", ".join(m.name for m in members)
    if not force and not click.confirm(f"Are you sure you want to reload members {listed}?"):
        raise CtlError("Aborted reload")
    loop_wait = (view.config or {}).get("loop_wait", 10)

    def done(member: Member, reply: Reply) -> str | None:
        if reply.ok:
            return (f"Reload request received for member {member.name} and will be processed within "
                    f"{loop_wait} seconds")
        return None

    _per_member(target, members, "POST", "reload", None, done, "reload")


@click.command("reinit")
@click.argument("args", nargs=-1, metavar="[CLUSTER] MEMBER...")
@click.option("--from-leader", is_flag=True, help="Take the base backup from the leader.")
@click.option("--wait", is_flag=True, help="Wait until the reinitialization is complete.")
@click.option("--force", is_flag=True, help="Do not ask for confirmation (and cancel a running action).")
@connection_options
def reinit_cmd(args: tuple[str, ...], from_leader: bool, wait: bool, force: bool, **conn: Any) -> None:
    """Wipe a replica and clone it again from the cluster (POST /reinitialize)."""
    target, view, names = _member_target(pop_target(conn), args)
    if not names:
        raise CtlError("name the member(s) to reinitialize, e.g. `appliance reinit node2`")
    members = select_members(view, names)
    if not force and not click.confirm(
            f"Are you sure you want to reinitialize members {', '.join(m.name for m in members)}?"):
        raise CtlError("Aborted reinitialize")
    starts = {m.name: _start_time(target, m) for m in members} if wait else {}
    body = {"force": force, "from_leader": from_leader}

    def done(member: Member, reply: Reply) -> str | None:
        return f"Success: reinitialize for member {member.name}" if reply.ok else None

    _per_member(target, members, "POST", "reinitialize", body, done, "reinitialize")
    if wait:
        click.echo(f"Waiting for reinitialize to complete on: {', '.join(starts)}")
        wait_restarted(target, members, starts)
        click.echo(f"Reinitialize is completed on: {', '.join(starts)}")


def _patroni(target: Target, member: Member) -> dict[str, Any]:
    try:
        reply = call(target, "GET", f"{api_base(member.api_url)}/patroni", timeout=3)
    except CtlError:
        return {}
    return reply.body if isinstance(reply.body, dict) else {}


def _start_time(target: Target, member: Member) -> Any:
    return _patroni(target, member).get("postmaster_start_time")


def wait_restarted(target: Target, members: list[Member], starts: dict[str, Any], timeout: float = 600.0,
                   clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
    """Until each member runs a new postmaster (a reinit always starts one), or ``timeout``."""
    deadline = clock() + timeout
    waiting = list(members)
    while waiting:
        left = []
        for m in waiting:
            doc = _patroni(target, m)
            running = doc.get("state") == PgState.RUNNING
            if not (running and doc.get("postmaster_start_time") not in (None, starts[m.name])):
                left.append(m)
        waiting = left
        if waiting and clock() >= deadline:
            raise CtlError(f"still not running again after {timeout:.0f}s: {', '.join(m.name for m in waiting)}")
        if waiting:
            sleep(WAIT_INTERVAL)


@click.command("flush")
@click.argument("args", nargs=-1, required=True, metavar="[CLUSTER] [MEMBER]... restart|switchover")
@click.option("--role", "-r", type=click.Choice(ROLE_CHOICES), default="any", show_default=True)
@click.option("--force", is_flag=True, help="Do not ask for confirmation.")
@connection_options
def flush_cmd(args: tuple[str, ...], role: str, force: bool, **conn: Any) -> None:
    """Cancel scheduled events: restarts on members, or the scheduled switchover."""
    what = args[-1]
    if what not in ("restart", "switchover"):
        raise CtlError(f"flush what? the last argument must be restart or switchover, not {what!r}")
    target, view, names = _member_target(pop_target(conn), args[:-1])
    if what == "switchover":
        url = api_base(target.url) if target.url else _leader_api(view)
        reply = call(target, "DELETE", f"{url}/switchover")
        if not reply.ok and reply.status != 404:
            raise CtlError(f"flush switchover failed ({reply.status}): {reply.message}")
        click.echo(f"{stamp()} {reply.message}")
        return
    members = select_members(view, names, role)
    if not force and not click.confirm(
            f"Are you sure you want to flush scheduled restarts of members {', '.join(m.name for m in members)}?"):
        raise CtlError("Aborted flush")

    def done(member: Member, reply: Reply) -> str | None:
        if reply.ok:
            return f"Success: flush scheduled restart for member {member.name}"
        if reply.status == 404:
            return f"No scheduled restart on member {member.name}"
        return None

    _per_member(target, members, "DELETE", "restart", None, done, "flush scheduled restart")


def _leader_api(view: ClusterView) -> str:
    leader = view.member(view.leader_name)
    if leader is not None and leader.api_url:
        return api_base(leader.api_url)
    for member in sorted(view.members, key=lambda m: m.name):
        if member.api_url:
            return api_base(member.api_url)
    raise CtlError("no member API to send the request to: pass --url http://host:8008")


def _toggle_pause(paused: bool, wait: bool, args: tuple[str, ...], conn: dict[str, Any]) -> None:
    target, view, _ = _member_target(pop_target(conn), args)
    if bool((view.config or {}).get("pause")) == paused:
        raise CtlError("Cluster is already paused" if paused else "Cluster is not paused")
    url = api_base(target.url) if target.url else _leader_api(view)
    reply = call(target, "PATCH", f"{url}/config", {"pause": True if paused else None})
    if not reply.ok:
        raise CtlError(f"{'pause' if paused else 'resume'} failed: PATCH /config answered {reply.status}: "
                       f"{reply.message}")
    word = "paused" if paused else "resumed"
    if wait:
        click.echo(f"'{'pause' if paused else 'resume'}' request sent, waiting until it is recognized by all nodes")
        wait_pause_seen(target, list(view.members), paused)
    click.echo(f"Success: cluster management is {word}")


def wait_pause_seen(target: Target, members: list[Member], paused: bool, timeout: float = 60.0,
                    clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
    deadline = clock() + timeout
    waiting = members
    while waiting:
        waiting = [m for m in waiting if bool(_patroni(target, m).get("pause")) != paused]
        if waiting and clock() >= deadline:
            raise CtlError(f"not yet seen by {', '.join(m.name for m in waiting)} after {timeout:.0f}s")
        if waiting:
            sleep(WAIT_INTERVAL)


@click.command("pause")
@click.argument("args", nargs=-1, metavar="[CLUSTER]")
@click.option("--wait", is_flag=True, help="Wait until every member has seen it.")
@connection_options
def pause_cmd(args: tuple[str, ...], wait: bool, **conn: Any) -> None:
    """Maintenance mode: stop automatic failover and management of PostgreSQL (PATCH /config)."""
    _toggle_pause(True, wait, args, conn)


@click.command("resume")
@click.argument("args", nargs=-1, metavar="[CLUSTER]")
@click.option("--wait", is_flag=True, help="Wait until every member has seen it.")
@connection_options
def resume_cmd(args: tuple[str, ...], wait: bool, **conn: Any) -> None:
    """Leave maintenance mode (PATCH /config {"pause": null})."""
    _toggle_pause(False, wait, args, conn)


COMMANDS: tuple[click.Command, ...] = (restart_cmd, reload_cmd, reinit_cmd, flush_cmd, pause_cmd, resume_cmd)
