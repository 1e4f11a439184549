"""Scripted scenarios on the simulated three-node cluster: the faults of the fencing issue, each with
the outcome a user sees (who is primary, when, and which acknowledged writes survive)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.sim.harness import Simulation

STRICT = {"synchronous_mode": True, "synchronous_mode_strict": True}


@pytest.fixture
def sim(tmp_path: Path) -> Simulation:
    cluster = Simulation(tmp_path)
    cluster.run(15)
    assert cluster.healthy() is None
    return cluster


def _strict(tmp_path: Path) -> Simulation:
    cluster = Simulation(tmp_path, dynamic=STRICT)
    cluster.run(20)
    assert cluster.healthy() is None
    return cluster


def _primary(sim: Simulation) -> str:
    leader = sim.leader()
    assert leader is not None
    return leader


def _heals(sim: Simulation, seconds: float = 60) -> None:
    sim.heal()
    sim.run(seconds)
    assert sim.verdicts.violations == []
    assert sim.healthy() is None


def test_bootstrap_one_primary_two_streaming_replicas(tmp_path: Path) -> None:
    cluster = Simulation(tmp_path)
    cluster.run(15)
    assert cluster.healthy() is None
    assert len(cluster.verdicts.promotions) == 0  # the bootstrap primary was never a replica
    assert cluster.verdicts.violations == []


def test_crash_of_the_primary_node_fails_over_within_ttl_and_it_rejoins(sim: Simulation) -> None:
    old = _primary(sim)
    crashed_at = sim.now
    sim.crash(old)
    sim.run(10)
    new = _primary(sim)
    assert new != old
    when = [t for t, name in sim.verdicts.promotions if name == new][-1]
    assert when - crashed_at <= 5 + 1.5  # ttl, plus a loop and the peer poll
    sim.boot(old)
    sim.run(20)
    assert sim.healthy() is None
    assert sim.verdicts.violations == []


def test_frozen_manager_is_fenced_before_a_replica_promotes(sim: Simulation) -> None:
    old = _primary(sim)
    sim.freeze_manager(old, 20)
    sim.run(10)
    assert sim.verdicts.violations == []  # never two writable, never two lease beliefs
    assert not sim.world.servers[old].running  # the fencer stopped it
    assert _primary(sim) != old
    sim.run(15)  # the manager wakes up and rejoins as a replica
    assert sim.healthy() is None


def test_strict_sync_failover_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    sim = _strict(tmp_path)
    acked_before = sum(1 for w in sim.world.ledger if w.acked)
    assert acked_before > 0
    old = _primary(sim)
    sim.crash(old)
    sim.run(15)
    assert _primary(sim) != old
    assert sim.lost_acknowledged() == []
    _heals(sim)
    assert sim.lost_acknowledged() == []


def test_partitioned_primary_stops_writing_and_the_majority_carries_on(sim: Simulation) -> None:
    old = _primary(sim)
    sim.isolate(old, True)
    sim.run(12)
    assert not sim.world.servers[old].writable
    assert _primary(sim) != old
    _heals(sim)


def test_dcs_outage_demotes_the_primary_and_promotes_nobody(sim: Simulation) -> None:
    sim.store.available = False
    sim.run(8)
    assert sim.world.writable() == []  # retry_timeout passed: read-only, nobody promoted
    sim.store.available = True
    sim.run(20)
    assert sim.healthy() is None
    assert sim.verdicts.violations == []


def test_whole_cluster_restart_rejoins_on_one_timeline(tmp_path: Path) -> None:
    sim = _strict(tmp_path)
    for _ in range(3):
        for name in ("node2", "node1", "node3"):
            sim.stop_manager(name)
            sim.run(0.5)
        for name in ("node1", "node2", "node3"):
            sim.boot(name)
        sim.run(40)
        assert sim.healthy() is None
        assert sim.lost_acknowledged() == []
    assert sim.verdicts.violations == []


def test_switchover_to_a_named_candidate(sim: Simulation) -> None:
    old = _primary(sim)
    candidate = next(n for n in sim.nodes if n != old)
    sim.switchover(old, candidate)
    sim.run(10)
    assert _primary(sim) == candidate
    sim.run(10)
    assert sim.healthy() is None
    assert sim.verdicts.violations == []


def test_primary_that_cannot_start_hands_over_after_primary_start_timeout(tmp_path: Path) -> None:
    sim = Simulation(tmp_path, dynamic={"primary_start_timeout": 10})
    sim.run(15)
    old = _primary(sim)
    sim.world.servers[old].fail_start = True
    sim.kill_postgres(old)
    sim.run(20)
    assert _primary(sim) != old
    assert sim.verdicts.violations == []
    _heals(sim)


def test_a_leader_whose_every_promotion_dies_backs_off_and_hands_over(tmp_path: Path) -> None:
    """Found by the chaos run on real processes (a full pg_wal): the winner of a leader race comes
    up read-only after each crash and dies at each promotion. It used to hold the key forever,
    restarting and promoting every 2 s: the start "succeeded", which reset primary_start_timeout's
    clock and the back-off. Now the key goes to the replica that can run as primary."""
    sim = Simulation(tmp_path, dynamic={"primary_start_timeout": 10})
    sim.run(15)
    old = _primary(sim)
    replicas = [n for n in sim.nodes if n != old]
    for name in replicas:
        sim.world.servers[name].fail_promote = True
    sim.crash(old)
    sim.run(8)
    broken = sim.leader()
    assert broken in replicas, f"the leader is {broken}"
    assert sim.world.writable() == []
    (healthy,) = [n for n in replicas if n != broken]
    sim.world.servers[healthy].fail_promote = False
    sim.run(25)
    assert _primary(sim) == healthy
    assert sim.world.writable() == [healthy]
    manager = sim.nodes[broken].manager
    assert manager is not None
    failed = [e for e in manager.events.recent() if e["kind"] == "retry" and e.get("job") == "promote"]
    assert 2 <= len(failed) <= 5, f"{len(failed)} failed promotions in 33 s: no back-off"
    assert sim.verdicts.violations == []
    sim.world.servers[broken].fail_promote = False
    _heals(sim)


def test_lagging_replica_is_not_promoted_past_maximum_lag(tmp_path: Path) -> None:
    sim = Simulation(tmp_path, dynamic={"maximum_lag_on_failover": 1000})
    sim.run(15)
    old = _primary(sim)
    others = [n for n in sim.nodes if n != old]
    for name in others:
        sim.hang_postgres(name, True)  # the replicas stop receiving WAL
    sim.run(3)
    for name in others:
        sim.hang_postgres(name, False)
        sim.isolate(name, True)  # and come back cut off from the primary's WAL
    sim.run(1)
    for name in others:
        sim.isolate(name, False)
    sim.crash(old)
    sim.run(15)
    assert sim.verdicts.violations == []
    assert sim.leader() is None  # nobody close enough to the last known position
    sim.boot(old)
    sim.run(30)
    assert sim.healthy() is None


def test_stopping_nodes_never_promote(sim: Simulation) -> None:
    """The stop request lands in the first tick after the lease ran out: no takeover from it."""
    old = _primary(sim)
    sim.crash(old)
    while sim.leader() is not None:
        sim.step()
    for name in sim.nodes:
        if name != old:
            sim.stop_manager(name)
    sim.run(10)
    assert sim.verdicts.promotions == []
    assert sim.verdicts.violations == []


def test_the_simulation_sees_two_writable_primaries_without_the_fencer(sim: Simulation,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The invariant check itself can fail: with the fencer's rule switched off, a frozen manager
    cut off from the others (who cannot ask it) leaves its PostgreSQL writable beside the new primary."""
    from appliance.fence.policy import FenceStep

    monkeypatch.setattr("tests.unit.sim.harness.step", lambda order, pg, now: FenceStep(None, "disarm"))
    old = _primary(sim)
    sim.freeze_manager(old, 20)
    sim.isolate(old, True)
    sim.run(10)
    assert any("two writable primaries" in v for v in sim.verdicts.violations)


