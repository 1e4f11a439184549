"""Randomised fault schedules over the simulated three-node cluster (hypothesis stateful testing):
after every step never two writable primaries, never two valid lease beliefs, no promotion of a
stopping node, outside the sync set (quorum mode: without the WAL of quorum + 1 of the voting set)
or past maximum_lag_on_failover, no acknowledged write lost in strict synchronous mode (quorum too);
after the faults heal, one primary with every other node streaming it."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tests.unit.sim.harness import Simulation

NODES = ("node1", "node2", "node3")
EXAMPLES = int(os.environ.get("SIM_EXAMPLES", "300"))
HEAL_SECONDS = 120.0

# synchronous_mode as the dynamic config sets it; quorum with synchronous_node_count 1 and 2 (with
# three nodes, 2 means both standbys acknowledge every commit).
MODES: dict[str, dict[str, object]] = {
    "async": {},
    "sync": {"synchronous_mode": True},
    "strict": {"synchronous_mode": True, "synchronous_mode_strict": True},
    "quorum": {"synchronous_mode": "quorum"},
    "quorum-strict": {"synchronous_mode": "quorum", "synchronous_mode_strict": True},
    "quorum2-strict": {"synchronous_mode": "quorum", "synchronous_mode_strict": True, "synchronous_node_count": 2},
}
node = st.sampled_from(NODES)
pause = st.floats(min_value=0.2, max_value=12.0)


class FaultSchedule(RuleBasedStateMachine):
    """One cluster, one random schedule of faults, each followed by some simulated time."""

    @initialize(mode=st.sampled_from(sorted(MODES)))
    def boot(self, mode: str) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="sim-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
        dynamic = MODES[mode]
        self.mode = mode
        self.strict = bool(dynamic.get("synchronous_mode_strict"))
        self.sim = Simulation(self.tmp, dynamic=dynamic)
        assert self.sim.run_until(lambda: self.sim.healthy() is None, 30), "no healthy cluster 30 s after boot"
        self.sim.run(2)

    def teardown(self) -> None:
        try:
            if hasattr(self, "sim"):
                self._converges()
        finally:
            if hasattr(self, "tmp"):
                shutil.rmtree(self.tmp, ignore_errors=True)

    def _converges(self) -> None:
        sim = self.sim
        sim.heal()
        healed = len(sim.verdicts.promotions)
        why: str | None = "not checked"
        waited = 0.0
        while waited < HEAL_SECONDS and why is not None:
            sim.run(1)
            waited += 1
            why = sim.healthy() or sim.pending_switchover()
        settled = len(sim.verdicts.promotions)
        sim.run(10)  # and it stays so
        why = why or sim.healthy() or sim.pending_switchover()
        assert sim.verdicts.violations == []
        assert len(sim.verdicts.promotions) == settled, f"promotions go on: {sim.verdicts.promotions[settled:]}"
        assert settled - healed <= 2, f"{settled - healed} promotions to heal: {sim.verdicts.promotions[healed:]}"
        assert why is None, f"not converged {HEAL_SECONDS:.0f}s after the faults healed: {why}"
        if self.strict:
            lost = sim.lost_acknowledged()
            assert lost == [], f"{len(lost)} acknowledged writes lost in strict mode, first {lost[0]}"

    @invariant()
    def safe(self) -> None:
        if hasattr(self, "sim"):
            assert self.sim.verdicts.violations == []

    @rule(seconds=pause)
    def wait(self, seconds: float) -> None:
        self.sim.run(seconds)

    @rule(name=node, seconds=pause)
    def crash(self, name: str, seconds: float) -> None:
        self.sim.crash(name)
        self.sim.run(seconds)

    @rule(name=node, seconds=pause)
    def boot_node(self, name: str, seconds: float) -> None:
        self.sim.boot(name)
        self.sim.run(seconds)

    @rule(name=node, frozen=st.floats(min_value=1.0, max_value=25.0), seconds=pause)
    def freeze_manager(self, name: str, frozen: float, seconds: float) -> None:
        self.sim.freeze_manager(name, frozen)
        self.sim.run(seconds)

    @rule(name=node, paused=st.floats(min_value=0.5, max_value=20.0), seconds=pause)
    def pause_node(self, name: str, paused: float, seconds: float) -> None:
        self.sim.pause_node(name, True)
        self.sim.run(paused)
        self.sim.pause_node(name, False)
        self.sim.run(seconds)

    @rule(name=node, cut=st.booleans(), seconds=pause)
    def partition(self, name: str, cut: bool, seconds: float) -> None:
        self.sim.isolate(name, cut)
        self.sim.run(seconds)

    @rule(name=node, cut=st.booleans(), seconds=pause)
    def dcs_cut(self, name: str, cut: bool, seconds: float) -> None:
        self.sim.cut_dcs(name, cut)
        self.sim.run(seconds)

    @rule(down=st.floats(min_value=0.5, max_value=15.0), seconds=pause)
    def dcs_outage(self, down: float, seconds: float) -> None:
        self.sim.store.available = False
        self.sim.run(down)
        self.sim.store.available = True
        self.sim.run(seconds)

    @rule(seconds=pause)
    def lease_revoked(self, seconds: float) -> None:
        """A stale etcd leader, thawed, revokes the leader key's lease early (etcd#15247)."""
        self.sim.revoke_leader_lease()
        self.sim.run(seconds)

    @rule(name=node, seconds=pause)
    def kill_postgres(self, name: str, seconds: float) -> None:
        self.sim.kill_postgres(name)
        self.sim.run(seconds)

    @rule(name=node, hung=st.booleans(), seconds=pause)
    def hang_postgres(self, name: str, hung: bool, seconds: float) -> None:
        self.sim.hang_postgres(name, hung)
        self.sim.run(seconds)

    @rule(name=node, broken=st.sampled_from([None, "start", "promote"]), seconds=pause)
    def disk_full(self, name: str, broken: str | None, seconds: float) -> None:
        """A full pg_wal on this node: killed now, and then every start fails ("start"), or it
        starts read-only but dies at every promotion or start as primary ("promote"); None: freed."""
        server = self.sim.world.servers[name]
        server.fail_start, server.fail_promote = broken == "start", broken == "promote"
        if broken:
            self.sim.kill_postgres(name)
        self.sim.run(seconds)

    @rule(name=node, whole_node=st.booleans(), seconds=pause)
    def stop_manager(self, name: str, whole_node: bool, seconds: float) -> None:
        """docker stop of the node, or supervisorctl stop of its manager alone."""
        self.sim.stop_manager(name, whole_node)
        self.sim.run(seconds)

    @rule(order=st.permutations(NODES), seconds=pause)
    def restart_all(self, order: list[str], seconds: float) -> None:
        """docker compose down, then up: every node stopped cleanly in turn, then all started."""
        for name in order:
            self.sim.stop_manager(name)
            self.sim.run(0.5)
        for name in NODES:
            self.sim.boot(name)
        self.sim.run(seconds)

    @precondition(lambda self: self.sim.leader() is not None)
    @rule(candidate=st.one_of(st.none(), node), seconds=pause)
    def switchover(self, candidate: str | None, seconds: float) -> None:
        leader = self.sim.leader()
        assert leader is not None
        if candidate != leader:
            self.sim.switchover(leader, candidate)
        self.sim.run(seconds)

    @rule(name=node, kind=st.sampled_from(["restart", "reinitialize", "reload"]), seconds=pause)
    def operator_request(self, name: str, kind: str, seconds: float) -> None:
        """POST /restart, /reinitialize or /reload on one node (through its intent queue)."""
        self.sim.request(name, kind)
        self.sim.run(seconds)

    @rule(lag=st.sampled_from([0, 500, 1048576]), seconds=pause)
    def maximum_lag(self, lag: int, seconds: float) -> None:
        self.sim.set_config(maximum_lag_on_failover=lag)
        self.sim.run(seconds)

    @rule(ttl=st.sampled_from([5, 8, 12]), seconds=pause)
    def ttl_change(self, ttl: int, seconds: float) -> None:
        self.sim.set_config(ttl=ttl)
        self.sim.run(seconds)

    @rule(paused=st.booleans(), seconds=pause)
    def pause_cluster(self, paused: bool, seconds: float) -> None:
        self.sim.set_config(pause=paused)
        self.sim.run(seconds)
        if paused:
            self.sim.set_config(pause=False)  # a paused cluster is not expected to heal itself


