"""The fencer's rule (a table), the fencer loop with fake PostgreSQL/watchdog/kill, and the manager's
lease keeper: the deadline only comes from a renewal that covered the leader key."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest

from appliance.core.model import ClusterView, Leader
from appliance.fence.daemon import Fencer
from appliance.fence.order import (
    FencerReport,
    LeaseOrder,
    WatchdogSettings,
    read_order,
    read_report,
    write_order,
    write_report,
)
from appliance.fence.policy import PgSight, step, watchdog_timeout
from appliance.fence.watchdog import WatchdogError
from appliance.manager.events import EventLog
from appliance.manager.fencing import LeaseKeeper

PRIMARY = PgSight(running=True, writable=True)
REPLICA = PgSight(running=True, writable=False)
DOWN = PgSight(running=False, writable=False)


def order(deadline: float | None, paused: bool = False, mode: str = "automatic", ttl: float = 5.0,
          safety_margin: int = 5) -> LeaseOrder:
    return LeaseOrder(deadline=deadline, ttl=ttl, paused=paused,
                      watchdog=WatchdogSettings(mode=mode, safety_margin=safety_margin))  # type: ignore[arg-type]


# (case, order, PostgreSQL, now, fence?, watchdog step)
CASES = [
    ("a replica is never fenced", order(None), REPLICA, 100.0, False, "disarm"),
    ("nothing runs", None, DOWN, 100.0, False, "disarm"),
    ("a primary right after a renewal feeds the watchdog", order(105.0), PRIMARY, 100.0, False, "feed"),
    ("a late renewal: stop feeding, not fencing yet", order(105.0), PRIMARY, 103.0, False, "hold"),
    ("inside the margin: fence", order(105.0), PRIMARY, 103.6, True, "hold"),
    ("past the deadline: fence", order(105.0), PRIMARY, 200.0, True, "hold"),
    ("no key: fence at once", order(None), PRIMARY, 100.0, True, "hold"),
    ("no order at all: fence", None, PRIMARY, 100.0, True, "hold"),
    ("paused: never fence", order(None, paused=True), PRIMARY, 100.0, False, "disarm"),
    ("paused and expired: never fence", order(90.0, paused=True), PRIMARY, 100.0, False, "disarm"),
    ("watchdog off", order(105.0, mode="off"), PRIMARY, 99.0, False, "disarm"),
    ("an expired order does not matter to a replica", order(90.0), REPLICA, 100.0, False, "disarm"),
]


@pytest.mark.parametrize(("case", "lease", "pg", "now", "fence", "watchdog"), CASES, ids=[c[0] for c in CASES])
def test_fence_rule(case: str, lease: LeaseOrder | None, pg: PgSight, now: float, fence: bool,
                    watchdog: str) -> None:
    decision = step(lease, pg, now)
    assert (decision.fence is not None, decision.watchdog) == (fence, watchdog), case


def test_watchdog_reset_comes_after_the_fence_and_before_the_deadline() -> None:
    for ttl, margin in [(5, 5), (30, 5), (10, -1), (6, 2), (3600, 5)]:
        timeout = watchdog_timeout(ttl, margin)
        deadline = 100_000.0
        lease = order(deadline, ttl=float(ttl), safety_margin=margin)
        # From the renewal (deadline - ttl) on, in 10 ms steps: the last feed sets the latest reset.
        times = [deadline - ttl + i / 100 for i in range(ttl * 100 + 1)]
        feeds = [t for t in times if step(lease, PRIMARY, t).watchdog == "feed"]
        assert feeds, (ttl, margin)
        reset = max(feeds) + timeout
        fence_at = min(t for t in times if step(lease, PRIMARY, t).fence)
        assert fence_at < reset <= deadline, (ttl, margin, fence_at, reset)


def test_watchdog_timeout_follows_patroni_and_stays_usable() -> None:
    assert watchdog_timeout(30, 5) == 25
    assert watchdog_timeout(30, -1) == 15
    assert watchdog_timeout(5, 5) == 2  # ttl - margin would be 0: ttl / 2
    assert watchdog_timeout(2, 5) == 1


class FakeDevice:
    def __init__(self, works: bool = True) -> None:
        self.works = works
        self.open_calls: list[int] = []
        self.feeds = 0
        self.closes = 0
        self.active = False

    def open(self, timeout: int) -> None:
        if not self.works:
            raise WatchdogError("cannot open /dev/watchdog: No such file or directory")
        self.open_calls.append(timeout)
        self.active = True

    def keepalive(self) -> None:
        self.feeds += 1

    def close(self) -> None:
        if self.active:
            self.closes += 1
        self.active = False

    def probe(self, timeout: int) -> None:
        self.open(timeout)
        self.close()


class World:
    """A fake host: the boot clock, PostgreSQL's look, the kills, the device."""

    def __init__(self, tmp_path: Path, device_works: bool = True) -> None:
        self.now = 100.0
        self.pg = PRIMARY
        self.kills: list[str] = []
        self.device = FakeDevice(device_works)
        self.run_dir = str(tmp_path)
        self.fencer = Fencer("/data", self.run_dir, clock=lambda: self.now, sight=lambda _d: self.pg,
                             kill=self._kill, watchdog=lambda _dev: self.device)  # type: ignore[arg-type,return-value]

    def _kill(self, data_dir: str) -> tuple[list[int], list[int]]:
        self.kills.append(data_dir)
        self.pg = DOWN
        return [11, 12], []


