"""synchronous_mode: quorum in decide(): the leader race's vote rule (Patroni's quorum check of the
healthiest-node test) and the primary's steps on synchronous_standby_names and the sync key."""

from __future__ import annotations

from dataclasses import replace

import pytest

from appliance.core import actions as a
from appliance.core.decide import decide
from appliance.core.election import ineligible_reason
from appliance.core.model import ClusterView, Failover, SyncState
from appliance.core.state import HaSettings, LocalState, PeerStatus, StandbyConn
from appliance.core.tags import Tags
from tests.unit.test_decide import kinds, member, primary, replica, view

QUORUM = HaSettings(synchronous_mode=True, synchronous_quorum=True)
QSTRICT = replace(QUORUM, synchronous_mode_strict=True)


def peer(name: str, wal: int = 1000, role: str = "replica", ago: float = 0.5, **kw: object) -> PeerStatus:
    """An answer published ``ago`` seconds before the probe (the race's tick is at 100.0, the leader
    key found free at 99.0)."""
    return PeerStatus(name=name, reachable=True, role=role, running=True, wal_position=wal,  # type: ignore[arg-type]
                      published_ago=ago, **kw)


def gone(name: str) -> PeerStatus:
    return PeerStatus(name=name, reachable=False)


def race(sync: SyncState, *peers: PeerStatus, name: str = "n2", wal: int = 1000,
         cfg: HaSettings = QUORUM, **kw: object) -> tuple[list[str], str | None]:
    v = view(leader=None, sync=sync, **kw)
    local = replica(name, wal_position=wal, peers=peers, leader_free_since=99.0)
    return kinds(decide(v, local, cfg)), ineligible_reason(v, local, cfg)


K = SyncState(leader="n1", sync_standby=("n2", "n3"), quorum=1)
WON = ["AcquireLeader", "Promote"]

RACES = [
    # (id, sync key, peers, candidate, its WAL, expected kinds, words in the refusal)
    ("a voter with the vote of the other voter wins", K, (gone("n1"), peer("n3")), "n2", 1000, WON, None),
    ("a voter alone does not reach quorum 1", K, (gone("n1"), gone("n3")), "n2", 1000, ["Wait"], "0 vote(s) of the 1"),
    ("a voter ahead of us wins instead", K, (gone("n1"), peer("n3", 1100)), "n2", 1000, ["Wait"], "n3 has more WAL"),
    ("the former primary counts as a vote when not ahead", K, (peer("n1", 900), gone("n3")), "n2", 1000, WON, None),
    ("the former primary ahead is ignored, and no vote", K, (peer("n1", 1200), gone("n3")), "n2", 1000,
     ["Wait"], "0 vote(s)"),
    ("a primary still running blocks every race", K, (peer("n1", role="primary"), peer("n3")), "n2", 1000,
     ["Wait"], "still running as primary"),
    ("a nofailover voter gives no vote",
     K, (gone("n1"), peer("n3", tags=Tags.from_json({"nofailover": True}))), "n2", 1000, ["Wait"], "0 vote(s)"),
    ("a voter that is down gives no vote", K, (gone("n1"), replace(peer("n3"), running=False)), "n2", 1000,
     ["Wait"], "0 vote(s)"),
    ("a non-voter needs quorum + 1 votes",
     SyncState(leader="n1", sync_standby=("n2",), quorum=0), (gone("n1"), peer("n2")), "n3", 1000, WON, None),
    ("a non-voter without a vote loses",
     SyncState(leader="n1", sync_standby=("n2",), quorum=0), (gone("n1"), gone("n2")), "n3", 1000,
     ["Wait"], "not a voter"),
    ("a non-voter ahead of us does not count", SyncState(leader="n1", sync_standby=("n2",), quorum=0),
     (gone("n1"), peer("n3", 5000)), "n2", 1000, WON, None),
    ("no voters: the former primary's vote is needed", SyncState(leader="n1", quorum=0),
     (gone("n1"), peer("n3")), "n2", 1000, ["Wait"], "not a voter"),
    ("no voters: the former primary behind us votes", SyncState(leader="n1", quorum=0),
     (peer("n1", 1000), peer("n3")), "n2", 1000, WON, None),
    # The answer comes from the state its manager published last: from before the key was freed,
    # the voter may have received more since (the old primary's last commits).
    ("an answer published before the vacancy is no vote", K, (gone("n1"), peer("n3", ago=1.5)), "n2", 1000,
     ["Wait"], "1 answer(s) from before the leader key was freed"),
    ("an answer without its age is no vote", K, (gone("n1"), peer("n3", ago=None)), "n2", 1000,  # type: ignore[arg-type]
     ["Wait"], "0 vote(s)"),
]


@pytest.mark.parametrize(("sync", "peers", "name", "wal", "expected", "why"), [c[1:] for c in RACES],
                         ids=[c[0] for c in RACES])
