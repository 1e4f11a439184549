"""A resume the primary's manager never saw (issue 11). The racers' side: whom a leader race asks
(core.probes.probe_vanished), and what an answer that the last leader's PostgreSQL still accepts
writes does to the election (decide). The primary's side: paused and cut off from the DCS, it keeps
running only while a member answers it. And the adapters: what the manager remembers of the last
leader, how an API answer is read."""

from __future__ import annotations

from dataclasses import replace

import pytest

from appliance.core.decide import decide
from appliance.core.model import ClusterView, Failover, Leader, Member, Role, SyncState
from appliance.core.probes import accepts_writes, probe_cut_off, probe_vanished
from appliance.core.state import DataDir, HaSettings, LocalState, PeerStatus
from appliance.manager.events import EventLog
from appliance.manager.memory import Memory
from appliance.manager.peers import parse_status
from appliance.postgres.status import PgStatus


def _member(name: str, role: str = "replica", rev: int = 50, **extra: object) -> Member:
    return Member(name=name, api_url=f"https://{name}:8008/patroni", state="running", role=role,
                  mod_revision=rev, extra=dict(extra))


N1 = _member("n1", "primary", pause=True)
# Our last read with a leader key: n1 led, n2 (us) and n3 followed.
LOCKED = (N1, _member("n2"), _member("n3"))
# The key and the member key of n1 are gone: one lease.
RACE = ClusterView(initialize="1", leader=None, members=(_member("n2"), _member("n3")), config_revision=41)


def _local(remembered: tuple[Member, ...] = LOCKED, **kw: object) -> LocalState:
    base = LocalState(name="n2", now=100.0, data_dir=DataDir.VALID, sysid="1", running=True, role=Role.REPLICA,
                      timeline=1, wal_position=1000, replication_state="streaming", remembered=remembered)
    return replace(base, **kw)  # type: ignore[arg-type]


PROBE_CASES = [
    # (id, view, local, the members asked)
    ("the last leader, gone with its lease: ask it", RACE, _local(), ("n1",)),
    # Its fencer's order was armed, but its lease may have ended early (a stale etcd leader revoked
    # it) while it still runs: it takes the key again if the others wait for it.
    ("not paused: ask it too", RACE, _local((_member("n1", "primary"), _member("n2"), _member("n3"))), ("n1",)),
    # n3 became leader between two of our reads and its lease ended early: we never saw it lead.
    ("a member gone since, whoever led", replace(RACE, members=(_member("n2"),)), _local(), ("n1", "n3")),
    ("we led that read: the others gone are asked", replace(RACE, members=(_member("n2"),)),
     _local((_member("n2", "primary"), _member("n3"))), ("n3",)),
    ("nothing remembered", RACE, _local(()), ()),
    ("the leader key is there: no race", replace(RACE, leader=Leader("n3")), _local(), ()),
    ("still a member: asked as one", replace(RACE, members=(*RACE.members, _member("n1"))), _local(), ()),
    ("a job runs: no race", RACE, _local(job="rewind"), ()),
    ("PostgreSQL down: no race", RACE, _local(running=False), ()),
    # The API checked the candidate, but not whether the old primary stopped (a lease ended early).
    ("a manual failover names us: ask it too", replace(RACE, failover=Failover(member="n2")), _local(), ("n1",)),
    ("no API address to ask", RACE, _local((replace(N1, api_url=""), _member("n2"))), ()),
]


@pytest.mark.parametrize(("view", "local", "asked"), [c[1:] for c in PROBE_CASES], ids=[c[0] for c in PROBE_CASES])
def test_whom_the_race_asks(view: ClusterView, local: LocalState, asked: tuple[str, ...]) -> None:
    assert tuple(m.name for m in probe_vanished(view, local)) == asked


def _answer(name: str = "n1", **kw: object) -> PeerStatus:
    return PeerStatus(name=name, reachable=True, **kw)  # type: ignore[arg-type]


REPLICAS = (_answer("n3", role="replica", running=True, wal_position=900),)
STALE_WRITABLE = _answer(role="primary", wal_position=5000, writable=True)
STALE_FENCED = _answer(role="primary", wal_position=5000, writable=False)