def test_a_switchover_right_after_a_failover_never_leaves_the_cluster_without_a_leader(tmp_path: Path) -> None:
    """Found by the random schedules: in synchronous mode a switchover (no candidate) reached the new
    leader before it had rewritten the sync key; it demoted, nobody else could be promoted (the old
    leader crashed, the third node outside the sync key), and the former leader stood back forever.
    Patroni's rule: the former leader takes over again when no other member can."""
    sim = Simulation(tmp_path, dynamic={"synchronous_mode": True})
    sim.run(27)
    old = _primary(sim)
    sim.crash(old)
    while sim.leader() in (None, old):
        sim.step()
    new = _primary(sim)
    sim.switchover(new, None)
    sim.run(0.2)
    sim.heal()
    sim.run(40)
    assert sim.verdicts.violations == []
    assert sim.healthy() is None


def test_a_rejected_dcs_config_is_reported_until_the_good_one_is_restored(sim: Simulation) -> None:
    """Written behind the API's back (etcdctl): every manager keeps the last good config and says
    why; restoring it clears that (the integration test caught a manager that kept reporting it)."""
    good = dict(sim.view().config or {})
    sim.set_config(ttl=9_000_000_001)
    sim.run(3)
    assert all(n.manager is not None and n.manager._config_error for n in sim.nodes.values())
    assert sim.observer.write_config(good, sim.view().config_revision)
    sim.run(3)
    assert all(n.manager is not None and n.manager._config_error is None for n in sim.nodes.values())
    assert sim.healthy() is None


