"""Control endpoints: switchover/failover through the DCS; restart, reload, reinitialize through the manager."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime

from flask import Flask, Response, jsonify

from appliance.api import restart as restart_rules
from appliance.api import switchover_checks as sw
from appliance.api.body import BadInput, json_body, optional_bool, optional_str, reject_unknown, text
from appliance.api.context import ApiContext, Unavailable
from appliance.channel import failsafe
from appliance.channel.state import StateDoc, postgres_of
from appliance.core.model import ClusterView, Failover, Role

FAILSAFE_KEYS = frozenset({"name", "conn_url", "api_url", "slots"})
SWITCHOVER_KEYS = frozenset({"leader", "candidate", "member", "scheduled_at"})
REINIT_KEYS = frozenset({"force", "from_leader", "from-leader"})
Handler = Callable[[], Response]


def answered(fn: Handler) -> Handler:
    """Turn malformed input into its 400/411 JSON answer and an unavailable dependency into a 503."""

    @functools.wraps(fn)
    def wrapper() -> Response:
        try:
            return fn()
        except BadInput as exc:
            return exc.response()
        except Unavailable as exc:
            return text(503, str(exc))

    return wrapper


def register(app: Flask, ctx: ApiContext) -> None:
    def route(path: str, method: str, fn: Handler) -> None:
        # No automatic OPTIONS: OPTIONS stays with the health handler, as in Patroni.
        endpoint = f"{method.lower()}_{path.strip('/')}"
        app.add_url_rule(path, endpoint, answered(fn), methods=[method], provide_automatic_options=False)

    route("/switchover", "POST", lambda: request_switchover(ctx, "switchover"))
    route("/failover", "POST", lambda: request_switchover(ctx, "failover"))
    route("/switchover", "DELETE", lambda: delete_switchover(ctx))
    route("/restart", "POST", lambda: restart_rules.post_restart(ctx))
    route("/restart", "DELETE", lambda: restart_rules.delete_restart(ctx))
    route("/reload", "POST", lambda: post_reload(ctx))
    route("/reinitialize", "POST", lambda: post_reinitialize(ctx))
    route("/failsafe", "POST", lambda: post_failsafe(ctx))


# --- switchover / failover --------------------------------------------------------------------------

def request_switchover(ctx: ApiContext, action: str) -> Response:
    """POST /switchover and POST /failover: Patroni's checks in order (contract §1.5)."""
    body = json_body(required=True)
    reject_unknown(body, SWITCHOVER_KEYS, f"POST /{action}")
    leader = optional_str(body, "leader")
    candidate = optional_str(body, "candidate") or optional_str(body, "member")
    scheduled = optional_str(body, "scheduled_at")
    if action == "failover" and not candidate:
        return text(400, "Failover could be performed only to a specific candidate")
    if action == "switchover" and not leader:
        return text(400, "Switchover could be performed only from a specific leader")
    if scheduled and action == "failover":
        return text(400, "Failover can't be scheduled")
    view = ctx.view()
    paused = bool((view.config or {}).get("pause"))
    when: str | None = None
    if scheduled:
        if paused:
            return text(400, "Can't schedule switchover in the paused state")
        when, refusal = sw.parse_schedule(scheduled, action, datetime.fromtimestamp(ctx.wall(), UTC))
        if refusal is not None:
            return text(refusal.status, refusal.message)
    if paused and not candidate:
        return text(400, "Switchover is possible only to a specific candidate in a paused state")
    if action == "failover" and leader:
        action = "switchover"  # Patroni: a failover naming the leader is a switchover
    if leader == candidate:
        return text(400, "Switchover target and source are the same")
    if when is None:
        refusal = sw.feasibility(view, leader, candidate, action, ctx.probe)
        if refusal is not None:
            resp = jsonify(refusal.body())
            resp.status_code = refusal.status
            return resp
    return _write_and_wait(ctx, view, Failover(leader, candidate, when), action)