RACE_CASES = [
    # (id, answers of the peers (n3 and the last leader n1), settings, action kinds)
    ("the last leader's server still accepts writes beside a stale manager: no promotion",
     (*REPLICAS, STALE_WRITABLE), HaSettings(), ["Wait"]),
    ("its manager answers: still running as primary", (*REPLICAS, _answer(role="primary", running=True)),
     HaSettings(), ["Wait"]),
    ("unreachable (crashed, or cut off with an armed order): promote", (*REPLICAS, PeerStatus("n1", False)),
     HaSettings(), ["AcquireLeader", "Promote"]),
    ("its server is down (fenced, stopped): its stale WAL position does not compete",
     (*REPLICAS, STALE_FENCED), HaSettings(), ["AcquireLeader", "Promote"]),
    ("a replica's API answers writable=False: nothing changes", (*REPLICAS,), HaSettings(),
     ["AcquireLeader", "Promote"]),
    ("a member whose manager is stale with a writable server blocks too",
     (_answer("n3", role="replica", wal_position=900, writable=True),), HaSettings(), ["Wait"]),
    ("paused: no promotion anyway", (*REPLICAS, PeerStatus("n1", False)), HaSettings(pause=True), ["Wait"]),
]


@pytest.mark.parametrize(("peers", "cfg", "expected"), [c[1:] for c in RACE_CASES], ids=[c[0] for c in RACE_CASES])
def test_the_race_with_the_last_leaders_answer(peers: tuple[PeerStatus, ...], cfg: HaSettings,
                                               expected: list[str]) -> None:
    acts = decide(RACE, _local(peers=peers), cfg)
    assert [x.kind for x in acts] == expected, [x.reason for x in acts]


def test_the_refusal_names_the_writable_server() -> None:
    acts = decide(RACE, _local(peers=(*REPLICAS, STALE_WRITABLE)), HaSettings())
    assert "n1's PostgreSQL still accepts writes" in acts[0].reason


@pytest.mark.parametrize(("answer", "why"), [
    (_answer(role="primary", running=True), "still running as primary"),
    # The fencer's sight outranks the manager's state, up to a loop old.
    (_answer(role="primary", running=True, writable=False), None),  # demoted in its last loop
    (_answer(role="primary", running=True, writable=True), "still running as primary"),
    (_answer(role="replica", running=True, writable=True), "still accepts writes"),  # promoted in its last loop
    (_answer(role="master", running=True), "still running as primary"),
    (STALE_WRITABLE, "still accepts writes"),
    (replace(STALE_WRITABLE, reachable=False), None),
    (STALE_FENCED, None),
    (_answer(role="replica", running=True), None),
    # A start (or restart) as primary in flight: writable the moment the server is up, whatever the
    # fencer sees now (its holder decided it under a lease the DCS may have ended since).
    (_answer(role="primary", starting=True, writable=False), "starting PostgreSQL as primary"),
    (_answer(role="master", starting=True), "starting PostgreSQL as primary"),
    (_answer(role="replica", starting=True, writable=False), None),
    (_answer(role="primary", writable=False), None),  # stopped: the start failed, or it never began
])
def test_accepts_writes(answer: PeerStatus, why: str | None) -> None:
    got = accepts_writes(answer)
    assert (got is None) if why is None else (got is not None and why in got)


def _read(leader: str | None, members: tuple[Member, ...], revision: int = 40) -> ClusterView:
    return ClusterView(initialize="1", leader=Leader(leader) if leader else None, members=members,
                       config_revision=revision)


def test_the_manager_remembers_the_members_of_its_last_read_with_a_leader() -> None:
    memory, status = Memory(EventLog()), PgStatus(running=True)
    first = (N1, _member("n2"), _member("n3"))
    memory.track(_read("n1", first), "n2", status, None, 1.0)
    assert memory.remembered == first
    memory.track(_read(None, (_member("n2"),), revision=41), "n2", status, None, 2.0)  # leases ran out
    assert {m.name for m in memory.remembered} == {"n1", "n2", "n3"}  # kept through the race
    memory.track(None, "n2", status, None, 3.0)  # DCS unreachable
    assert {m.name for m in memory.remembered} == {"n1", "n2", "n3"}
    n4 = _member("n4")
    memory.track(_read(None, (_member("n2"), n4), revision=41), "n2", status, None, 3.5)  # seen while unlocked
    assert {m.name for m in memory.remembered} == {"n1", "n2", "n3", "n4"}
    second = (_member("n3", "primary"), _member("n2"))
    memory.track(_read("n3", second, revision=42), "n2", status, None, 4.0)
    assert memory.remembered == second  # a read with a leader starts afresh
    memory.track(_read("n2", second), "n2", status, None, 5.0)  # we lead: kept all the same
    assert memory.remembered == second


