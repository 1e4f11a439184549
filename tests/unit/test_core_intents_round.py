"""core.intents.plan_round and core.probes by table: what each request becomes, the scheduled
restart's life, and which peers the loop asks before deciding."""

from __future__ import annotations

import pytest

from appliance.core import actions as a
from appliance.core.intents import IntentRequest, ScheduledRestart, plan_round
from appliance.core.model import ClusterView, Failover, Leader, Member, Role
from appliance.core.probes import probe_leader, probe_peers, runs_as_primary
from appliance.core.state import DataDir, LocalState, PeerStatus

MEMBERS = (Member(name="node1", state="running", role="primary"), Member(name="node2", state="running"),
           Member(name="node3", state="running"))
WALL = 1_800_000_000.0  # 2027-01-15T08:00:00Z
PAST, FUTURE = "2027-01-15T07:00:00+00:00", "2027-01-15T09:00:00+00:00"


def _view(leader: str | None = "node1", failover: Failover | None = None) -> ClusterView:
    return ClusterView(initialize="1", leader=Leader(name=leader) if leader else None, members=MEMBERS,
                       failover=failover)


def _local(name: str = "node2", **kw: object) -> LocalState:
    base: dict[str, object] = {"name": name, "now": 10.0, "wall_time": WALL, "data_dir": DataDir.VALID,
                               "running": True, "role": Role.REPLICA, "replication_state": "streaming"}
    base.update(kw)
    return LocalState(**base)  # type: ignore[arg-type]


def test_no_request_and_no_due_schedule_leaves_the_tick_to_decide() -> None:
    sched = ScheduledRestart(FUTURE, "s1")
    plan = plan_round([], sched, _view(), _local())
    assert plan.decisions == () and plan.first == ()
    assert plan.schedule == sched


@pytest.mark.parametrize(("request_", "status", "kinds"), [
    (IntentRequest("restart", {}, "i1"), "run", [a.RestartPostgres]),
    (IntentRequest("reload", {}, "i1"), "run", [a.ReloadConfig]),
    (IntentRequest("reinitialize", {}, "i1"), "run", [a.Reinitialize]),
    (IntentRequest("restart", {"role": "primary"}, "i1"), "refused", []),
    (IntentRequest("restart", {"schedule": FUTURE}, "i1"), "scheduled", []),
    (IntentRequest("cancel_restart", {}, "i1"), "done", []),
    (IntentRequest("bogus", {}, "i1"), "refused", []),
])
def test_each_request(request_: IntentRequest, status: str, kinds: list[type[a.Action]]) -> None:
    plan = plan_round([request_], None, _view(), _local())
    (decision,) = plan.decisions
    assert (decision.id, decision.status) == ("i1", status)
    assert [type(act) for act in decision.actions] == kinds


def test_a_schedule_is_kept_with_its_conditions_then_runs_when_due() -> None:
    plan = plan_round([IntentRequest("restart", {"schedule": FUTURE, "role": "replica"}, "i1")], None,
                      _view(), _local())
    assert plan.schedule == ScheduledRestart(FUTURE, "i1", {"role": "replica"})
    due = plan_round([], ScheduledRestart(PAST, "i1", {"role": "replica"}), _view(), _local())
    assert due.schedule is None
    (decision,) = due.decisions
    assert (decision.id, decision.kind, decision.status) == ("i1", "restart", "run")
    refused = plan_round([], ScheduledRestart(PAST, "i1", {"role": "primary"}), _view(), _local())
    assert refused.decisions[0].status == "refused"


def test_cancel_drops_the_schedule() -> None:
    plan = plan_round([IntentRequest("cancel_restart", {}, "c")], ScheduledRestart(FUTURE, "s"), _view(), _local())
    assert plan.schedule is None


def test_the_leader_renews_its_key_before_serving_a_request() -> None:
    plan = plan_round([IntentRequest("reload", {}, "i")], None, _view("node2"), _local())
    assert [type(act) for act in plan.first] == [a.UpdateLeader]
    assert plan_round([IntentRequest("reload", {}, "i")], None, _view(), _local()).first == ()


@pytest.mark.parametrize(("view", "local", "asked"), [
    (_view(None), _local(), ("node1", "node3")),  # leader race: every other member
    (_view(), _local(), ()),  # a leader exists
    (None, _local(), ()),  # DCS unreachable
    (_view(None), _local(running=False), ()),  # nothing to race with
    (_view(None), _local(job="clone"), ()),
    # A manual failover names us: asked all the same, whether they still accept writes.
    (_view(None, Failover(member="node2")), _local(), ("node1", "node3")),
    (_view(None, Failover(member="node2", scheduled_at=FUTURE)), _local(), ("node1", "node3")),
])
def test_probe_peers(view: ClusterView | None, local: LocalState, asked: tuple[str, ...]) -> None:
    assert probe_peers(view, local) == asked


@pytest.mark.parametrize(("view", "local", "asked"), [
    (_view(), _local(replication_state="in archive recovery"), "node1"),
    (_view(), _local(), None),  # streaming: nothing to check
    (_view("node2"), _local(replication_state="in archive recovery"), None),  # we hold the key
    (_view(), _local(role=Role.PRIMARY, replication_state=None), None),
    (_view(None), _local(replication_state="in archive recovery"), None),
])
def test_probe_leader(view: ClusterView, local: LocalState, asked: str | None) -> None:
    assert probe_leader(view, local) == asked


@pytest.mark.parametrize(("answer", "alive"), [
    (PeerStatus("node1", True, role="primary", running=True), True),
    (PeerStatus("node1", True, role="master", running=True), True),
    (PeerStatus("node1", True, role="primary", running=False), False),  # a stale or hung manager
    (PeerStatus("node1", True, role="replica", running=True), False),
    (PeerStatus("node1", False), False),
])
def test_runs_as_primary(answer: PeerStatus, alive: bool) -> None:
    assert runs_as_primary(answer) is alive


def test_plan_tick_serves_requests_first_else_decides() -> None:
    from appliance.core.plan import plan_tick
    from appliance.core.state import HaSettings
    from appliance.core.states import NodeState

    served = plan_tick(_view(), _local(), HaSettings(), [IntentRequest("restart", {}, "r")], None)
    assert served.actions == () and served.requests.decisions[0].status == "run"
    assert (served.step.source, served.step.target) == (NodeState.REPLICA, NodeState.STARTING)
    regular = plan_tick(_view(), _local(), HaSettings(), [], ScheduledRestart(FUTURE, "s"))
    assert regular.requests.decisions == () and regular.requests.schedule == ScheduledRestart(FUTURE, "s")
    assert regular.actions and regular.step.listed


def test_a_refused_request_does_not_cost_the_tick_its_decision() -> None:
    """A refusal, a schedule or a cancellation only gets its outcome: decide() still runs this tick
    (an unlocked primary asked to restart is demoted at once, not a tick later)."""
    from appliance.core.plan import plan_tick
    from appliance.core.state import HaSettings

    unlocked = _local(name="node2", role=Role.PRIMARY, replication_state=None)
    plan = plan_tick(_view(), unlocked, HaSettings(), [IntentRequest("restart", {}, "r")], None)
    assert [d.status for d in plan.requests.decisions] == ["refused"] and plan.requests.first == ()
    assert [type(act) for act in plan.actions] == [a.Demote]
    scheduled = plan_tick(_view(), _local(), HaSettings(), [IntentRequest("restart", {"schedule": FUTURE}, "s")], None)
    assert scheduled.requests.decisions[0].status == "scheduled" and scheduled.actions