def test_fencer_kills_an_expired_primary_once_and_reports_it(tmp_path: Path) -> None:
    w = World(tmp_path)
    write_order(w.run_dir, order(105.0))
    w.fencer.once()
    assert w.kills == []
    w.now = 104.0
    w.fencer.once()
    w.fencer.once()
    assert w.kills == ["/data"]
    report = read_report(w.run_dir)
    assert report is not None and report.fences == 1 and report.last_fence is not None
    assert report.last_fence.killed == (11, 12) and "not renewed" in report.last_fence.reason


def test_fencer_feeds_the_watchdog_while_leading_and_disarms_after(tmp_path: Path) -> None:
    w = World(tmp_path)
    write_order(w.run_dir, order(105.0))
    w.now = 100.5
    w.fencer.once()
    assert w.device.active and w.device.feeds == 1 and w.device.open_calls == [2]
    w.pg = REPLICA
    w.fencer.once()
    assert not w.device.active and w.device.closes == 1
    report = read_report(w.run_dir)
    assert report is not None and report.watchdog == "ready"


def test_unusable_watchdog_is_reported_and_the_fencer_still_fences(tmp_path: Path) -> None:
    w = World(tmp_path, device_works=False)
    w.pg = REPLICA
    write_order(w.run_dir, order(None, mode="required"))
    w.fencer.once()
    report = read_report(w.run_dir)
    assert report is not None and report.watchdog == "unavailable" and "No such file" in report.watchdog_reason
    w.pg = PRIMARY
    w.fencer.once()
    assert w.kills == ["/data"]


def test_watchdog_off_never_opens_the_device(tmp_path: Path) -> None:
    w = World(tmp_path)
    write_order(w.run_dir, order(105.0, mode="off"))
    w.now = 100.5
    w.fencer.once()
    assert w.device.open_calls == [] and read_report(w.run_dir).watchdog == "off"  # type: ignore[union-attr]


class Clock:
    def __init__(self) -> None:
        self.mono = 1000.0
        self.boot = 50.0

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.boot += seconds


def keeper(tmp_path: Path, clock: Clock) -> LeaseKeeper:
    return LeaseKeeper(str(tmp_path), lambda: clock.mono, EventLog(), boot=lambda: clock.boot)


def view(leader: str | None, lease: int = 7) -> ClusterView:
    return ClusterView(leader=Leader(leader, lease=lease) if leader else None)


