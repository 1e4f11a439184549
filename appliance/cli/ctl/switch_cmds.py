"""switchover and failover: patronictl's prompts, POST to the leader's REST API, reasons on refusal."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import click

from appliance.cli.ctl.cluster import read_view, scoped
from appliance.cli.ctl.formatting import is_synchronous, render_members
from appliance.cli.ctl.rest import Reply, api_base, call
from appliance.cli.ctl.target import CtlError, Target, connection_options, pop_target
from appliance.core.model import ClusterView

SWITCHOVER_TIMEOUT = 120.0  # the API itself polls up to 2*max(10, loop_wait) s before answering


def stamp() -> str:
    return datetime.now().strftime("%Y-%m-%d %H:%M:%S.%f")


def parse_when(value: str | None, now: datetime | None = None) -> str | None:
    """``now``/empty -> None (immediate); an ISO-8601 time (local time zone when none is given) -> ISO text."""
    if value is None or value.strip().lower() in ("", "now"):
        return None
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise CtlError(f"cannot parse {value!r} as a time: use ISO-8601, e.g. 2030-01-01T12:30 or "
                       "2030-01-01T12:30+00:00") from None
    if when.tzinfo is None:
        when = when.astimezone()
    if when <= (now or datetime.now().astimezone()):
        raise CtlError(f"{value} is in the past: give a future time, or 'now'")
    return when.isoformat()


def next_hour() -> str:
    return (datetime.now() + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")


def candidate_names(view: ClusterView) -> list[str]:
    """Members that may be promoted: not the leader, not tagged nofailover (patroni#769)."""
    return sorted(m.name for m in view.members if m.name != view.leader_name and not m.tags.nofailover)


def rejections(reply: Reply) -> list[str]:
    """Per-candidate reasons from a 412 body, whatever shape the server chose ({name: reason} or a list)."""
    body = reply.body
    if not isinstance(body, dict):
        return []
    for key in ("candidates", "rejected", "rejections", "reasons"):
        found = body.get(key)
        if isinstance(found, dict):
            return [f"{name}: {why}" for name, why in sorted(found.items())]
        if isinstance(found, list):
            lines = []
            for item in found:
                if isinstance(item, dict):
                    name = item.get("name") or item.get("member") or item.get("candidate") or "?"
                    why = item.get("reason") or item.get("reasons") or item.get("why") or ""
                    lines.append(f"{name}: {'; '.join(why) if isinstance(why, list) else why}")
                else:
                    lines.append(str(item))
            return lines
    return []


def _control_url(target: Target, view: ClusterView, fallback: str | None = None) -> str:
    """--url when given, else the leader's API (else ``fallback``'s, e.g. the failover candidate)."""
    if target.url:
        return api_base(target.url)
    for name in (view.leader_name, fallback):
        member = view.member(name)
        if member is not None and member.api_url:
            return api_base(member.api_url)
    raise CtlError("no member API to send the request to (no leader): pass --url http://host:8008")


def _report(action: str, reply: Reply, target: Target, scope: str) -> None:
    if reply.ok:
        click.echo(f"{stamp()} {reply.message}")
        if reply.status == 200:
            click.echo(render_members(scope, read_view(target)))
        return
    click.echo(f"{action.title()} failed, details: {reply.status}, {reply.message}")
    if isinstance(reply.body, dict) and isinstance(reply.body.get("detail"), str):
        click.echo(f"  {reply.body['detail']}")
    for line in rejections(reply):
        click.echo(f"  {line}")
    if reply.status == 503 and "unknown" in reply.message.lower():
        raise CtlError(f"{action} status unknown: it may still complete; check with `appliance list`")
    raise CtlError(f"{action} refused ({reply.status}): {reply.message}")


def _confirm(force: bool, question: str, action: str) -> None:
    if not force and not click.confirm(question):
        raise CtlError(f"Aborting {action}")


@click.command("switchover")
@click.argument("cluster_name", required=False)
@click.option("--leader", "--primary", "leader", help="The current leader (checked).")
@click.option("--candidate", help="The member to promote; empty: the healthiest one.")
@click.option("--scheduled", help="When: ISO-8601 time, or 'now'.")
@click.option("--force", is_flag=True, help="Do not ask for confirmation.")
@connection_options
def switchover_cmd(cluster_name: str | None, leader: str | None, candidate: str | None, scheduled: str | None,
                   force: bool, **conn: Any) -> None:
    """Hand the leader role over to a replica, now or at a scheduled time (POST /switchover)."""
    target, _ = scoped(pop_target(conn), (cluster_name,) if cluster_name else ())
    scope = target.scope or ""
    view = read_view(target)
    click.echo("Current cluster topology")
    click.echo(render_members(scope, view))
    current = view.leader_name
    if not current:
        raise CtlError(f"cluster {scope} has no leader: use `appliance failover --candidate NAME`")
    if leader is None:
        leader = current if force else click.prompt("Primary", type=str, default=current)
    if leader != current:
        raise CtlError(f"member {leader} is not the leader of cluster {scope} (the leader is {current})")
    names = candidate_names(view)
    if not names:
        raise CtlError("no candidates found to switchover to: every other member is absent or tagged nofailover")
    if candidate is None and not force:
        candidate = click.prompt(f"Candidate {names}", type=str, default="")
    if candidate and candidate not in names:
        raise CtlError(f"member {candidate} is already the leader of cluster {scope}" if candidate == current else
                       f"member {candidate} does not exist in cluster {scope} or is tagged nofailover")
    if scheduled is None and not force:
        scheduled = click.prompt(f"When should the switchover take place (e.g. {next_hour()} ) ", type=str,
                                 default="now")
    when = parse_when(scheduled)
    if when and (view.config or {}).get("pause"):
        raise CtlError("can't schedule a switchover while the cluster is paused (maintenance mode)")
    demote = f", demoting current leader {current}"
    question = (f"Are you sure you want to schedule switchover of cluster {scope} at {when}{demote}?" if when
                else f"Are you sure you want to switchover cluster {scope}{demote}?")
    _confirm(force, question, "switchover")
    body: dict[str, Any] = {"leader": leader}
    if candidate:
        body["candidate"] = candidate
    if when:
        body["scheduled_at"] = when
    reply = call(target, "POST", f"{_control_url(target, view)}/switchover", body, timeout=SWITCHOVER_TIMEOUT)
    _report("switchover", reply, target, scope)


@click.command("failover")
@click.argument("cluster_name", required=False)
@click.option("--candidate", help="The member to promote.")
@click.option("--force", is_flag=True, help="Do not ask for confirmation.")
@connection_options
def failover_cmd(cluster_name: str | None, candidate: str | None, force: bool, **conn: Any) -> None:
    """Promote a given replica, with or without a healthy leader (POST /failover)."""
    target, _ = scoped(pop_target(conn), (cluster_name,) if cluster_name else ())
    scope = target.scope or ""
    view = read_view(target)
    click.echo("Current cluster topology")
    click.echo(render_members(scope, view))
    names = candidate_names(view)
    if not names:
        raise CtlError("no candidates found to failover to: every other member is absent or tagged nofailover")
    if candidate is None and not force:
        candidate = click.prompt(f"Candidate {names}", type=str, default="")
    if not candidate:
        raise CtlError("failover could be performed only to a specific candidate: pass --candidate NAME")
    if candidate not in names:
        raise CtlError(f"member {candidate} is already the leader of cluster {scope}" if candidate == view.leader_name
                       else f"member {candidate} does not exist in cluster {scope} or is tagged nofailover")
    in_sync = view.sync is not None and candidate in view.sync.sync_standby
    if not force and is_synchronous(view) and view.sync is not None and view.sync.sync_standby and not in_sync:
        _confirm(False, f"Are you sure you want to failover to the asynchronous node {candidate}?", "failover")
    demote = f", demoting current leader {view.leader_name}" if view.leader_name else ""
    _confirm(force, f"Are you sure you want to failover cluster {scope}{demote}?", "failover")
    reply = call(target, "POST", f"{_control_url(target, view, candidate)}/failover", {"candidate": candidate},
                 timeout=SWITCHOVER_TIMEOUT)
    _report("failover", reply, target, scope)


COMMANDS: tuple[click.Command, ...] = (switchover_cmd, failover_cmd)