def test_a_restarted_manager_remembers_the_members_of_its_first_reads() -> None:
    """Patroni keeps its first read as old_cluster even without a leader: a member that took over
    and lost its lease before our first read with a leader is still asked."""
    memory, status = Memory(EventLog()), PgStatus(running=True)
    memory.track(_read(None, (_member("n1"), _member("n2"))), "n1", status, None, 1.0)
    memory.track(_read(None, (_member("n1"),)), "n1", status, None, 2.0)
    assert {m.name for m in memory.remembered} == {"n1", "n2"}


@pytest.mark.parametrize(("body", "writable"), [
    ({"state": "unknown", "role": "primary", "postgres_writable": True}, True),
    ({"state": "unknown", "role": "primary", "postgres_writable": False}, False),
    ({"state": "running", "role": "primary"}, None),
    ({"state": "unknown", "role": "primary", "postgres_writable": "yes"}, None),
])
def test_an_api_answer_says_whether_postgres_accepts_writes(body: dict[str, object], writable: bool | None) -> None:
    assert parse_status("n1", body).writable is writable


@pytest.mark.parametrize(("state", "starting"), [
    ("starting", True), ("restarting", True), ("running", False), ("stopped", False), ("unknown", False)])
def test_an_api_answer_says_whether_a_start_is_in_flight(state: str, starting: bool) -> None:
    assert parse_status("n1", {"state": state, "role": "primary"}).starting is starting


def _primary(**kw: object) -> LocalState:
    base = LocalState(name="n1", now=100.0, data_dir=DataDir.VALID, sysid="1", running=True, role=Role.PRIMARY,
                      timeline=1, wal_position=1000, lease_ok_at=97.0)
    return replace(base, **kw)  # type: ignore[arg-type]


ANSWERS = (PeerStatus("n2", False), _answer("n3", role="replica", running=True))
SILENCE = (PeerStatus("n2", False), PeerStatus("n3", False))
PAUSE = HaSettings(pause=True)

CUT_OFF_CASES = [
    # (id, local, settings, action kinds)
    ("paused, a member answers (it can ask us too): keep running", _primary(peers=ANSWERS), PAUSE, ["Wait"]),
    ("paused, nobody answers: a resume we cannot see would let another node promote",
     _primary(peers=SILENCE), PAUSE, ["Demote"]),
    ("paused, nobody answers, but for less than retry_timeout", _primary(peers=SILENCE, lease_ok_at=99.0), PAUSE,
     ["Wait"]),
    ("paused, no other member known: nobody to promote", _primary(), PAUSE, ["Wait"]),
    ("a paused replica stays as it is", replace(_primary(peers=SILENCE), role=Role.REPLICA), PAUSE, ["Wait"]),
    ("not paused: demoted after retry_timeout whoever answers", _primary(peers=ANSWERS), HaSettings(), ["Demote"]),
    # Frozen past its lease after a resume it could not see: a member promoted beside it meanwhile.
    ("paused, but a member that answers accepts writes: demoted at once",
     _primary(peers=(PeerStatus("n2", False), _answer("n3", role="replica", running=True, writable=True))), PAUSE,
     ["Demote"]),
    ("paused, a member answers that it runs as primary", _primary(peers=(_answer("n3", role="primary", running=True),)),
     PAUSE, ["Demote"]),
]


@pytest.mark.parametrize(("local", "cfg", "expected"), [c[1:] for c in CUT_OFF_CASES],
                         ids=[c[0] for c in CUT_OFF_CASES])
def test_a_paused_primary_without_the_dcs(local: LocalState, cfg: HaSettings, expected: list[str]) -> None:
    acts = decide(None, local, cfg)
    assert [x.kind for x in acts] == expected, [x.reason for x in acts]


