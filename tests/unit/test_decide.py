"""Table tests of decide(): one row per transition of the HA policy."""

from __future__ import annotations

from dataclasses import replace

import pytest

from appliance.core import actions as a
from appliance.core.decide import decide
from appliance.core.model import (
    ClusterStatus,
    ClusterView,
    Failover,
    HistoryEntry,
    Leader,
    Member,
    Role,
    SyncState,
)
from appliance.core.state import DataDir, HaSettings, JobResult, LocalState, PeerStatus, Retry, StandbyConn
from appliance.core.tags import Tags

SYSID = "7300000000000000001"


def member(name: str, state: str = "running", role: str = "replica", **kw: object) -> Member:
    return Member(name=name, conn_url=f"postgres://{name}:5432/postgres", api_url=f"http://{name}:8008/patroni",
                  state=state, role=role, **kw)  # type: ignore[arg-type]


def view(leader: str | None = "n1", **kw: object) -> ClusterView:
    members = (member("n1", role="primary"), member("n2"), member("n3"))
    base = ClusterView(initialize=SYSID, config={"ttl": 6}, leader=Leader(leader) if leader else None,
                       members=members, status=ClusterStatus(optime=1000, retain_slots=("n1", "n2", "n3")))
    return replace(base, **kw)  # type: ignore[arg-type]


def led_by_n3(timeline: int, *history: HistoryEntry) -> ClusterView:
    """A view whose leader n3 runs as primary on ``timeline``, with the DCS ``history``."""
    return view(leader="n3", history=history,
                members=(member("n1"), member("n2"), member("n3", role="primary", timeline=timeline)))


def replica(name: str = "n2", **kw: object) -> LocalState:
    base = LocalState(name=name, now=100.0, data_dir=DataDir.VALID, sysid=SYSID, running=True,
                      role=Role.REPLICA, timeline=1, wal_position=1000, replication_state="streaming",
                      following="n1", lease_ok_at=99.5)
    return replace(base, **kw)  # type: ignore[arg-type]


def primary(name: str = "n1", **kw: object) -> LocalState:
    base = LocalState(name=name, now=100.0, data_dir=DataDir.VALID, sysid=SYSID, running=True,
                      role=Role.PRIMARY, timeline=1, wal_position=1000, lease_ok_at=99.5)
    return replace(base, **kw)  # type: ignore[arg-type]


def kinds(actions: list[a.Action]) -> list[str]:
    return [x.kind for x in actions]


CFG = HaSettings()
SYNC = HaSettings(synchronous_mode=True, synchronous_mode_strict=True)
FAILSAFE = HaSettings(failsafe_mode=True)