FaultSchedule.TestCase.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=12, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
# A campaign (tests/unit/sim/campaign.py) runs thousands here and sets SIM_TIMEOUT=0 (none): a
# timeout firing inside a schedule under load made hypothesis report a flaky test instead.
test_random_fault_schedules = pytest.mark.timeout(int(os.environ.get("SIM_TIMEOUT", "900")))(FaultSchedule.TestCase)


def test_a_quorum_vote_needs_an_answer_published_after_the_vacancy() -> None:
    """A schedule a 1200-schedule campaign found (quorum, strict): node2, primary with node3 as its
    voter, dies at a promotion on its full disk and releases the key at once; node3's answer to node1
    still came from the state its manager published before it received node2's last WAL, so node1,
    behind node3, counted node3's vote and promoted without node2's last (possibly acknowledged)
    WAL. A vote now needs an answer published after the key was found free."""
    state = FaultSchedule()
    state.boot(mode="quorum-strict")
    state.disk_full(broken=None, name="node2", seconds=8.262423696767197)
    for order, seconds in ((["node1", "node2", "node3"], 11.649607276309329),
                           (["node1", "node2", "node3"], 9.736697036656249),
                           (["node1", "node2", "node3"], 7.693050325416941),
                           (["node1", "node3", "node2"], 0.2),
                           (["node1", "node2", "node3"], 0.5992060428244106),
                           (["node1", "node2", "node3"], 11.13794724117958),
                           (["node3", "node1", "node2"], 1.9),
                           (["node2", "node3", "node1"], 5.767140625413996)):
        state.restart_all(order=order, seconds=seconds)
        state.safe()
    state.teardown()