@pytest.mark.parametrize(("view", "local", "paused", "asks"), [
    (None, _primary(), True, True),
    (None, _primary(), False, False),
    (RACE, _primary(), True, False),  # the DCS answers: it says whether we are paused
    (None, _local(), True, False),  # a replica has nothing to fear
    (None, _primary(running=False), True, False),
])
def test_a_paused_primary_without_the_dcs_asks_the_members(view: ClusterView | None, local: LocalState,
                                                          paused: bool, asks: bool) -> None:
    assert probe_cut_off(view, local, paused) is asks


def test_a_named_candidate_waits_only_for_a_server_that_still_accepts_writes() -> None:
    """A manual failover names n2: the API checked it, so no WAL comparison, but a server that still
    accepts writes (the old primary whose lease etcd ended early while it demoted) stops it."""
    named = replace(RACE, failover=Failover(leader="n1", member="n2"))
    ahead = _answer("n3", role="replica", running=True, wal_position=5000, writable=False)
    assert [x.kind for x in decide(named, _local(peers=(ahead, STALE_FENCED)), HaSettings())] == \
        ["AcquireLeader", "Promote"]
    acts = decide(named, _local(peers=(ahead, STALE_WRITABLE)), HaSettings())
    assert [x.kind for x in acts] == ["Wait"] and "n1's PostgreSQL still accepts writes" in acts[0].reason


def test_the_vacancy_starts_again_when_a_leader_came_and_went_between_two_reads() -> None:
    """A quorum vote needs an answer published after the leader key was found free. A leader that
    took the key and lost it between two of our reads leaves a trace only in the sync key it wrote:
    its replicas' WAL moved on meanwhile, so the vacancy starts again (a 4000-schedule campaign,
    quorum-strict: an answer published during that leader's tenure counted as a vote)."""
    memory, status = Memory(EventLog()), PgStatus(running=True)
    key = SyncState(leader="n1", sync_standby=("n2",), quorum=1, mod_revision=60)
    vacant = replace(_read(None, (_member("n2"),)), sync=key)
    memory.track(vacant, "n2", status, None, 1.0)
    memory.track(vacant, "n2", status, None, 2.0)
    assert memory.leader_free_since == 1.0
    rewritten = replace(vacant, sync=replace(key, leader="n3", mod_revision=70))  # n3 led in between
    memory.track(rewritten, "n2", status, None, 3.0)
    assert memory.leader_free_since == 3.0
    memory.track(_read("n3", (_member("n2"),)), "n2", status, None, 4.0)
    assert memory.leader_free_since is None


@pytest.mark.parametrize(("peers", "eligible"), [
    ((), True),  # nobody else answers: the switchover goes on
    ((_answer("n3", role="replica", running=True, wal_position=1000),), True),  # the same last WAL
    ((_answer("n3", role="replica", running=True, wal_position=1200),), False),  # n3 is ahead of us
    # Starting up: the shortcut waits for its position, and the ordinary race does not (in quorum
    # mode the votes do: test_sim_random's replay of the campaign's schedule).
    ((_answer("n3", role="replica", starting=True),), True),
    ((_answer("n3", role="replica"),), True),  # stopped: nothing to wait for
])
def test_a_switchovers_candidate_in_strict_mode_yields_to_a_member_ahead(peers: tuple[PeerStatus, ...],
                                                                         eligible: bool) -> None:
    """The leader may never have carried the switchover out (frozen, then the whole cluster
    restarted): in strict synchronous mode the named candidate does not skip a member ahead of it."""
    named = replace(RACE, failover=Failover(leader="n1", member="n2"))
    cfg = HaSettings(synchronous_mode=True, synchronous_mode_strict=True)
    acts = decide(named, _local(peers=peers, remembered=()), cfg)
    assert ([x.kind for x in acts] == ["AcquireLeader", "Promote"]) is eligible, [x.reason for x in acts]
    relaxed = decide(named, _local(peers=peers, remembered=()), HaSettings())  # not strict: Patroni's rule
    assert [x.kind for x in relaxed] == ["AcquireLeader", "Promote"]
