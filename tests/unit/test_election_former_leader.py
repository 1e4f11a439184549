"""The former leader of a switchover (the failover key's leader) during a leader race: it stands
back while another member could be promoted and takes over when none can; the others do not
compare their WAL with it (Patroni's manual_failover_process_no_leader)."""

from __future__ import annotations

import pytest

from appliance.core.election import ineligible_reason
from appliance.core.model import ClusterView, Failover, Member, Role, SyncState
from appliance.core.state import DataDir, HaSettings, LocalState, PeerStatus
from appliance.core.tags import Tags

MEMBERS = tuple(Member(name=n, state="running", role="replica") for n in ("node1", "node2", "node3"))


def _view(sync: SyncState | None = None) -> ClusterView:
    return ClusterView(initialize="1", leader=None, members=MEMBERS, failover=Failover(leader="node2"), sync=sync)


def _local(name: str, wal: int, *peers: PeerStatus) -> LocalState:
    return LocalState(name=name, now=1.0, wall_time=1.0, data_dir=DataDir.VALID, running=True, role=Role.REPLICA,
                      wal_position=wal, replication_state="in archive recovery", peers=peers)


def _peer(name: str, wal: int, running: bool = True, **kw: object) -> PeerStatus:
    return PeerStatus(name=name, reachable=True, role="replica", running=running, wal_position=wal, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("peers", "sync", "eligible"), [
    ((_peer("node1", 100), _peer("node3", 100)), None, False),  # others can: stand back
    ((_peer("node1", 100, running=False), PeerStatus("node3", False)), None, True),  # nobody else: take over
    ((_peer("node1", 100, tags=Tags({"nofailover": True})),), None, True),
    # Synchronous mode: neither the sync key's stale leader nor a non-synchronous replica counts.
    ((_peer("node1", 100), _peer("node3", 100)), SyncState(leader="node1", sync_standby=("node2",)), True),
    ((_peer("node1", 100), _peer("node3", 100)), SyncState(leader="node1", sync_standby=("node3",)), False),
])
def test_the_former_leader_takes_over_only_when_nobody_else_can(peers: tuple[PeerStatus, ...],
                                                                sync: SyncState | None, eligible: bool) -> None:
    cfg = HaSettings(synchronous_mode=sync is not None)
    why = ineligible_reason(_view(sync), _local("node2", 200, *peers), cfg)
    assert (why is None) is eligible, why


def test_the_others_do_not_defer_to_the_former_leaders_wal() -> None:
    local = _local("node1", 100, _peer("node2", 200), _peer("node3", 100))
    assert ineligible_reason(_view(), local, HaSettings()) is None


def test_the_former_leader_that_takes_over_cancels_the_switchover() -> None:
    """Else, as leader again, it would carry the same switchover out again: a demote/promote loop
    (the random simulation found one, 22 timelines in a minute)."""
    from appliance.core import actions as a
    from appliance.core.decide import decide

    local = _local("node2", 200, _peer("node1", 100, running=False))
    acts = decide(_view(), local, HaSettings())
    assert [type(act) for act in acts] == [a.AcquireLeader, a.ClearFailover, a.Promote]


def test_a_named_candidate_that_may_not_promote_is_not_waited_for() -> None:
    """Found by the random simulation: a failover key naming a replica outside the sync set (written
    while the leader was cut off) made the sync standby wait for it, and it never promoted."""
    sync = SyncState(leader="node1", sync_standby=("node2",))
    view = ClusterView(initialize="1", leader=None, members=MEMBERS, failover=Failover(leader="node1", member="node3"),
                       sync=sync)
    cfg = HaSettings(synchronous_mode=True)
    local = _local("node2", 200, _peer("node1", 100), _peer("node3", 200))
    assert ineligible_reason(view, local, cfg) is None
    # Outside synchronous mode the same candidate may promote: it is waited for.
    assert ineligible_reason(view, local, HaSettings()) == "a manual failover names node3"
