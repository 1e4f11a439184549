"""The named node states and the transition table: classification by table, every decision of
decide() inside the table, unlisted transitions reported, the diagram."""

from __future__ import annotations

import dataclasses

import pytest

from appliance.core import actions as a
from appliance.core.decide import decide
from appliance.core.model import ClusterView, HistoryEntry, Leader, Member, Role
from appliance.core.state import DataDir, HaSettings, LocalState
from appliance.core.states import DECISIVE, TABLE, NodeState, classify, mermaid, transition

S = NodeState


def _view(leader: str | None = "node1", leader_state: str = "running", history: tuple[HistoryEntry, ...] = (),
          leader_tl: int = 1) -> ClusterView:
    members = (Member(name="node1", state=leader_state, role="primary", timeline=leader_tl),
               Member(name="node2", state="running", role="replica"))
    return ClusterView(initialize="7000", leader=Leader(name=leader) if leader else None, members=members,
                       history=history)


def _local(**kw: object) -> LocalState:
    base: dict[str, object] = {"name": "node2", "now": 100.0, "data_dir": DataDir.VALID, "sysid": "7000",
                               "running": True, "role": Role.REPLICA, "timeline": 1, "wal_position": 5000,
                               "replication_state": "streaming"}
    base.update(kw)
    return LocalState(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(("view", "local", "state"), [
    (_view(), _local(job="clone"), S.CLONING),
    (_view(), _local(job="reinitialize"), S.RECLONING),
    (_view(), _local(job="rewind"), S.REWINDING),
    (_view(), _local(job="restart"), S.STARTING),
    (None, _local(job="bootstrap"), S.BOOTSTRAPPING),
    (_view(), _local(data_dir=DataDir.EMPTY, running=False), S.UNINITIALIZED),
    (_view(), _local(data_dir=DataDir.INCOMPLETE, running=False), S.BROKEN),
    (_view(), _local(data_dir=DataDir.INVALID, running=False), S.BROKEN),
    (_view(), _local(running=False, role=None), S.STOPPED),
    (_view(leader="node2"), _local(role=Role.PRIMARY, replication_state=None), S.PRIMARY),
    (_view(), _local(role=Role.PRIMARY, replication_state=None), S.UNLOCKED_PRIMARY),
    (None, _local(role=Role.PRIMARY, replication_state=None), S.UNLOCKED_PRIMARY),
    (_view(), _local(), S.REPLICA),
    (_view(), _local(replication_state="in archive recovery"), S.RECOVERING),
    # Our timeline 1 went on past the point (LSN 4000) where the leader's timeline 2 forked off it.
    (_view(history=(HistoryEntry(1, 4000, ""),), leader_tl=2),
     _local(replication_state="in archive recovery", leader_alive=True), S.DIVERGED),
    (_view(history=(HistoryEntry(1, 4000, ""),), leader_tl=2),
     _local(replication_state="in archive recovery", leader_alive=None), S.RECOVERING),
])
def test_classify(view: ClusterView | None, local: LocalState, state: NodeState) -> None:
    assert classify(view, local) is state


@pytest.mark.parametrize(("source", "acts", "target"), [
    (S.UNINITIALIZED, [a.TakeInitialize(""), a.AcquireLeader(""), a.Bootstrap("")], S.BOOTSTRAPPING),
    (S.REPLICA, [a.AcquireLeader(""), a.Promote("")], S.PRIMARY),
    (S.PRIMARY, [a.UpdateLeader(""), a.WriteStatus(""), a.EnsureSlots("")], S.PRIMARY),
    (S.PRIMARY, [a.UpdateLeader(""), a.Demote("", mode=a.DemoteMode.GRACEFUL)], S.STOPPED),
    (S.STOPPED, [a.UpdateLeader(""), a.StartPostgres("")], S.STARTING),
    (S.DIVERGED, [a.Rewind("")], S.REWINDING),
    (S.REPLICA, [a.Wait("")], S.REPLICA),
])
def test_transition_follows_the_last_decisive_action(source: NodeState, acts: list[a.Action],
                                                     target: NodeState) -> None:
    step = transition(source, acts)
    assert step.listed
    assert step.target is target


@pytest.mark.parametrize(("source", "acts"), [
    (S.PRIMARY, [a.Promote("")]),  # a primary is never promoted again
    (S.UNINITIALIZED, [a.Rewind("")]),  # nothing to rewind
    (S.REPLICA, [a.Demote("")]),  # only a read-write server is demoted
    (S.STOPPED, [a.AcquireLeader(""), a.Promote("")]),  # a stopped server cannot be promoted
])
def test_a_decision_outside_the_table_is_reported(source: NodeState, acts: list[a.Action]) -> None:
    step = transition(source, acts)
    assert not step.listed
    assert step.target is source  # no pretended progress


def test_every_row_is_unique_and_every_state_appears() -> None:
    keys = [(row.source, row.action) for row in TABLE]
    assert len(keys) == len(set(keys))
    mentioned = {row.source for row in TABLE} | {row.target for row in TABLE}
    assert set(NodeState) <= mentioned
    assert a.Wait not in DECISIVE and a.UpdateLeader not in DECISIVE


_CASES = [
    (_view(), _local()),  # replica of a running leader
    (_view(leader=None), _local()),  # leader race
    (_view(leader="node2"), _local()),  # holding the key as a replica: promote
    (_view(leader="node2"), _local(role=Role.PRIMARY, replication_state=None)),
    (_view(), _local(role=Role.PRIMARY, replication_state=None)),  # another leader: demote
    (None, _local(role=Role.PRIMARY, replication_state=None, lease_ok_at=0.0)),  # DCS lost: demote
    (_view(), _local(running=False, role=None, was_primary=True)),  # former primary: rewind
    (_view(), _local(running=False, role=None)),  # start as replica
    (_view(leader="node2"), _local(running=False, role=None, pg_down_since=0.0)),  # start timed out
    (_view(), _local(data_dir=DataDir.EMPTY, running=False, role=None)),  # clone
    (_view(), _local(data_dir=DataDir.INCOMPLETE, running=False, role=None)),  # re-clone
    (_view(history=(HistoryEntry(1, 4000, ""),), leader_tl=2),
     _local(replication_state="in archive recovery", leader_alive=True)),  # diverged: rewind
    (_view(), _local(following="node3")),  # follow the leader
    (_view(), _local(data_dir=DataDir.VALID, sysid="other")),  # wrong cluster: fatal
]


@pytest.mark.parametrize(("view", "local"), _CASES)
@pytest.mark.parametrize("paused", [False, True])
def test_decide_stays_inside_the_table(view: ClusterView | None, local: LocalState, paused: bool) -> None:
    cfg = HaSettings(pause=paused)
    step = transition(classify(view, local), decide(view, local, cfg))
    assert step.listed, f"{step.source} --{step.action}--> is not in the table"
    stopping = dataclasses.replace(local, stopping=True)
    assert transition(classify(view, stopping), decide(view, stopping, cfg)).listed


def test_mermaid_diagram_names_every_row() -> None:
    text = mermaid()
    assert text.startswith("stateDiagram-v2")
    assert "replica --> primary: Promote" in text
    assert "any_state --> fatal: Fatal" in text


def test_architecture_doc_shows_the_current_table() -> None:
    from pathlib import Path

    from appliance.core.states import markdown

    text = (Path(__file__).resolve().parents[2] / "docs" / "architecture.md").read_text()
    shown = text.split("<!-- states:begin -->\n", 1)[1].split("\n<!-- states:end -->", 1)[0]
    assert shown == markdown(), "docs/architecture.md is stale: paste `python -m appliance.core.states` into it"


def test_the_closed_action_union_names_every_action_class() -> None:
    from typing import get_args

    def subclasses(cls: type) -> set[type]:
        found = set(cls.__subclasses__())
        for sub in list(found):
            found |= subclasses(sub)
        return found

    assert set(a.CONCRETE) == subclasses(a.Action) == set(get_args(a.AnyAction))
    with pytest.raises(TypeError):
        a.closed(a.Action("a bare action is not executable"))


def test_merged_history_keeps_known_rows_and_stamps_new_ones() -> None:
    from appliance.core.timelines import merged_history

    known = (HistoryEntry(1, 100, "r", "t0", "node1"),)
    own = (HistoryEntry(1, 100, "r"), HistoryEntry(2, 200, "r2"))
    assert merged_history(known, own, "node2", "t1") == (known[0], HistoryEntry(2, 200, "r2", "t1", "node2"))
    moved = (HistoryEntry(1, 150, "r"),)  # the same timeline forked at another LSN: ours wins
    assert merged_history(known, moved, "node2", "t1") == (HistoryEntry(1, 150, "r", "t1", "node2"),)
    assert merged_history(known, (), "node2", "t1") == known