CASES = [
    # (id, view, local, settings, expected action kinds)
    ("bootstrap race", ClusterView(), LocalState(name="n1", now=1.0), CFG,
     ["TakeInitialize", "AcquireLeader", "Bootstrap"]),
    ("uninitialized but someone holds the lock", ClusterView(leader=Leader("n2")),
     LocalState(name="n1", now=1.0), CFG, ["Wait"]),
    ("bootstrap in progress elsewhere", ClusterView(initialize="", leader=Leader("n2")),
     LocalState(name="n1", now=1.0), CFG, ["Wait"]),
    ("abandoned bootstrap is cancelled", ClusterView(initialize="", initialize_revision=7),
     LocalState(name="n1", now=1.0), CFG, ["CancelInitialize"]),
    ("empty data dir clones from the running leader", view(), LocalState(name="n2", now=1.0), CFG, ["Clone"]),
    ("empty data dir, leader not running: wait",
     view(members=(member("n1", state="stopped", role="primary"),)), LocalState(name="n2", now=1.0), CFG, ["Wait"]),
    ("clone as soon as the bootstrap published the sysid",
     view(members=(member("n1", state="initializing new cluster", role="primary"),)),
     LocalState(name="n2", now=1.0), CFG, ["Clone"]),
    ("initdb never runs over an invalid data dir", ClusterView(),
     LocalState(name="n1", now=1.0, data_dir=DataDir.INVALID), CFG, ["Fatal"]),
    ("wrong cluster sysid is fatal", view(), replica(sysid="999"), CFG, ["Fatal"]),
    ("long job keeps the leader key", view(), primary(job="rewind"), CFG, ["UpdateLeader", "Wait"]),
    ("healthy replica following the leader: nothing to do", view(), replica(), CFG, ["Wait"]),
    ("replica follows a new leader", view(leader="n3"), replica(), CFG, ["Follow"]),
    ("leader renews, publishes status and slots", view(), primary(wal_position=2000), CFG,
     ["UpdateLeader", "WriteStatus", "EnsureSlots"]),
    ("leader records sysid in an empty initialize", view(initialize=""), primary(), CFG,
     ["UpdateLeader", "SetInitialize", "EnsureSlots"]),
    ("leader seeds the config key", view(config=None), primary(), CFG,
     ["UpdateLeader", "WriteConfigKey", "EnsureSlots"]),
    ("lock holder running as replica promotes", view(leader="n2"), replica(), CFG, ["UpdateLeader", "Promote"]),
    ("primary seeing another leader demotes now", view(leader="n2"), primary(), CFG, ["Demote"]),
    ("race won", view(leader=None), replica(), CFG, ["AcquireLeader", "Promote"]),
    ("race lost to a peer with more WAL", view(leader=None),
     replica(peers=(PeerStatus("n3", True, "replica", True, 1500),)), CFG, ["Wait"]),
    ("unreachable peers do not block the race", view(leader=None),
     replica(peers=(PeerStatus("n3", False),)), CFG, ["AcquireLeader", "Promote"]),
    ("a peer still running as primary blocks the race", view(leader=None),
     replica(peers=(PeerStatus("n1", True, "primary", True, 900),)), CFG, ["Wait"]),
    ("equal WAL, higher priority peer wins", view(leader=None),
     replica(peers=(PeerStatus("n3", True, "replica", True, 1000, tags=Tags({"failover_priority": 5})),)), CFG,
     ["Wait"]),
    ("lagging replica never wins", view(leader=None, status=ClusterStatus(optime=10_000_000)), replica(), CFG,
     ["Wait"]),
    ("nofailover never wins", view(leader=None), replica(), HaSettings(tags=Tags({"nofailover": True})), ["Wait"]),
    ("sync mode: node not in the sync key never wins", view(leader=None, sync=SyncState("n1", ("n3",))),
     replica(), SYNC, ["Wait"]),
    ("sync mode: the sync standby wins", view(leader=None, sync=SyncState("n1", ("n2",))), replica(), SYNC,
     ["AcquireLeader", "Promote"]),
    ("paused: no automatic promotion", view(leader=None), replica(), HaSettings(pause=True), ["Wait"]),
    ("paused: no demotion of a primary seeing another leader", view(leader="n2"), primary(),
     HaSettings(pause=True), ["Wait"]),
    ("DCS error within retry_timeout keeps the primary", None, primary(lease_ok_at=99.0), CFG, ["Wait"]),
    ("DCS error beyond retry_timeout demotes", None, primary(lease_ok_at=97.0), CFG, ["Demote"]),
    ("DCS error never promotes a replica", None, replica(), CFG, ["Wait"]),
    ("crashed primary holding the lock restarts in place", view(), primary(running=False, role=None,
     was_primary=True, pg_down_since=95.0), CFG, ["UpdateLeader", "StartPostgres"]),
    ("primary down beyond primary_start_timeout releases the lock", view(),
     primary(running=False, role=None, was_primary=True, pg_down_since=10.0), CFG, ["ReleaseLeader"]),
    ("key holder up read-only within primary_start_timeout promotes again", view(),
     primary(role=Role.REPLICA, replication_state=None, pg_down_since=95.0), CFG, ["UpdateLeader", "Promote"]),
    ("key holder up read-only beyond primary_start_timeout (every promotion died) releases the lock", view(),
     primary(role=Role.REPLICA, replication_state=None, pg_down_since=10.0), CFG, ["ReleaseLeader"]),
    ("paused: a key holder up read-only keeps the lock", view(),
     primary(role=Role.REPLICA, replication_state=None, pg_down_since=10.0), HaSettings(pause=True),
     ["UpdateLeader", "Wait"]),
    ("former primary rewinds before following", view(leader="n2"),
     primary(running=False, role=None, was_primary=True), CFG, ["Rewind"]),
    ("former primary without rewind re-clones", view(leader="n2"),
     primary(running=False, role=None, was_primary=True), HaSettings(use_pg_rewind=False), ["Reinitialize"]),
    ("failed rewind re-clones", view(leader="n2"),
     primary(running=False, role=None, was_primary=True, job_result=JobResult("rewind", False, "x")), CFG,
     ["Reinitialize"]),
    ("failed bootstrap gives the race back", ClusterView(initialize="", leader=Leader("n1")),
     LocalState(name="n1", now=1.0, job_result=JobResult("bootstrap", False, "initdb")), CFG,
     ["CancelInitialize", "ReleaseLeader"]),
    ("stopped replica starts following the leader", view(), replica(running=False, role=None), CFG,
     ["StartPostgres"]),
    ("no leader: a stopped node starts read-only", view(leader=None), replica(running=False, role=None), CFG,
     ["StartPostgres"]),
    ("diverged replica rewinds", view(leader="n3", history=(HistoryEntry(1, 900, "no recovery target"),)),
     replica(replication_state="in archive recovery", following="n3", leader_alive=True), CFG, ["Rewind"]),
    ("no rewind toward a leader that does not answer",
     view(leader="n3", history=(HistoryEntry(1, 900, "no recovery target"),)),
     replica(replication_state="in archive recovery", following="n3", leader_alive=False), CFG, ["Wait"]),
    ("a rewind that could not start is retried, never turned into a re-clone", view(leader="n2"),
     primary(running=False, role=None, was_primary=True, job_result=JobResult("rewind", False, "x", retryable=True)),
     CFG, ["Rewind"]),
    ("replica at the fork point just follows", view(leader="n3", history=(HistoryEntry(1, 1000, "x"),)),
     replica(replication_state="in archive recovery", following="n3"), CFG, ["Wait"]),
    ("switchover: leader demotes gracefully", view(failover=Failover("n1", "n2")), primary(), CFG,
     ["UpdateLeader", "Demote"]),
    ("switchover to a stopped member is cancelled",
     view(failover=Failover("n1", "n2"), members=(member("n1", role="primary"), member("n2", state="stopped"))),
     primary(), CFG, ["UpdateLeader", "ClearFailover"]),
    ("scheduled switchover waits", view(failover=Failover("n1", "n2", "2099-01-01T00:00:00+00:00")),
     primary(wall_time=0.0), CFG, ["UpdateLeader", "EnsureSlots"]),
    ("old leader does not race during a switchover", view(leader=None, failover=Failover("n1", "n2")),
     replica("n1", peers=(PeerStatus("n2", True, "replica", True, 1000),)), CFG, ["Wait"]),
    ("named candidate wins regardless of peers", view(leader=None, failover=Failover("n1", "n2")),
     replica(peers=(PeerStatus("n3", True, "replica", True, 5000),)), CFG, ["AcquireLeader", "Promote"]),
    ("other node waits for the named candidate", view(leader=None, failover=Failover(None, "n2")),
     replica("n3", peers=(PeerStatus("n2", True, "replica", True, 900),)), CFG, ["Wait"]),
    ("new leader clears the satisfied failover key", view(leader="n2", failover=Failover("n1", "n2")),
     primary("n2"), CFG, ["UpdateLeader", "ClearFailover"]),
    # No stuck states (issue 11).
    ("a start job past primary_start_timeout gives the lock away", view(),
     primary(running=False, role=None, job="start", pg_down_since=10.0), CFG, ["ReleaseLeader"]),
    ("a restart job within primary_start_timeout keeps the lock", view(),
     primary(running=False, role=None, job="restart", pg_down_since=95.0), CFG, ["UpdateLeader", "Wait"]),
    ("paused: a slow start never gives the lock away", view(),
     primary(running=False, role=None, job="start", pg_down_since=10.0), HaSettings(pause=True),
     ["UpdateLeader", "Wait"]),
    ("backing off: the crashed primary keeps the lock but starts nothing", view(),
     primary(running=False, role=None, was_primary=True, pg_down_since=95.0, retry=Retry("start", 3, 104.0)), CFG,
     ["UpdateLeader", "Wait"]),
    ("backing off never delays giving the lock away", view(),
     primary(running=False, role=None, was_primary=True, pg_down_since=10.0, retry=Retry("start", 5, 130.0)), CFG,
     ["ReleaseLeader"]),
    ("back-off over: the start is tried again", view(),
     primary(running=False, role=None, was_primary=True, pg_down_since=95.0, retry=Retry("start", 3, 99.0)), CFG,
     ["UpdateLeader", "StartPostgres"]),
    ("backing off: no rewind loop either", view(leader="n2"),
     primary(running=False, role=None, was_primary=True, retry=Retry("rewind", 1, 101.0)), CFG, ["Wait"]),
    ("a former primary already rewound from this leader and timeline starts, not rewinds again",
     view(leader="n2", members=(member("n1"), member("n2", role="primary", timeline=2))),
     primary(running=False, role=None, was_primary=True, rewound_from=("n2", 2)), CFG, ["StartPostgres"]),
    ("the leader moved to a new timeline since our rewind: rewind again",
     view(leader="n2", members=(member("n1"), member("n2", role="primary", timeline=3))),
     primary(running=False, role=None, was_primary=True, rewound_from=("n2", 2)), CFG, ["Rewind"]),
    ("still diverged after a rewind from this leader and timeline: re-clone",
     led_by_n3(2, HistoryEntry(1, 900, "x")),
     replica(replication_state="in archive recovery", following="n3", leader_alive=True, rewound_from=("n3", 2)),
     CFG, ["Reinitialize"]),
    # The leader promoted past our timeline (reserved, another node created it): its lineage skips it.
    ("our timeline is not in the leader's lineage: diverged",
     led_by_n3(3, HistoryEntry(1, 900, "x")),
     replica(timeline=2, wal_position=950, history=(HistoryEntry(1, 900, "x"),),
             replication_state="in archive recovery", following="n3", leader_alive=True), CFG, ["Rewind"]),
    ("a history trimmed above our timeline says nothing: just follow",
     led_by_n3(4, HistoryEntry(3, 2000, "x")),
     replica(timeline=2, wal_position=950, replication_state="in archive recovery", following="n3",
             leader_alive=True), CFG, ["Wait"]),
    ("same timeline number, another fork point: diverged",
     led_by_n3(2, HistoryEntry(1, 900, "x")),
     replica(timeline=2, wal_position=5000, history=(HistoryEntry(1, 1200, "x"),),
             replication_state="in archive recovery", following="n3", leader_alive=True), CFG, ["Rewind"]),
    ("same timeline and the same fork point: just follow",
     led_by_n3(2, HistoryEntry(1, 900, "x")),
     replica(timeline=2, wal_position=5000, history=(HistoryEntry(1, 900, "x"),),
             replication_state="in archive recovery", following="n3", leader_alive=True), CFG, ["Wait"]),
    ("the leader writes the timelines the DCS history misses",
     view(history=(HistoryEntry(1, 900, "x"),)),
     primary(timeline=4, history=(HistoryEntry(1, 900, "x"), HistoryEntry(2, 1900, "y"), HistoryEntry(3, 2900, "z")),
             wal_position=1000), CFG, ["UpdateLeader", "WriteHistory", "EnsureSlots"]),
    ("a stopping replica never races for a free lock", view(leader=None), replica(stopping=True), CFG, ["Wait"]),
    ("a stopping replica holding the lock does not promote", view(leader="n2"), replica(stopping=True), CFG,
     ["UpdateLeader", "Wait"]),
    ("a stopping node starts no job", view(), replica(running=False, role=None, stopping=True), CFG, ["Wait"]),
    ("a stopping primary still renews its lock", view(), primary(stopping=True), CFG,
     ["UpdateLeader", "EnsureSlots"]),
    # failsafe_mode
    ("failsafe: DCS down, every member confirmed: keep running", None, primary(lease_ok_at=90.0, failsafe_ok=True),
     FAILSAFE, ["Wait"]),
    ("failsafe: DCS down, a member did not confirm: demote", None, primary(lease_ok_at=90.0, failsafe_ok=False),
     FAILSAFE, ["Demote"]),
    ("failsafe off: a confirmation does not count", None, primary(lease_ok_at=90.0, failsafe_ok=True), CFG,
     ["Demote"]),
    ("failsafe: the leader publishes the members", view(failsafe=None), primary(), FAILSAFE,
     ["UpdateLeader", "WriteFailsafe", "EnsureSlots"]),
    ("failsafe: members already published", view(failsafe={n: f"http://{n}:8008/patroni" for n in ("n1", "n2", "n3")}),
     primary(), FAILSAFE, ["UpdateLeader", "EnsureSlots"]),
    ("failsafe: a replica told by the cut-off primary does not race", view(leader=None),
     replica(failsafe_leader="n1"), FAILSAFE, ["Wait"]),
    ("failsafe: a node missing from /failsafe does not race", view(leader=None, failsafe={"n1": "x", "n3": "y"}),
     replica(), FAILSAFE, ["Wait"]),
    ("failsafe: listed and nobody told us anything: race", view(leader=None, failsafe={"n1": "x", "n2": "y"}),
     replica(), FAILSAFE, ["AcquireLeader", "Promote"]),
]


