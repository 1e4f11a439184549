"""Node-local intents: what each becomes, and why one is refused."""

from __future__ import annotations

import pytest

from appliance.core.intents import plan_intent
from appliance.core.model import ClusterView, Leader, Member, Role
from appliance.core.state import DataDir, LocalState


def local(role: Role | None = Role.REPLICA, running: bool = True, **kw: object) -> LocalState:
    return LocalState(name="n2", now=1.0, data_dir=DataDir.VALID, running=running, role=role, **kw)  # type: ignore[arg-type]


VIEW = ClusterView(initialize="1", leader=Leader("n1"),
                   members=(Member("n1", conn_url="postgres://a:5432/postgres", state="running", role="primary"),
                            Member("n2", state="running")))


@pytest.mark.parametrize(("kind", "view", "state", "params", "expected"), [
    ("reload", VIEW, local(), {}, "ReloadConfig"),
    ("restart", VIEW, local(), {}, "RestartPostgres"),
    ("restart", VIEW, local(running=False, role=None), {}, "refused:not running"),
    ("restart", VIEW, local(job="clone"), {}, "refused:clone already in progress"),
    ("restart", VIEW, local(), {"role": "primary"}, "refused:role is replica"),
    ("restart", ClusterView(leader=Leader("n2")), local(role=Role.PRIMARY), {"role": "master"}, "RestartPostgres"),
    ("restart", VIEW, local(), {"restart_pending": True}, "refused:no restart is pending"),
    ("restart", VIEW, local(pending_restart=True), {"restart_pending": True}, "RestartPostgres"),
    # A primary without the key would come back writable beside the leader: the HA loop demotes it.
    ("restart", VIEW, local(role=Role.PRIMARY), {}, "refused:does not hold the leader key"),
    ("restart", ClusterView(initialize="1"), local(role=Role.PRIMARY), {}, "refused:does not hold the leader key"),
    ("restart", None, local(role=Role.PRIMARY), {}, "refused:DCS is unreachable"),
    ("restart", None, local(), {}, "RestartPostgres"),  # a replica restarts read-only anyway
    ("reinitialize", VIEW, local(), {}, "Reinitialize"),
    ("reinitialize", ClusterView(leader=Leader("n2")), local(), {}, "refused:I am the leader"),
    ("reinitialize", ClusterView(), local(), {}, "refused:Cluster has no leader"),
    ("reinitialize", None, local(), {}, "refused:DCS unreachable"),
    ("reinitialize", VIEW, local(job="clone"), {"force": True}, "refused:force cannot cancel it"),
])
def test_plan_intent(kind: str, view: ClusterView | None, state: LocalState, params: dict[str, object],
                     expected: str) -> None:
    plan = plan_intent(kind, view, state, params)
    if expected.startswith("refused:"):
        assert not plan.actions and plan.refused and expected.split(":", 1)[1] in plan.refused
    else:
        assert plan.refused is None and [a.kind for a in plan.actions] == [expected]


def test_restart_timeout_bounds_the_start() -> None:
    (act,) = plan_intent("restart", VIEW, local(), {"timeout": 7}).actions
    assert getattr(act, "timeout", None) == 7.0
    (act,) = plan_intent("restart", VIEW, local(), {}).actions
    assert getattr(act, "timeout", None) is None


def test_a_restart_keeps_the_role_it_was_decided_in_and_paused_leaves_the_operator_in_charge() -> None:
    (act,) = plan_intent("restart", ClusterView(leader=Leader("n2")), local(role=Role.PRIMARY), {}).actions
    assert getattr(act, "role", None) is Role.PRIMARY  # published as "primary" while it runs
    (act,) = plan_intent("restart", VIEW, local(role=Role.PRIMARY), {}, paused=True).actions
    assert act.kind == "RestartPostgres"