def test_resume_while_the_primary_manager_is_frozen(sim: Simulation) -> None:
    """Found by the random simulation. While paused the fencer is disarmed (pause means: never touch
    PostgreSQL, also while the manager is stopped for maintenance). If the primary's manager freezes
    right after the resume, before it has seen it, its lease runs out and its fencer still obeys the
    paused order. The racers ask it (gone from the DCS, its last member value said "pause"): its API
    sees a writable server beside a stale manager state, so nobody promotes; once thawed, its manager
    sees the resume and takes the key again."""
    old = _primary(sim)
    sim.set_config(pause=True)
    sim.run(1.0)
    sim.set_config(pause=False)
    sim.freeze_manager(old, 10)
    sim.run(10)
    assert sim.verdicts.violations == []
    assert sim.verdicts.promotions == []
    assert sim.world.writable() == [old]  # never fenced: nothing may touch it while its order says paused
    sim.run(5)
    assert sim.healthy() is None
    assert _primary(sim) == old
    assert sim.verdicts.violations == []


def _pause_and_resume(sim: Simulation, seen: bool) -> None:
    """A pause, then the resume; ``seen``: every manager has read it before the next fault."""
    sim.set_config(pause=True)
    sim.run(1.0)
    sim.set_config(pause=False)
    if seen:
        sim.run(2.5)


def _failed_over_within_ttl(sim: Simulation, old: str, since: float) -> None:
    new = _primary(sim)
    assert new != old
    when = [t for t, name in sim.verdicts.promotions if name == new][-1]
    assert when - since <= 5 + 1.5  # ttl, plus a loop and the peer poll: as without a pause


@pytest.mark.parametrize("seen", [True, False], ids=["resume-seen", "resume-unseen"])
def test_a_crash_right_after_a_resume_fails_over_as_usual(sim: Simulation, seen: bool) -> None:
    """The racers ask the crashed primary (its last member value said "pause"): unreachable counts as
    not writable, and the failover takes as long as without the pause."""
    old = _primary(sim)
    _pause_and_resume(sim, seen)
    crashed_at = sim.now
    sim.crash(old)
    sim.run(10)
    _failed_over_within_ttl(sim, old, crashed_at)
    assert sim.verdicts.violations == []
    _heals(sim)


@pytest.mark.parametrize("seen", [True, False], ids=["resume-seen", "resume-unseen"])
def test_a_primary_cut_off_from_everyone_right_after_a_resume_stops_writing_and_fails_over(
        sim: Simulation, seen: bool) -> None:
    """Seen: its fencer's order is armed and fences it. Unseen: it still believes in the pause, so its
    manager demotes it, since neither the DCS nor any member answers; the others, unable to reach it,
    promote as usual."""
    old = _primary(sim)
    _pause_and_resume(sim, seen)
    cut_at = sim.now
    sim.isolate(old, True)
    sim.run(10)
    assert not sim.world.servers[old].writable
    _failed_over_within_ttl(sim, old, cut_at)
    assert sim.verdicts.violations == []
    _heals(sim)