@pytest.mark.parametrize(("v", "local", "cfg", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decide_table(v: ClusterView | None, local: LocalState, cfg: HaSettings, expected: list[str]) -> None:
    acts = decide(v, local, cfg)
    assert kinds(acts) == expected, [str(x) for x in acts]
    assert all(x.reason for x in acts), "every decision carries a reason"


def test_promotion_only_after_acquiring_the_lock() -> None:
    acts = decide(view(leader=None), replica(), CFG)
    assert kinds(acts).index("AcquireLeader") < kinds(acts).index("Promote")


def test_dcs_outage_demotion_does_not_release_key_it_cannot_reach() -> None:
    (act,) = decide(None, primary(lease_ok_at=90.0), CFG)
    assert isinstance(act, a.Demote) and act.mode is a.DemoteMode.IMMEDIATE and not act.release


def test_strict_sync_promotion_keeps_commits_blocked() -> None:
    acts = decide(view(leader=None, sync=SyncState("n1", ("n2",))), replica(), SYNC)
    promote = acts[-1]
    assert isinstance(promote, a.Promote) and promote.strict_sync


def test_refusal_reason_names_the_better_peer() -> None:
    (act,) = decide(view(leader=None), replica(peers=(PeerStatus("n3", True, "replica", True, 1500),)), CFG)
    assert "n3" in act.reason and "more WAL" in act.reason


def test_slots_cover_every_other_member() -> None:
    acts = decide(view(), primary(), CFG)
    slots = next(x for x in acts if isinstance(x, a.EnsureSlots))
    assert slots.names == ("n2", "n3")


# --- synchronous replication: the order of sync key and synchronous_standby_names updates ---

def conn(name: str, sync_state: str = "async", flush: int = 1000) -> StandbyConn:
    return StandbyConn(application_name=name, state="streaming", sync_state=sync_state, flush_lsn=flush)


def sync_kinds(v: ClusterView, local: LocalState) -> list[a.Action]:
    return [x for x in decide(v, local, SYNC) if isinstance(x, (a.WriteSync, a.SetSyncStandbyNames))]


def test_sync_new_leader_takes_the_sync_key_first() -> None:
    (act,) = sync_kinds(view(sync=SyncState("n0", ("n1",), mod_revision=3)), primary())
    assert isinstance(act, a.WriteSync) and act.standbys == () and act.revision == 3


def test_sync_sets_ssn_before_naming_the_standby() -> None:
    (act,) = sync_kinds(view(sync=SyncState("n1", ())), primary(replication=(conn("n2"), conn("n3"))))
    assert isinstance(act, a.SetSyncStandbyNames) and act.value == 'FIRST 1 ("n2")'


def test_sync_names_standby_once_confirmed_and_caught_up() -> None:
    local = primary(replication=(conn("n2", "sync", 1200), conn("n3")), synchronous_standby_names='FIRST 1 ("n2")',
                    ssn_set_lsn=1100)
    (act,) = sync_kinds(view(sync=SyncState("n1", ())), local)
    assert isinstance(act, a.WriteSync) and act.standbys == ("n2",)


def test_sync_does_not_name_standby_behind_the_ssn_change() -> None:
    local = primary(replication=(conn("n2", "sync", 1000),), synchronous_standby_names='FIRST 1 ("n2")',
                    ssn_set_lsn=1100)
    assert sync_kinds(view(sync=SyncState("n1", ())), local) == []


def test_sync_drops_a_lost_standby_from_the_key_before_ssn() -> None:
    local = primary(replication=(conn("n3"),), synchronous_standby_names='FIRST 1 ("n2")', ssn_set_lsn=1)
    (act,) = sync_kinds(view(sync=SyncState("n1", ("n2",))), local)
    assert isinstance(act, a.WriteSync) and act.standbys == ()


def test_strict_sync_without_standbys_blocks_commits() -> None:
    (act,) = sync_kinds(view(sync=SyncState("n1", ())), primary(synchronous_standby_names='FIRST 1 ("n2")'))
    assert isinstance(act, a.SetSyncStandbyNames) and "placeholder" in act.value


def test_non_strict_sync_without_standbys_falls_back_to_async() -> None:
    cfg = HaSettings(synchronous_mode=True)
    acts = decide(view(sync=SyncState("n1", ())), primary(synchronous_standby_names='FIRST 1 ("n2")'), cfg)
    ssn = [x for x in acts if isinstance(x, a.SetSyncStandbyNames)]
    assert ssn and ssn[0].value == ""


def test_interrupted_bootstrap_is_wiped() -> None:
    acts = decide(ClusterView(initialize="", leader=Leader("n1")),
                  LocalState(name="n1", now=1.0, data_dir=DataDir.INCOMPLETE), CFG)
    assert kinds(acts) == ["WipeDataDir"]


def test_interrupted_clone_reclones_from_the_leader() -> None:
    acts = decide(view(), LocalState(name="n2", now=1.0, data_dir=DataDir.INCOMPLETE), CFG)
    assert kinds(acts) == ["Reinitialize"] and acts[0].source is not None  # type: ignore[attr-defined]
    assert acts[0].source.name == "n1"  # type: ignore[attr-defined]


def test_interrupted_clone_waits_without_a_leader() -> None:
    acts = decide(view(leader=None), LocalState(name="n2", now=1.0, data_dir=DataDir.INCOMPLETE), CFG)
    assert kinds(acts) == ["Wait"]


def test_promotion_carries_the_known_history() -> None:
    hist = (HistoryEntry(1, 500, "no recovery target"),)
    acts = decide(view(leader=None, history=hist), replica(), CFG)
    assert isinstance(acts[-1], a.Promote) and acts[-1].history == hist


@pytest.mark.parametrize(("optime", "position", "lag"), [
    (1000, 1000, 0),
    (900, 1000, 0),
    (3 * 16 * 1024**2, 3 * 16 * 1024**2 - 200, 0),  # idle primary right after a segment switch
    (3 * 16 * 1024**2, 2 * 16 * 1024**2 - 200, 16 * 1024**2 + 200),  # a whole segment behind
    (3 * 16 * 1024**2 + 8, 3 * 16 * 1024**2 - 200, 208),
])
def test_wal_lag(optime: int, position: int, lag: int) -> None:
    from appliance.core.wal import wal_lag

    assert wal_lag(optime, position) == lag


def test_idle_cluster_after_segment_switch_can_still_fail_over() -> None:
    seg = 16 * 1024**2
    acts = decide(view(leader=None, status=ClusterStatus(optime=5 * seg)), replica(wal_position=5 * seg - 120), CFG)
    assert kinds(acts) == ["AcquireLeader", "Promote"]


def test_due_scheduled_switchover_names_the_candidate() -> None:
    fo = Failover("n1", "n3", "2026-01-01T00:00:00+00:00")
    peers = (PeerStatus("n3", True, "replica", True, 900),)
    acts = decide(view(leader=None, failover=fo), replica(peers=peers, wall_time=1.9e9), CFG)
    assert kinds(acts) == ["Wait"] and "n3" in acts[0].reason
    old = decide(view(leader=None, failover=fo), replica("n1", peers=peers, wall_time=1.9e9), CFG)
    assert kinds(old) == ["Wait"]


def test_future_scheduled_switchover_does_not_constrain_the_race() -> None:
    fo = Failover("n1", "n3", "2099-01-01T00:00:00+00:00")
    acts = decide(view(leader=None, failover=fo), replica(wall_time=1.9e9), CFG)
    assert kinds(acts) == ["AcquireLeader", "Promote"]


def test_sync_keeps_a_healthy_standby_when_another_replica_joins() -> None:
    local = primary(replication=(conn("n2", "potential"), conn("n3", "sync", 2000)),
                    synchronous_standby_names='FIRST 1 ("n3")', ssn_set_lsn=1500)
    assert sync_kinds(view(sync=SyncState("n1", ("n3",))), local) == []


def test_a_new_primary_keeps_the_standby_it_just_made_synchronous_when_another_connects() -> None:
    """Right after a switchover n3 streamed first and became synchronous in PostgreSQL; n2 (the old
    primary, alphabetically first) connects before n3 is in the sync key: n3 stays the choice."""
    local = primary(replication=(conn("n2"), conn("n3", "sync", 1200)), synchronous_standby_names='FIRST 1 ("n3")',
                    ssn_set_lsn=1100)
    (act,) = sync_kinds(view(sync=SyncState("n1", ())), local)
    assert isinstance(act, a.WriteSync) and act.standbys == ("n3",)


# --- maximum_lag_on_syncnode, max_timelines_history ---------------------------------------------------

@pytest.mark.parametrize(("limit", "flushes", "current", "wanted"), [
    (-1, {"n2": 100, "n3": 5000}, ("n2",), ("n2",)),  # off: the current sync standby stays
    (1000, {"n2": 100, "n3": 5000}, ("n2",), ("n3",)),  # n2 lags 4900 > 1000 behind n3: swapped
    (1000, {"n2": 4500, "n3": 5000}, ("n2",), ("n2",)),  # within the limit: kept
    (1000, {"n2": 100}, ("n2",), ("n2",)),  # lagging behind the primary but nobody better: kept
])
def test_a_sync_standby_lagging_beyond_the_limit_is_swapped_for_a_healthy_one(
        limit: int, flushes: dict[str, int], current: tuple[str, ...], wanted: tuple[str, ...]) -> None:
    from appliance.core.sync import desired_standbys

    cfg = HaSettings(synchronous_mode=True, maximum_lag_on_syncnode=limit)
    local = primary(wal_position=5000, replication=tuple(conn(n, flush=f) for n, f in flushes.items()))
    assert desired_standbys(view(sync=SyncState("n1", current)), local, cfg) == wanted


def test_promotion_carries_the_history_limit() -> None:
    cfg = HaSettings(max_timelines_history=3)
    acts = decide(view(leader=None), replica(peers=()), cfg)
    promote = next(x for x in acts if isinstance(x, a.Promote))
    assert promote.keep_history == 3


def test_the_leader_history_rewrite_keeps_known_rows_and_drops_foreign_timelines() -> None:
    from appliance.core.timelines import reconciled_history

    known = HistoryEntry(1, 900, "no recovery target specified", "2026-01-01T00:00:00+00:00", "n2")
    foreign = HistoryEntry(2, 1500, "promoted while stopping", "2026-01-02T00:00:00+00:00", "n3")
    own = (HistoryEntry(1, 900, "file reason"), HistoryEntry(2, 1900, "file reason"))
    fixed = reconciled_history((known, foreign), own, keep=0)
    assert fixed == (known, HistoryEntry(2, 1900, "file reason"))
    assert reconciled_history(fixed, own, keep=0) is None  # reconciled: nothing more to write
    assert reconciled_history((known,), own, keep=1) == (HistoryEntry(2, 1900, "file reason"),)
    assert reconciled_history((), (), keep=0) is None


def test_backoff_doubles_up_to_a_cap_and_forgets_old_failures() -> None:
    from appliance.core import retry

    r = None
    delays = []
    for _ in range(8):
        r = retry.after_failure(r, "start", 100.0)
        delays.append(r.until - 100.0)
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]
    assert retry.after_failure(r, "start", r.until + retry.FORGET_AFTER + 1).failures == 1
    assert retry.active(r, 100.5) and not retry.active(r, r.until)


def test_a_replica_problem_is_named() -> None:
    from appliance.core.timelines import STUCK_AFTER, replica_problem

    assert replica_problem(True, None, 10.0) == "diverged from the leader's timeline"
    assert replica_problem(False, 0.0, STUCK_AFTER - 1) is None
    assert "not streaming" in (replica_problem(False, 0.0, STUCK_AFTER + 1) or "")
    assert replica_problem(False, None, 1000.0) is None


def test_the_slot_of_a_vanished_member_is_kept_and_listed_in_retain_slots() -> None:
    v = view(members=(member("n1", role="primary"), member("n2")), status=ClusterStatus(optime=1000))
    acts = decide(v, primary(retained=("n3",)), CFG)
    slots = next(x for x in acts if isinstance(x, a.EnsureSlots))
    status = next(x for x in acts if isinstance(x, a.WriteStatus))
    assert slots.names == ("n2", "n3")
    assert status.retain_slots == ("n1", "n2", "n3")
    assert "n3" not in next(x for x in decide(v, primary(), CFG) if isinstance(x, a.EnsureSlots)).names
