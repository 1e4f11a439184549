"""POST/DELETE /restart: Patroni's filters (role, postgres_version, restart_pending, timeout, schedule)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from flask import Response

from appliance.api.body import BadInput, json_body, optional_bool, text
from appliance.api.context import ApiContext
from appliance.api.switchover_checks import parse_schedule
from appliance.channel.state import StateDoc, postgres_of
from appliance.core.model import Role

ROLES = (Role.PRIMARY, Role.STANDBY_LEADER, Role.REPLICA)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|min|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def postgres_version_to_int(version: str) -> int:
    """"15.2" → 150002, "9.6.3" → 90603 (Patroni's rule); ValueError with Patroni's message otherwise."""
    try:
        parts = [int(p) for p in version.split(".")]
    except ValueError:
        raise ValueError(f"Invalid PostgreSQL version format: X.Y or X.Y.Z is accepted: {version}") from None
    if len(parts) < 2 or (len(parts) == 2 and parts[0] < 10) or len(parts) > 3:
        raise ValueError(f"Invalid PostgreSQL major version format: X.Y or X.Y.Z is accepted: {version}")
    if len(parts) == 2:
        parts.insert(1, 0)
    return int("".join(f"{p:02d}" for p in parts))


def parse_timeout(value: Any) -> float | None:
    """Seconds from 30, 30.5, "30", "30s", "2min", "1h"; None when unparsable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]
    return None


def validate(body: dict[str, Any], now: datetime) -> tuple[dict[str, Any], Response | None]:
    """Check every key in order (Patroni's messages); returns the normalized filters or the answer."""
    out: dict[str, Any] = {}
    for key, value in body.items():
        if key == "schedule":
            if not isinstance(value, str):
                raise BadInput(f"schedule must be an ISO-8601 string (got {json.dumps(value)})", field=key)
            when, refusal = parse_schedule(value, "restart", now)
            if refusal is not None:
                return out, text(refusal.status, refusal.message)
            out[key] = when
        elif key == "role":
            if value not in ROLES:
                return out, text(400, "PostgreSQL role should be either primary, standby_leader, or replica")
            out[key] = value
        elif key == "postgres_version":
            try:
                postgres_version_to_int(str(value))
            except ValueError as exc:
                return out, text(400, str(exc))
            out[key] = str(value)
        elif key == "timeout":
            seconds = parse_timeout(value)
            if seconds is None or seconds <= 0:
                return out, text(400, "Timeout should be a positive number of seconds")
            out[key] = seconds
        elif key == "restart_pending":
            out[key] = optional_bool(body, key)
        else:
            return out, text(400, f"Unknown filter for the scheduled restart: {key}")
    return out, None


def unmet_condition(filters: dict[str, Any], doc: StateDoc) -> str | None:
    """Patroni's restart_matches against this node's published state."""
    patroni = doc.get("patroni_doc") or {}
    role = postgres_of(doc).get("role") or patroni.get("role")
    if filters.get("role") and filters["role"] != role:
        return f"host role mismatch (this node is {role}, the request wants {filters['role']})"
    version = filters.get("postgres_version")
    current = patroni.get("server_version")
    if version and isinstance(current, int) and postgres_version_to_int(version) <= current:
        return f"postgres version mismatch (running {current}, the request restarts only below {version})"
    if filters.get("restart_pending") and not patroni.get("pending_restart"):
        return "pending restart flag is not set"
    return None


def post_restart(ctx: ApiContext) -> Response:
    body = json_body(required=False)
    doc = ctx.reader() or {}
    if doc.get("paused") and "schedule" in body:
        return text(500, "Can't schedule restart in the paused state")
    filters, refusal = validate(body, datetime.fromtimestamp(ctx.wall(), UTC))
    if refusal is not None:
        return refusal
    if "schedule" in filters:
        return _schedule(ctx, filters)
    doc = ctx.fresh_state()
    why = unmet_condition(filters, doc)
    if why:
        return text(503, f"restart conditions are not satisfied: {why}")
    intent = ctx.submit("restart", filters)
    outcome = ctx.wait(intent, float(filters.get("timeout") or ctx.restart_wait), ("done", "failed", "refused"))
    if outcome is None:
        return text(503, "postgres is still starting")
    status, reason = outcome.get("status"), outcome.get("reason") or ""
    if status == "done":
        return text(200, "restarted successfully")
    if status == "failed":
        return text(503, f"restart failed: {reason}" if reason else "restart failed")
    return text(503, reason or f"restart {status}")


def _schedule(ctx: ApiContext, filters: dict[str, Any]) -> Response:
    doc = ctx.fresh_state()
    if doc.get("scheduled_restart"):
        return text(409, "Another restart is already scheduled")
    intent = ctx.submit("restart", filters)
    outcome = ctx.wait(intent, ctx.pickup_wait, ("scheduled", "refused", "failed", "done"))
    if outcome is not None and outcome.get("status") in ("refused", "failed"):
        return text(503, str(outcome.get("reason") or "the manager refused to schedule the restart"))
    if outcome is not None and outcome.get("status") == "withdrawn":
        return text(503, str(outcome.get("reason")))
    return text(202, "Restart scheduled")


def delete_restart(ctx: ApiContext) -> Response:
    doc = ctx.fresh_state()
    if not doc.get("scheduled_restart"):
        return text(404, "no restarts are scheduled")
    intent = ctx.submit("cancel_restart")
    outcome = ctx.wait(intent, ctx.pickup_wait, ("done", "refused", "failed"))
    if outcome is None or outcome.get("status") != "done":
        why = (outcome or {}).get("reason") or "the manager did not confirm"
        return text(503, f"could not delete the scheduled restart: {why}")
    return text(200, "scheduled restart deleted")