def test_quorum_leader_race(sync: SyncState, peers: tuple[PeerStatus, ...], name: str, wal: int,
                            expected: list[str], why: str | None) -> None:
    got, reason = race(sync, *peers, name=name, wal=wal)
    assert got == expected
    if why is None:
        assert reason is None
    else:
        assert reason is not None and why in reason


def test_the_former_primary_takes_the_key_again_when_nobody_is_ahead() -> None:
    v = view(leader=None, sync=K)
    local = replica("n1", peers=(gone("n2"), gone("n3")), leader_free_since=99.0)
    assert ineligible_reason(v, local, QUORUM) is None


def test_outside_quorum_mode_the_sync_key_still_rules() -> None:
    # synchronous_mode on: a member outside the sync key never races, votes or not.
    _, reason = race(SyncState(leader="n1", sync_standby=("n2",)), gone("n1"), peer("n2"), name="n3",
                     cfg=HaSettings(synchronous_mode=True))
    assert reason is not None and "not a synchronous standby" in reason


def test_a_switchover_needs_quorum_plus_one_voters_able_to_take_over() -> None:
    """The old primary of a switchover stands back only while quorum + 1 voters could take over."""
    fo = Failover(leader="n1")
    v = view(leader=None, sync=SyncState(leader="n1", sync_standby=("n2", "n3"), quorum=1), failover=fo)
    one = replica("n1", peers=(peer("n2"), gone("n3")), leader_free_since=99.0)
    assert ineligible_reason(v, one, QUORUM) is None  # only n2: it could not gather a vote; n1 stays
    both = replica("n1", peers=(peer("n2"), peer("n3")), leader_free_since=99.0)
    assert ineligible_reason(v, both, QUORUM) == "a switchover away from this node is in progress"


# --- the primary's steps ----------------------------------------------------------------------------
def conn(name: str, flush: int = 1000, state: str = "streaming", sync_state: str = "quorum") -> StandbyConn:
    return StandbyConn(name, state, sync_state, flush)


def sync_acts(v: ClusterView, local: LocalState, cfg: HaSettings = QUORUM) -> list[a.Action]:
    return [x for x in decide(v, local, cfg) if isinstance(x, (a.WriteSync, a.SetSyncStandbyNames))]


MINE = SyncState(leader="n1", quorum=0, mod_revision=5)
STREAMING = (conn("n2"), conn("n3"))


def test_a_new_leader_takes_the_sync_key_over_with_no_voters() -> None:
    acts = sync_acts(view(sync=SyncState(leader="n0", sync_standby=("n1", "n2"), quorum=1, mod_revision=9)),
                     primary(replication=STREAMING))
    assert acts == [a.WriteSync(acts[0].reason, standbys=(), revision=9, quorum=0)]


def test_the_ssn_names_the_standbys_before_they_vote() -> None:
    acts = sync_acts(view(sync=MINE), primary(replication=STREAMING, ssn_set_lsn=None))
    assert [(type(x).__name__, getattr(x, "value", None)) for x in acts] == [
        ("SetSyncStandbyNames", 'ANY 1 ("n2","n3")')]


def test_the_voters_follow_once_a_standby_confirmed() -> None:
    local = primary(replication=(conn("n2", 900), conn("n3", 1000)), synchronous_standby_names='ANY 1 ("n2","n3")',
                    ssn_set_lsn=1000)
    acts = sync_acts(view(sync=MINE), local)
    assert len(acts) == 1 and isinstance(acts[0], a.WriteSync)
    assert (acts[0].standbys, acts[0].quorum, acts[0].revision) == (("n2", "n3"), 1, 5)
    behind = replace(local, replication=(conn("n2", 900), conn("n3", 900)))
    assert sync_acts(view(sync=MINE), behind) == []


def test_steady_state_does_nothing() -> None:
    local = primary(replication=STREAMING, synchronous_standby_names='ANY 1 ("n2","n3")', ssn_set_lsn=1000)
    assert sync_acts(view(sync=SyncState(leader="n1", sync_standby=("n2", "n3"), quorum=1)), local) == []


def test_synchronous_node_count_two_waits_for_both() -> None:
    cfg = replace(QUORUM, synchronous_node_count=2)
    acts = sync_acts(view(sync=MINE), primary(replication=STREAMING), cfg)
    assert [getattr(x, "value", None) for x in acts] == ['ANY 2 ("n2","n3")']


def test_nosync_and_nofailover_standbys() -> None:
    members = (member("n1", role="primary"), member("n2", tags=Tags.from_json({"nosync": True})),
               member("n3", tags=Tags.from_json({"nofailover": True})))
    acts = sync_acts(view(sync=MINE, members=members), primary(replication=STREAMING))
    # n2 never; n3 only because synchronous_node_count 1 cannot be met otherwise
    assert [getattr(x, "value", None) for x in acts] == ['ANY 1 ("n3")']