def test_a_paused_primary_cut_off_from_the_dcs_only_keeps_running(sim: Simulation) -> None:
    """An etcd outage during maintenance: the members still answer it, nothing is touched; resumed
    while it cannot see it, nobody promotes beside it (its API says it runs as primary)."""
    old = _primary(sim)
    sim.set_config(pause=True)
    sim.run(1.0)
    sim.cut_dcs(old, True)
    sim.run(10)
    assert sim.world.writable() == [old]
    sim.set_config(pause=False)
    sim.run(10)
    assert sim.world.writable() == [old]
    assert sim.verdicts.promotions == []
    sim.cut_dcs(old, False)
    sim.run(10)
    assert sim.healthy() is None
    assert _primary(sim) == old
    assert sim.verdicts.violations == []


def test_a_paused_primary_cut_off_from_everyone_stops_accepting_writes(sim: Simulation) -> None:
    """The price of closing the resume window: it cannot know whether the pause still holds, so it
    demotes although the cluster stays paused; nobody promotes until the resume."""
    old = _primary(sim)
    sim.set_config(pause=True)
    sim.run(1.0)
    sim.isolate(old, True)
    sim.run(10)
    assert sim.world.writable() == []
    sim.isolate(old, False)
    sim.run(5)
    assert sim.verdicts.promotions == []
    sim.set_config(pause=False)
    sim.run(30)
    assert sim.healthy() is None
    assert sim.verdicts.violations == []


@pytest.mark.parametrize("whole_node", [True, False])
def test_a_stop_right_after_a_resume_the_primary_never_saw(tmp_path: Path, whole_node: bool) -> None:
    """Found by a 1000-schedule campaign: the primary, cut off from the DCS right after a resume,
    still believes in the pause when it is stopped, so its manager leaves PostgreSQL running. A
    docker stop takes that server down with the container (the harness had left it running on a
    node marked down: two writable primaries); a stop of the manager alone leaves the API and the
    fencer (still on its paused order), and the API's view of PostgreSQL keeps the others from
    promoting beside it until the manager is back."""
    sim = Simulation(tmp_path)
    sim.run(15)
    old = _primary(sim)
    sim.set_config(pause=True)
    sim.run(1.0)
    sim.set_config(pause=False)
    sim.cut_dcs(old, True)
    sim.run(1.0)
    sim.stop_manager(old, whole_node=whole_node)
    sim.run(15)
    assert sim.verdicts.violations == []
    if whole_node:
        assert _primary(sim) != old
    else:
        assert sim.world.writable() == [old]  # nobody promoted beside it
    _heals(sim)


def test_a_racer_frozen_through_a_pause_still_asks_the_last_leader(tmp_path: Path) -> None:
    """Found by a 2000-schedule campaign: a replica's manager frozen through a whole pause and
    resume, then an etcd outage longer than the lease. The primary never saw the resume, so it kept
    running without the DCS (paused) with its fencer disarmed; the thawed replica's last picture of
    the leader predated the pause, so it raced and promoted without asking it: two writable
    primaries. A racer now compares the last leader's member value with the config revision it
    sees now, not only the one of its last read with a leader."""
    sim = Simulation(tmp_path)
    sim.run(15)
    old = _primary(sim)
    frozen = next(n for n in sim.nodes if n != old)
    sim.freeze_manager(frozen, 3.0)
    sim.run(1.5)
    sim.set_config(pause=True)
    sim.run(1.0)
    sim.set_config(pause=False)
    sim.store.available = False
    sim.run(5.0)
    sim.store.available = True
    sim.run(10)
    assert sim.verdicts.violations == []
    _heals(sim)


QUORUM_STRICT = {"synchronous_mode": "quorum", "synchronous_mode_strict": True}


def _quorum_settled(sim: Simulation) -> tuple[str, tuple[str, ...], int]:
    view = sim.view()
    assert view.sync is not None and view.leader_name is not None
    return view.leader_name, view.sync.sync_standby, view.sync.quorum or 0