def test_a_switchover_candidate_must_be_a_voter_in_quorum_mode() -> None:
    """A schedule a 900-schedule campaign found (quorum, strict, synchronous_node_count 2): a burst
    of switchovers, one naming node1 while its PostgreSQL hung; the leader carried it out although
    node1 was no voter, and node1, named by the failover key, skipped every check and promoted
    without 110 acknowledged writes. Fixed with the rule that a switchover's candidate is a voter."""
    state = FaultSchedule()
    state.boot(mode="quorum2-strict")
    for candidate, seconds in ((None, 6.794431329526631), (None, 0.2)):
        state.switchover(candidate=candidate, seconds=seconds)
    state.hang_postgres(hung=True, name="node1", seconds=9.015604846839134)
    for candidate, seconds in ((None, 0.2), (None, 11.528673759721118), (None, 0.2), (None, 0.2), ("node1", 0.25)):
        state.switchover(candidate=candidate, seconds=seconds)
        state.safe()
    state.dcs_cut(cut=True, name="node2", seconds=1.0)
    state.dcs_cut(cut=False, name="node1", seconds=1.0)
    state.safe()
    state.teardown()


@pytest.mark.parametrize("steps", [
    [("lease_revoked", {"seconds": 0.5}), ("kill_postgres", {"name": "node1", "seconds": 0.5}),
     ("lease_revoked", {"seconds": 1.0}), ("lease_revoked", {"seconds": 1.0})],
    [("lease_revoked", {"seconds": 0.25}), ("disk_full", {"broken": "start", "name": "node1", "seconds": 0.5}),
     ("lease_revoked", {"seconds": 1.0})],
], ids=["after-a-postmaster-kill", "after-a-full-disk"])
def test_a_revoked_lease_after_a_failover_leaves_one_writable_node(steps: list[tuple[str, dict[str, object]]]) -> None:
    """Schedules a 1600-schedule campaign found (async): node1's PostgreSQL died, node2 took over, and
    node2's lease was revoked early less than a second later. node1 had not read the DCS while node2
    led, and node2's /patroni still said "replica" (its manager's state, published before its
    promotion in the same loop): node1 promoted beside it. A race now asks every member of its last
    read with a leader key that is gone since, and /patroni always says what the fencer sees."""
    state = FaultSchedule()
    state.boot(mode="async")
    for fault, args in steps:
        getattr(state, fault)(**args)
        state.safe()
    state.teardown()


