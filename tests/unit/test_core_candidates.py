"""One candidate rule: the REST API's 412 reasons, the leader's switchover handling and the election agree."""

from __future__ import annotations

from typing import Any

import pytest

from appliance.api.switchover_checks import CandidateCheck
from appliance.core import actions as a
from appliance.core.candidates import candidate_problem
from appliance.core.election import ineligible_reason
from appliance.core.failover_key import switchover_actions
from appliance.core.model import ClusterStatus, ClusterView, Failover, Leader, Member, SyncState
from appliance.core.state import DataDir, HaSettings, LocalState, PeerStatus
from appliance.core.tags import Tags

# (candidate n2's member fields, sync key standbys or None, synchronous_mode, expected reason)
CASES: list[tuple[dict[str, Any], tuple[str, ...] | None, bool, str | None]] = [
    ({}, None, False, None),
    ({"state": "stopped"}, None, False, "state is 'stopped', not running"),
    ({"tags": {"nofailover": True}}, None, False, "tagged nofailover"),
    ({"tags": {"nofailover": "on"}}, None, False, "tagged nofailover"),
    ({"tags": {"failover_priority": 0}}, None, False, "failover_priority is 0"),
    ({"tags": {"failover_priority": 2}}, None, False, None),
    ({}, ("n3",), True, "not a synchronous standby (sync key: n3)"),
    ({}, ("n2",), True, None),
    ({}, ("n3",), False, None),  # the sync key only counts in synchronous mode
]


def cluster(fields: dict[str, Any], standbys: tuple[str, ...] | None, sync_mode: bool,
            failover: Failover | None = None) -> ClusterView:
    members = (Member("n1", state="running", role="primary", xlog_location=1000),
               Member("n2", state=fields.get("state", "running"), tags=Tags(fields.get("tags", {})), xlog_location=1000,
                      api_url="http://n2:8008/patroni"))
    return ClusterView(initialize="1", config={"synchronous_mode": sync_mode}, leader=Leader("n1"), members=members,
                       sync=SyncState("n1", standbys) if standbys is not None else None,
                       failover=failover, status=ClusterStatus(optime=1000))


@pytest.mark.parametrize(("fields", "standbys", "sync_mode", "reason"), CASES)
def test_every_judge_of_a_candidate_agrees(fields: dict[str, Any], standbys: tuple[str, ...] | None,
                                            sync_mode: bool, reason: str | None) -> None:
    view = cluster(fields, standbys, sync_mode)
    n2 = view.member("n2")
    assert n2 is not None
    assert candidate_problem(view, n2, sync_only=sync_mode) == reason
    # The REST API's 412 reason for the candidate.
    assert CandidateCheck(view, None).from_dcs(n2) == reason
    # The leader carrying out a switchover to it.
    cfg = HaSettings(synchronous_mode=sync_mode)
    leader = LocalState(name="n1", now=100.0, data_dir=DataDir.VALID, running=True, wal_position=1000)
    acts = switchover_actions(cluster(fields, standbys, sync_mode, Failover("n1", "n2")), leader, cfg)
    assert acts is not None
    if reason is None:
        assert [x.kind for x in acts] == ["Demote"]
    else:
        assert [x.kind for x in acts] == ["ClearFailover"]
        assert isinstance(acts[0], a.ClearFailover)
        assert acts[0].reason == f"switchover cancelled: candidate n2: {reason}"
    # The election: a peer the rule rejects never outruns us; one it accepts (more WAL) does.
    peer = PeerStatus("n2", True, "replica", True, 2000, tags=n2.tags)
    me = LocalState(name="n3", now=100.0, data_dir=DataDir.VALID, running=True, wal_position=1000, peers=(peer,))
    no_leader = ClusterView(initialize="1", members=view.members, sync=view.sync, status=view.status)
    outran = ineligible_reason(no_leader, me, cfg)
    assert (outran is None) is (reason is not None and not reason.startswith("state"))  # peers: no state


def test_the_election_says_our_own_tags_and_sync_the_same_way() -> None:
    me = LocalState(name="n2", now=100.0, data_dir=DataDir.VALID, running=True, wal_position=1000)
    view = cluster({}, ("n3",), True)
    assert ineligible_reason(view, me, HaSettings(tags=Tags({"nofailover": True}))) == "tagged nofailover"
    assert ineligible_reason(view, me, HaSettings(tags=Tags({"failover_priority": 0}))) == "failover_priority is 0"
    assert ineligible_reason(view, me, HaSettings(synchronous_mode=True)) == (
        "synchronous_mode: not a synchronous standby (sync key: n3)")