def _write_and_wait(ctx: ApiContext, view: ClusterView, failover: Failover, action: str) -> Response:
    """Write the failover key; for an immediate request, wait for the new leader (§1.5 steps 6-7)."""
    started = ctx.wall()
    try:
        written = ctx.dcs_call(lambda d: d.write_failover(failover, None))
    except Unavailable as exc:
        return text(503, f"failed to write failover key into DCS: {exc}")
    if not written:
        return text(503, "failed to write failover key into DCS")
    if failover.scheduled_at is not None:
        return text(202, f"{action.title()} scheduled")
    code, message = sw.poll_result(ctx.read_raw, view.leader_name, failover.member, action,
                                   sw.poll_timeout(view), ctx.clock, ctx.sleep)
    if code == 503 and message.endswith(" failed"):
        why = _cleared_reason(ctx.reader(), started)
        message = f"{message}: {why}" if why else message
    return text(code, message)


def _cleared_reason(doc: StateDoc | None, since: float) -> str | None:
    """Why this node's manager cleared the failover key after ``since`` (when it was the one)."""
    for event in reversed((doc or {}).get("events") or []):
        if event.get("action") == "ClearFailover" and float(event.get("ts") or 0) >= since - 1:
            return str(event.get("reason") or "") or None
    return None


def delete_switchover(ctx: ApiContext) -> Response:
    view = ctx.view()
    fo = view.failover
    if fo is None or fo.empty or not fo.scheduled_at:
        return text(404, "no switchover is scheduled")
    if not ctx.dcs_call(lambda d: d.clear_failover(fo.mod_revision or None)):
        return text(409, "the failover key changed while deleting the scheduled switchover: read it again "
                         "(GET /cluster) and retry")
    return text(200, "scheduled switchover deleted")


# --- reload / reinitialize --------------------------------------------------------------------------

def post_reload(ctx: ApiContext) -> Response:
    ctx.fresh_state()
    ctx.submit("reload")
    return text(202, "reload scheduled")


def post_reinitialize(ctx: ApiContext) -> Response:
    body = json_body(required=False)
    reject_unknown(body, REINIT_KEYS, "POST /reinitialize")
    force = optional_bool(body, "force")
    from_leader = optional_bool(body, "from_leader") or optional_bool(body, "from-leader")
    ctx.fresh_state()
    intent = ctx.submit("reinitialize", {"force": force, "from_leader": from_leader})
    outcome = ctx.wait(intent, ctx.pickup_wait, ("running", "done", "failed", "refused"))
    if outcome is None:
        return text(503, "reinitialize status unknown: the manager took the request but did not report yet")
    status, reason = outcome.get("status"), outcome.get("reason") or ""
    if status in ("running", "done"):
        return text(200, "reinitialize started")
    if status == "failed":
        return text(503, f"reinitialize failed: {reason}" if reason else "reinitialize failed")
    return text(503, reason or f"reinitialize {status}")


# --- failsafe ---------------------------------------------------------------------------------------

def post_failsafe(ctx: ApiContext) -> Response:
    """A primary cut off from the DCS asks whether it may go on (Patroni's failsafe mode): accept,
    and note it so that this node's manager does not race for the leader key meanwhile."""
    body = json_body(required=True)
    reject_unknown(body, FAILSAFE_KEYS, "POST /failsafe")
    name = optional_str(body, "name")
    if not name:
        raise BadInput("name is required: the primary's member name", "name")
    for key in ("conn_url", "api_url"):
        optional_str(body, key)
    if "slots" in body and not isinstance(body["slots"], dict):
        raise BadInput("slots must be an object (slot name: LSN)", "slots")
    doc = ctx.fresh_state()
    if not doc.get("failsafe_mode"):
        return text(502, "failsafe_mode is not enabled")
    pg = postgres_of(doc)
    if pg.get("running") and pg.get("role") == Role.PRIMARY and name != doc.get("name"):
        return text(500, "Running as a leader")
    if ctx.run_dir is None:
        raise Unavailable("this API has no run_dir: cannot pass the failsafe request to the manager")
    failsafe.record(ctx.run_dir, name)
    resp = text(200, "Accepted")
    lsn = pg.get("receive_lsn") or pg.get("replay_lsn") or pg.get("wal_position")
    if isinstance(lsn, int):
        resp.headers["lsn"] = str(lsn)
    return resp