def test_a_restarted_manager_asks_a_member_it_never_saw_lead() -> None:
    """A 2000-schedule campaign (async): node1 crashed and came back; node2 took over before node1's
    second read and lost its lease early (revoked) before it; node1 had only seen node2 as a replica
    in a read without a leader and promoted beside it. The members of reads without a leader are
    remembered too, as Patroni keeps its first read."""
    state = FaultSchedule()
    state.boot(mode="async")
    for _ in range(4):
        state.lease_revoked(seconds=0.5)
    state.crash(name="node1", seconds=0.5)
    state.boot_node(name="node1", seconds=1.0)
    state.lease_revoked(seconds=1.0)
    state.safe()
    state.teardown()


def test_a_switchover_candidate_waits_for_an_old_primary_whose_lease_was_revoked() -> None:
    """A 3000-schedule campaign (async): a switchover to node1, and node2's lease revoked early while
    it demoted; node1, named by the failover key, asked nobody (the API had checked it) and promoted
    while node2 still accepted writes. A named candidate now asks too, and waits for such a server."""
    state = FaultSchedule()
    state.boot(mode="async")
    state.lease_revoked(seconds=0.25)
    state.lease_revoked(seconds=1.5)
    state.switchover(candidate=None, seconds=2.0)
    state.switchover(candidate="node1", seconds=0.5)
    state.lease_revoked(seconds=1.0)
    state.safe()
    state.teardown()


def test_a_revoked_lease_then_a_partition_of_its_holder_counts_apart() -> None:
    """A 3000-schedule campaign (async): the residual risk of fencing.md, counted apart."""
    state = FaultSchedule()
    state.boot(mode="async")
    state.lease_revoked(seconds=0.25)
    state.partition(cut=True, name="node1", seconds=1.0)
    state.safe()
    assert state.sim.verdicts.excused
    state.teardown()


@pytest.mark.parametrize("restart_after", [0.5, 1.0])
def test_a_primary_restarting_in_place_when_its_lease_is_revoked_stays_the_only_writable_node(
        restart_after: float) -> None:
    """A CI run's random schedule (async): node1's PostgreSQL died, node1 began to start it again as
    primary under its key, and the key's lease was revoked early. node2 asked node1, which said
    "stopped" (its fencer saw no postmaster yet), promoted, and node1's start came up writable
    beside it; an operator's restart of node1, served instead of the HA loop's tick, kept it so. A
    start as primary in flight is now published ("starting", role primary) and racers wait for it;
    a primary without the key is not restarted, and a refused request no longer costs the tick."""
    state = FaultSchedule()
    state.boot(mode="async")
    for seconds in (0.25, 0.25, 0.25, 1.25):
        state.lease_revoked(seconds=seconds)
    state.kill_postgres(name="node1", seconds=0.25)
    state.lease_revoked(seconds=0.25)
    state.operator_request(kind="restart", name="node1", seconds=restart_after)
    state.safe()
    state.teardown()


def test_a_paused_primary_cut_off_and_frozen_past_its_lease_demotes_when_it_thaws() -> None:
    """A 4000-schedule campaign (async): the cluster paused and resumed while node1, the primary, was
    cut off from the DCS (it never saw the resume, its fencer obeyed the paused order); then node1 was
    frozen (docker pause) past its lease, and node2, unable to ask it, promoted. Thawed, node1 asked
    the members, heard them answer and kept running beside node2. A paused primary without the DCS
    now demotes when a member it asks accepts writes (the frozen node acknowledged nothing meanwhile)."""
    state = FaultSchedule()
    state.boot(mode="async")
    state.pause_cluster(paused=True, seconds=1.0)
    state.dcs_cut(cut=True, name="node1", seconds=2.0)
    state.pause_node(name="node1", paused=3.0, seconds=1.0)
    state.safe()
    state.teardown()