@pytest.mark.parametrize(("count", "ssn_num", "quorum"), [(1, 1, 1), (2, 2, 0)])
def test_quorum_mode_settles_on_any_n_of_both_standbys(tmp_path: Path, count: int, ssn_num: int,
                                                       quorum: int) -> None:
    sim = Simulation(tmp_path, dynamic={**QUORUM_STRICT, "synchronous_node_count": count})
    sim.run(20)
    assert sim.healthy() is None
    leader, voters, got_quorum = _quorum_settled(sim)
    others = tuple(sorted(n for n in sim.nodes if n != leader))
    assert (voters, got_quorum) == (others, quorum)
    assert sim.world.servers[leader].ssn == f'ANY {ssn_num} ({",".join(chr(34) + n + chr(34) for n in others)})'
    assert sum(1 for w in sim.world.ledger if w.acked) > 0
    assert sim.verdicts.violations == []


def test_quorum_failover_with_one_voter_cut_off_waits_for_its_vote_and_loses_nothing(tmp_path: Path) -> None:
    """ANY 1 of two standbys, quorum 1. The primary crashes as one standby is cut off: the other alone
    cannot know it holds every acknowledged write, so nobody promotes until the cut-off one answers
    again; then the more advanced of the two takes over, with every acknowledged write."""
    sim = Simulation(tmp_path, dynamic=QUORUM_STRICT)
    sim.run(20)
    old, voters, _ = _quorum_settled(sim)
    cut, alone = voters
    sim.isolate(cut, True)
    sim.crash(old)
    sim.run(15)
    assert sim.world.writable() == []  # `alone` has 0 votes of the 1 needed
    assert sim.leader() is None
    sim.isolate(cut, False)
    sim.run(15)
    assert sim.leader() in (cut, alone)
    assert sim.lost_acknowledged() == []
    _heals(sim)
    assert sim.lost_acknowledged() == []
    assert sim.verdicts.violations == []


def test_quorum_shrinks_to_the_standby_left_and_it_may_then_take_over_alone(tmp_path: Path) -> None:
    """A standby gone for a few loops leaves the ssn first, then the voters (quorum 0 of the one left),
    so the primary's later crash is taken over by the one left, alone and with every acknowledged write."""
    sim = Simulation(tmp_path, dynamic=QUORUM_STRICT)
    sim.run(20)
    old, voters, _ = _quorum_settled(sim)
    cut, alone = voters
    sim.isolate(cut, True)
    sim.run(6)
    assert _quorum_settled(sim) == (old, (alone,), 0)
    assert sim.world.servers[old].ssn == f'ANY 1 ("{alone}")'
    sim.crash(old)
    sim.run(12)
    assert _primary(sim) == alone
    assert sim.lost_acknowledged() == []
    _heals(sim)
    assert sim.lost_acknowledged() == []


def test_quorum_switchover_without_a_candidate(tmp_path: Path) -> None:
    sim = Simulation(tmp_path, dynamic=QUORUM_STRICT)
    sim.run(20)
    old = _primary(sim)
    sim.switchover(old, None)
    sim.run(15)
    assert _primary(sim) != old
    _heals(sim)
    assert sim.lost_acknowledged() == []


def test_quorum_former_primary_takes_over_again_after_an_interrupted_switchover(tmp_path: Path) -> None:
    """Found by the random schedules: a switchover to node2 promotes it, and every node is stopped
    before node2 owns the sync key. Back up, node1, the key's leader, takes over again with no vote
    (Patroni's rule: nobody it sees is ahead of it); node2's new timeline acknowledged nothing in
    strict mode (commits wait until the key is its own), so nothing acknowledged is lost, and node2
    rejoins by rewind."""
    sim = Simulation(tmp_path, dynamic=QUORUM_STRICT)
    sim.run(16.5)
    old = _primary(sim)
    candidate = next(n for n in sorted(sim.nodes) if n != old)
    sim.switchover(old, candidate)
    sim.run(1.25)
    for name in sorted(sim.nodes):
        sim.stop_manager(name)
        sim.run(0.5)
    for name in sorted(sim.nodes):
        sim.boot(name)
    sim.run(2)
    assert [name for _, name in sim.verdicts.promotions] == [candidate, old]
    assert sim.verdicts.violations == []
    assert sim.lost_acknowledged() == []
    _heals(sim)
    assert sim.lost_acknowledged() == []