def test_strict_quorum_without_standbys_blocks_commits() -> None:
    local = primary(replication=(), synchronous_standby_names='ANY 1 ("n2")', ssn_set_lsn=1000)
    acts = sync_acts(view(sync=SyncState(leader="n1", sync_standby=("n2",), quorum=0)), local, QSTRICT)
    assert isinstance(acts[0], a.WriteSync) and acts[0].standbys == ()
    after = replace(local)
    acts = sync_acts(view(sync=MINE), after, QSTRICT)
    assert [getattr(x, "value", None) for x in acts] == ["__patroni_strict_sync_replica_placeholder__"]


def test_leaving_quorum_mode_restarts_the_sync_key_from_no_standby() -> None:
    local = primary(replication=STREAMING, synchronous_standby_names='ANY 1 ("n2","n3")', ssn_set_lsn=1000)
    acts = sync_acts(view(sync=SyncState(leader="n1", sync_standby=("n2", "n3"), quorum=1, mod_revision=3)), local,
                     HaSettings(synchronous_mode=True))
    assert len(acts) == 1 and isinstance(acts[0], a.WriteSync)
    assert (acts[0].standbys, acts[0].quorum) == ((), 0)


def test_promotion_in_strict_quorum_mode_blocks_commits_until_the_key_is_ours() -> None:
    acts = decide(view(leader=None, sync=K), replica(peers=(gone("n1"), peer("n3")), leader_free_since=99.0), QSTRICT)
    promote = [x for x in acts if isinstance(x, a.Promote)]
    assert promote and promote[0].strict_sync


def test_the_leader_carries_out_a_switchover_without_candidate_only_with_enough_voters() -> None:
    """Patroni's is_failover_possible in quorum mode: quorum + 1 running voters, else the request
    is cancelled instead of demoting a primary nobody could replace."""
    key = SyncState(leader="n1", sync_standby=("n2", "n3"), quorum=1)
    fo = Failover(leader="n1", mod_revision=4)
    both = decide(view(sync=key, failover=fo), primary(), QUORUM)
    assert "Demote" in kinds(both)
    members = (member("n1", role="primary"), member("n2"), member("n3", state="stopped"))
    one = decide(view(sync=key, failover=fo, members=members), primary(), QUORUM)
    cancel = [x for x in one if isinstance(x, a.ClearFailover)]
    assert "Demote" not in kinds(one) and cancel and "1 running voter(s), 2 needed" in cancel[0].reason
    named = decide(view(sync=key, failover=Failover(leader="n1", member="n2"), members=members), primary(), QUORUM)
    assert "Demote" in kinds(named)  # a named candidate needs no quorum (Patroni)


# --- a switchover candidate in quorum mode must be in the sync key (Patroni) -------------------------
VOTER_N2 = SyncState(leader="n1", sync_standby=("n2",), quorum=0, mod_revision=5)


@pytest.mark.parametrize(("failover", "refused"), [
    (Failover(leader="n1", member="n3"), True),   # a switchover: its candidate must be a voter
    (Failover(member="n3"), False),               # a failover may name an asynchronous member
    (Failover(leader="n1", member="n2"), False),  # a voter may be named
])
def test_a_named_candidate_outside_the_voters_races_only_for_a_failover(failover: Failover, refused: bool) -> None:
    """A switchover to n3 (no voter) left in the failover key after a whole-cluster restart made n3
    skip every check and promote without the writes n2 acknowledged (the simulation's scenario)."""
    name = failover.member or ""
    v = view(leader=None, sync=VOTER_N2, failover=failover)
    local = replica(name, peers=(gone("n1"), peer("n2" if name == "n3" else "n3")), leader_free_since=99.0)
    reason = ineligible_reason(v, local, QSTRICT)
    if refused:
        assert reason is not None and "not a synchronous standby (sync key: n2)" in reason
    else:
        assert reason is None


def test_the_others_do_not_wait_for_a_switchover_candidate_that_may_not_promote() -> None:
    """n3, named by a switchover but no voter, cannot take over: n2 (a voter) races instead of waiting."""
    v = view(leader=None, sync=VOTER_N2, failover=Failover(leader="n1", member="n3"))
    local = replica("n2", peers=(gone("n1"), peer("n3")), leader_free_since=99.0)
    assert ineligible_reason(v, local, QSTRICT) is None


def test_the_leader_cancels_a_switchover_to_a_member_outside_the_voters() -> None:
    got = decide(view(sync=VOTER_N2, failover=Failover(leader="n1", member="n3", mod_revision=4)), primary(), QUORUM)
    cancel = [x for x in got if isinstance(x, a.ClearFailover)]
    assert "Demote" not in kinds(got) and cancel and "not a synchronous standby" in cancel[0].reason
    ok = decide(view(sync=VOTER_N2, failover=Failover(leader="n1", member="n2", mod_revision=4)), primary(), QUORUM)
    assert "Demote" in kinds(ok)