def test_keeper_deadline_comes_only_from_a_renewal_of_the_leader_keys_lease(tmp_path: Path) -> None:
    clock = Clock()
    k = keeper(tmp_path, clock)
    k.after_read(view("n1", lease=7), "n1", lease_id=7, sent=clock.mono, ttl=5)
    assert k.holder and k.deadline == 1005.0
    written = read_order(str(tmp_path))
    assert written is not None and written.deadline == pytest.approx(55.0)  # in boot time
    clock.advance(1)
    # The key is ours but on an older lease: no extension until update_leader moves it.
    k.after_read(view("n1", lease=6), "n1", lease_id=7, sent=clock.mono, ttl=5)
    assert k.deadline == 1005.0
    k.key_confirmed(clock.mono, 5)
    assert k.deadline == 1006.0
    # The key vanished (expired, revoked): the bound stands, never extended.
    clock.advance(1)
    k.after_read(view(None), "n1", lease_id=7, sent=clock.mono, ttl=5)
    assert not k.holder and k.deadline == 1006.0
    # Someone else holds it: fence now.
    k.after_read(view("n2"), "n1", lease_id=7, sent=clock.mono, ttl=5)
    assert k.deadline is None and read_order(str(tmp_path)).deadline is None  # type: ignore[union-attr]


def test_a_restarted_manager_inherits_the_previous_bound(tmp_path: Path) -> None:
    clock = Clock()
    first = keeper(tmp_path, clock)
    first.after_read(view("n1"), "n1", lease_id=7, sent=clock.mono, ttl=5)
    clock.advance(2)
    second = keeper(tmp_path, clock)
    assert second.deadline == pytest.approx(1005.0)


def test_keeper_status_needs_a_live_fencer_and_a_required_watchdog(tmp_path: Path) -> None:
    import os

    clock = Clock()
    k = keeper(tmp_path, clock)
    assert k.status().problem is not None and "no fencer" in k.status().problem  # type: ignore[operator]
    write_report(str(tmp_path), FencerReport(alive_at=clock.boot, pid=os.getpid(), watchdog="unavailable",
                                             watchdog_reason="no device"))
    assert k.status().problem is None  # automatic: the watchdog is optional
    k.configure(paused=False, ttl=5, watchdog=WatchdogSettings(mode="required"))
    status = k.status()
    assert status.problem is not None and "watchdog required" in status.problem and status.watchdog_failed
    clock.advance(10)
    assert "no fencer" in (k.status().problem or "")


@pytest.fixture
def fake_postgres(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A process whose argv[0] is "postgres", running in a data directory (as PostgreSQL's do)."""
    import subprocess

    procs: list[subprocess.Popen[bytes]] = []

    def spawn() -> int:
        proc = subprocess.Popen(["postgres", "60"], executable="/bin/sleep", cwd=tmp_path)
        procs.append(proc)
        for _ in range(200):  # until its /proc entry shows the exec'd argv
            with contextlib.suppress(OSError):
                if Path(f"/proc/{proc.pid}/cmdline").read_bytes().startswith(b"postgres\0"):
                    break
            time.sleep(0.01)
        return proc.pid

    yield spawn
    for proc in procs:
        proc.kill()
        proc.wait()


def test_pg_sight_reads_the_pid_file_and_the_signal_files(tmp_path: Path, fake_postgres) -> None:  # type: ignore[no-untyped-def]
    from appliance.fence.daemon import pg_sight

    assert pg_sight(str(tmp_path)) == DOWN
    pid = fake_postgres()
    (tmp_path / "postmaster.pid").write_text(f"{pid}\n{tmp_path}\n0\n5432\n")
    assert pg_sight(str(tmp_path)) == PRIMARY
    (tmp_path / "standby.signal").touch()
    assert pg_sight(str(tmp_path)) == REPLICA
    (tmp_path / "standby.signal").unlink()
    # pg_rewind's single-user crash recovery writes a negative pid: it takes no connections.
    (tmp_path / "postmaster.pid").write_text(f"-{pid}\n{tmp_path}\n")
    assert pg_sight(str(tmp_path)) == REPLICA


def test_kill_cluster_kills_the_postmaster_and_orphans_of_the_data_dir(tmp_path: Path, fake_postgres) -> None:  # type: ignore[no-untyped-def]
    from appliance.postgres.process import cluster_pids, kill_cluster

    postmaster, orphan = fake_postgres(), fake_postgres()
    (tmp_path / "postmaster.pid").write_text(f"{postmaster}\n{tmp_path}\n")
    assert set(cluster_pids(str(tmp_path))) == {postmaster, orphan}
    killed, alive = kill_cluster(str(tmp_path))
    assert set(killed) == {postmaster, orphan} and alive == []  # zombies until the fixture reaps them