def test_quorum_strict_whole_restart_never_promotes_a_stale_node(tmp_path: Path) -> None:
    """Quorum mode, strict, synchronous_node_count 2: node1's manager is stopped alone, two
    switchovers and a hung and a killed PostgreSQL follow, then the whole cluster restarts. node1,
    on timeline 1 far behind, wins the leader race (the sync key names node3 as leader, node2 as the
    only voter, quorum 0) and promoted without 97 acknowledged writes: the switchover to node1 (no
    voter) stayed in the failover key, the leader had not refused it and the racer named by a failover
    key skipped every check. As in Patroni, a switchover candidate must now be in the sync key in
    quorum mode too, on the leader, in the race and in the API."""
    sim = Simulation(tmp_path, dynamic={"synchronous_mode": "quorum", "synchronous_mode_strict": True,
                                        "synchronous_node_count": 2})
    assert sim.run_until(lambda: sim.healthy() is None, 30)
    sim.run(3.6)
    sim.stop_manager("node1", whole_node=False)
    sim.run(5.6)
    leader = _primary(sim)
    if leader != "node3":
        sim.switchover(leader, "node3")
    sim.run(11.3)
    sim.hang_postgres("node3", True)
    sim.run(5.4)
    sim.kill_postgres("node2")
    sim.run(6.5)
    leader = sim.leader()
    if leader is not None and leader != "node1":
        sim.switchover(leader, "node1")
    sim.run(1.8)
    for name in ("node2", "node3", "node1"):
        sim.stop_manager(name)
        sim.run(0.5)
    for name in sim.nodes:
        sim.boot(name)
    sim.run(7.8)
    sim.heal()
    sim.run(30)
    assert sim.verdicts.violations == []


@pytest.mark.parametrize("mode", [{}, {"synchronous_mode": True, "synchronous_mode_strict": True},
                                  {"synchronous_mode": "quorum", "synchronous_mode_strict": True}],
                         ids=["async", "strict", "quorum-strict"])
def test_a_revoked_lease_of_a_running_primary_is_no_failover(tmp_path: Path, mode: dict[str, object]) -> None:
    """A stale etcd leader, thawed, revoked the primary's lease while its manager kept it alive
    (etcd#15247; seen twice in the 30-minute chaos runs): its leader and member keys vanished and a
    replica won the race by milliseconds, an unneeded failover that lost acknowledged async writes.
    Every race now asks the last leader first (as Patroni asks the members of its last view): it
    answers that it still runs as primary, so the others wait and it takes the free key again."""
    sim = Simulation(tmp_path, dynamic=mode)
    assert sim.run_until(lambda: sim.healthy() is None, 30)
    sim.run(3)
    leader = _primary(sim)
    for phase in range(10):  # at each point of the loop's second
        sim.run(0.1 * phase)
        promotions = len(sim.verdicts.promotions)
        sim.revoke_leader_lease()
        assert sim.leader() is None
        sim.run(8)
        assert sim.verdicts.violations == []
        assert sim.verdicts.promotions[promotions:] == []
        assert sim.leader() == leader and sim.healthy() is None
    assert sim.lost_acknowledged() == []


def test_a_revoked_lease_and_a_partition_of_its_holder_is_the_residual_risk(tmp_path: Path) -> None:
    """A lease etcd ended early, and its holder cut off from the others before it took the key
    again: nobody can ask it, a replica promotes, and two servers accept writes until the old
    primary's fencer acts at the deadline of its last renewal (at most ttl). Documented in
    fencing.md; the simulation counts that overlap apart and it must end within ttl."""
    sim = Simulation(tmp_path)
    assert sim.run_until(lambda: sim.healthy() is None, 30)
    sim.run(2)
    old = _primary(sim)
    sim.revoke_leader_lease()
    sim.run(0.25)
    sim.isolate(old, True)
    sim.run(10)
    assert sim.verdicts.violations == []
    assert sim.verdicts.promotions and sim.verdicts.promotions[-1][1] != old
    overlap = [at for at, _ in sim.verdicts.excused]
    assert overlap and overlap[-1] - overlap[0] < sim.dynamic["ttl"]
    assert sim.world.writable() == [sim.verdicts.promotions[-1][1]]
    _heals(sim)