def test_a_quorum_vote_is_not_an_answer_from_a_leaders_tenure_we_never_saw() -> None:
    """A 4000-schedule campaign (quorum, strict): node1 found the key free, node2 took it and lost it
    (stopped) before node1's next read; node3's answer, published while node2 led, counted as a
    vote "published since the vacancy", and node1 promoted without the WAL node3 had received since.
    A sync key rewritten since the vacancy was found restarts it."""
    state = FaultSchedule()
    state.boot(mode="quorum-strict")
    state.kill_postgres(name="node1", seconds=1.0)
    state.stop_manager(name="node3", seconds=1.5, whole_node=False)
    state.restart_all(order=["node1", "node2", "node3"], seconds=2.0)
    state.stop_manager(name="node2", seconds=1.0, whole_node=False)
    state.safe()
    state.teardown()


@pytest.mark.parametrize("steps", [
    [("lease_revoked", {"seconds": 0.25}), ("freeze_manager", {"frozen": 1.0, "name": "node1", "seconds": 0.25}),
     ("pause_node", {"name": "node1", "paused": 0.5, "seconds": 1.0}), ("excused", {})],
    [("lease_revoked", {"seconds": 0.2}), ("lease_revoked", {"seconds": 1.75}), ("lease_revoked", {"seconds": 0.2}),
     ("hang_postgres", {"hung": True, "name": "node1", "seconds": 0.2}),
     ("pause_node", {"name": "node1", "paused": 0.5, "seconds": 0.25})],
], ids=["frozen-manager", "hung-postgres"])
def test_a_revoked_holder_paused_then_thawed_is_the_residual_risk(steps: list[tuple[str, dict[str, object]]]) -> None:
    """A 4000-schedule campaign (async): node1's lease revoked, node1 paused (docker pause) so that
    node2 could not ask it and promoted; node1 thawed and accepted writes beside node2 until its
    manager read the DCS (0.1 s). The residual risk of fencing.md: counted apart, as long as it ends
    before the deadline of node1's last renewal (the harness excused it only while node1 was still
    unaskable). The second schedule no longer overlaps since the quorum vacancy fix changed its timing."""
    state = FaultSchedule()
    state.boot(mode="async")
    for fault, args in steps:
        if fault == "excused":
            assert state.sim.verdicts.excused
            continue
        getattr(state, fault)(**args)
        state.safe()
    state.teardown()


def test_a_switchover_the_leader_never_carried_out_names_no_winner_in_strict_mode() -> None:
    """A 3000-schedule campaign (quorum, strict): a switchover to node1 was requested while the
    leader's manager was frozen; its lease ran out, the whole cluster restarted, and node1, named by
    the failover key that nobody had carried out, skipped every WAL comparison and promoted without
    35 acknowledged writes that node3 held. In strict mode a named candidate now waits for members
    that are starting and yields to one that is ahead."""
    state = FaultSchedule()
    state.boot(mode="quorum-strict")
    state.pause_node(name="node1", paused=19.0, seconds=9.561054703181146)
    state.hang_postgres(hung=False, name="node1", seconds=4.801286649979186)
    state.freeze_manager(frozen=5.365279460734016, name="node1", seconds=3.0)
    state.switchover(candidate="node1", seconds=2.389664836942728)
    state.restart_all(order=["node3", "node1", "node2"], seconds=6.5210344037734345)
    state.pause_cluster(paused=True, seconds=10.020179675576765)
    state.pause_node(name="node1", paused=10.39590766190054, seconds=3.821756753223973)
    state.hang_postgres(hung=True, name="node1", seconds=0.81208165212861)
    state.freeze_manager(frozen=10.997074136577837, name="node2", seconds=0.8803636905379582)
    state.switchover(candidate="node1", seconds=5.535637207178994)
    state.restart_all(order=["node1", "node2", "node3"], seconds=3.5071294066300083)
    state.safe()
    state.teardown()
