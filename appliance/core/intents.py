"""Pure handling of node-local operator intents: what to do, or why it is refused."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from appliance.core import actions as a
from appliance.core.model import ClusterView
from appliance.core.state import LocalState


@dataclass(frozen=True)
class IntentPlan:
    """Actions to run for an intent, or a refusal reason (then ``actions`` is empty)."""

    actions: tuple[a.Action, ...] = ()
    refused: str | None = None


def _restart_conditions(params: Mapping[str, Any], local: LocalState) -> str | None:
    """Patroni's restart filters, re-checked when a scheduled restart comes due."""
    role = params.get("role")
    if role:
        mine = local.role.value if local.role else None
        wanted = "primary" if role == "master" else role
        if mine != wanted:
            return f"restart conditions are not satisfied: role is {mine}, not {wanted}"
    if params.get("restart_pending") and not local.pending_restart:
        return "restart conditions are not satisfied: no restart is pending"
    return None


def plan_intent(kind: str, view: ClusterView | None, local: LocalState,
                params: Mapping[str, Any] | None = None) -> IntentPlan:
    if kind == "reload":
        return IntentPlan((a.ReloadConfig("operator asked for a reload"),))
    if local.job is not None:
        if kind == "reinitialize" and (params or {}).get("force"):
            return IntentPlan(refused=f"{local.job} already in progress, and force cannot cancel it: a running job "
                                      "is never interrupted half-way; it ends at its own deadline, then retry")
        return IntentPlan(refused=f"{local.job} already in progress")
    if kind == "restart":
        if not local.running:
            return IntentPlan(refused="PostgreSQL is not running")
        why = _restart_conditions(params or {}, local)
        if why:
            return IntentPlan(refused=why)
        timeout = (params or {}).get("timeout")
        return IntentPlan((a.RestartPostgres("operator asked for a restart",
                                             timeout=float(timeout) if timeout else None),))
    if kind == "reinitialize":
        if view is None:
            return IntentPlan(refused="DCS unreachable: cannot find the leader to clone from")
        if view.leader_name == local.name:
            return IntentPlan(refused="I am the leader, can not reinitialize")
        leader = view.member(view.leader_name)
        if view.leader is None or leader is None or leader.state != "running":
            return IntentPlan(refused="Cluster has no leader, can not reinitialize")
        return IntentPlan((a.Reinitialize(f"operator asked to re-clone from {leader.name}", source=leader),))
    return IntentPlan(refused=f"unknown intent {kind}")
