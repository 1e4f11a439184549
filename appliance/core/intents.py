"""Pure handling of node-local operator intents: what to do, or why it is refused, and the scheduled restart."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from appliance.core import actions as a
from appliance.core.failover_key import scheduled_epoch
from appliance.core.model import ClusterView, PgState, Role
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
        wanted = Role.PRIMARY if role == Role.MASTER else role
        if mine != wanted:
            return f"restart conditions are not satisfied: role is {mine}, not {wanted}"
    if params.get("restart_pending") and not local.pending_restart:
        return "restart conditions are not satisfied: no restart is pending"
    return None


def plan_intent(kind: str, view: ClusterView | None, local: LocalState,
                params: Mapping[str, Any] | None = None, paused: bool = False) -> IntentPlan:
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
        if local.role is Role.PRIMARY and not paused and (view is None or view.leader_name != local.name):
            # It would come back writable without the key: the HA loop demotes it instead.
            return IntentPlan(refused="this primary does not hold the leader key" if view is not None
                              else "the DCS is unreachable: a primary restarts only under a confirmed leader key")
        timeout = (params or {}).get("timeout")
        return IntentPlan((a.RestartPostgres("operator asked for a restart",
                                             timeout=float(timeout) if timeout else None, role=local.role),))
    if kind == "reinitialize":
        if view is None:
            return IntentPlan(refused="DCS unreachable: cannot find the leader to clone from")
        if view.leader_name == local.name:
            return IntentPlan(refused="I am the leader, can not reinitialize")
        leader = view.member(view.leader_name)
        if view.leader is None or leader is None or leader.state != PgState.RUNNING:
            return IntentPlan(refused="Cluster has no leader, can not reinitialize")
        return IntentPlan((a.Reinitialize(f"operator asked to re-clone from {leader.name}", source=leader),))
    return IntentPlan(refused=f"unknown intent {kind}")


@dataclass(frozen=True)
class IntentRequest:
    """An operator's request as the core sees it (the manager's intent queue delivers them)."""

    kind: str
    params: Mapping[str, Any] = field(default_factory=dict)
    id: str = ""


@dataclass(frozen=True)
class ScheduledRestart:
    """POST /restart with a schedule: the restart comes due at ``schedule`` (ISO 8601), then its
    conditions (role, restart_pending, timeout) are checked as for an immediate one."""

    schedule: str
    id: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class IntentDecision:
    """What becomes of one request: ``run`` its actions, or an outcome at once (done, refused, scheduled)."""

    id: str
    kind: str
    status: str  # "run" | "done" | "refused" | "scheduled"
    reason: str = ""
    actions: tuple[a.Action, ...] = ()


@dataclass(frozen=True)
class IntentRound:
    """This tick's requests. When one of them ``runs``, the tick serves them, after ``first`` (the
    leader key renewed while we hold it); otherwise the regular decide() runs."""

    decisions: tuple[IntentDecision, ...] = ()
    schedule: ScheduledRestart | None = None
    first: tuple[a.Action, ...] = ()

    @property
    def runs(self) -> bool:
        return any(d.status == "run" for d in self.decisions)


def plan_round(requests: Sequence[IntentRequest], schedule: ScheduledRestart | None, view: ClusterView | None,
               local: LocalState, paused: bool = False) -> IntentRound:
    """Every request of this tick (plus the scheduled restart once it is due), in order."""
    pending = list(requests)
    if schedule is not None and local.wall_time >= (scheduled_epoch(schedule.schedule) or 0):
        pending.append(IntentRequest("restart", dict(schedule.params), schedule.id))
        schedule = None
    decisions: list[IntentDecision] = []
    for req in pending:
        if req.kind == "cancel_restart":
            schedule = None
            decisions.append(IntentDecision(req.id, req.kind, "done"))
        elif req.kind == "restart" and req.params.get("schedule"):
            conditions = {k: v for k, v in req.params.items() if k != "schedule"}
            schedule = ScheduledRestart(str(req.params["schedule"]), req.id, conditions)
            decisions.append(IntentDecision(req.id, req.kind, "scheduled", str(req.params["schedule"])))
        else:
            plan = plan_intent(req.kind, view, local, req.params, paused)
            if plan.refused:
                decisions.append(IntentDecision(req.id, req.kind, "refused", plan.refused))
            else:
                decisions.append(IntentDecision(req.id, req.kind, "run", actions=plan.actions))
    first: tuple[a.Action, ...] = ()
    if any(d.status == "run" for d in decisions) and view is not None and view.leader_name == local.name:
        first = (a.UpdateLeader("keep the leader key while serving an intent"),)
    return IntentRound(tuple(decisions), schedule, first)
