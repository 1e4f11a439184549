"""The manager's PostgreSQL adapter (PgOps) over a simulated server, and a job runner on simulated time."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from appliance.core.model import HistoryEntry, Member
from appliance.core.quorum import parse_ssn
from appliance.core.state import DataDir, JobResult
from appliance.core.sync import STRICT_PLACEHOLDER, named_in_ssn
from appliance.core.timelines import merged_history
from appliance.manager.jobs import JobRunner, RetryLater
from appliance.manager.memory import PgMemory
from appliance.manager.pgops import PgOps
from appliance.postgres.status import IN_ARCHIVE_RECOVERY, STREAMING, PgStatus, ReplicaConnection, WalReceiver

from .world import Server, World, new_data

# How long each job takes, in simulated seconds (its effects happen at the end).
JOB_SECONDS = {"bootstrap": 2.0, "clone": 3.0, "rewind": 2.0, "reinitialize": 3.0, "start": 1.0, "restart": 1.5}


class SimJobs(JobRunner):
    """JobRunner's contract on the simulation clock: a job's work runs when its time is up."""

    def __init__(self, clock: Callable[[], float]) -> None:
        super().__init__()
        self.clock = clock
        self._job: tuple[str, Callable[[], tuple[bool, str]], Callable[[], None], float] | None = None
        self._done: JobResult | None = None

    @property
    def running(self) -> str | None:
        return self._job[0] if self._job is not None else None

    def start(self, name: str, work: Callable[[], tuple[bool, str]], on_done: Callable[[], None]) -> bool:
        if self._job is not None:
            return False
        self._done = None
        self._job = (name, work, on_done, self.clock() + JOB_SECONDS.get(name, 1.0))
        return True

    def advance(self) -> None:
        """Finish the job whose time has come (JobRunner._run's outcome rules)."""
        if self._job is None or self.clock() < self._job[3]:
            return
        name, work, on_done, _ = self._job
        retryable = False
        try:
            ok, detail = work()
        except RetryLater as exc:
            ok, detail, retryable = False, str(exc), True
        self._job = None
        self._done = JobResult(job=name, ok=ok, detail=detail, retryable=retryable)
        if ok:
            on_done()

    def take_result(self) -> JobResult | None:
        result, self._done = self._done, None
        return result

    def join(self, timeout: float | None = None) -> None:
        return None


class SimPgOps:
    """What PgOps does, done to a simulated Server; ``promoted`` hooks let the harness check each promotion."""

    def __init__(self, world: World, name: str, on_promote: Callable[[str], None]) -> None:
        self.world = world
        self.name = name
        self.on_promote = on_promote
        self.memory = PgMemory()  # what the manager told PostgreSQL (PgOps's contract)
        self.params: dict[str, Any] = {}

    @property
    def server(self) -> Server:
        return self.world.servers[self.name]

    # --- observation (changes nothing) --------------------------------------------------------------
    @property
    def conn_url(self) -> str:
        return f"postgres://{self.name}:5432/postgres"

    def status(self) -> PgStatus:
        s = self.server
        if not s.running:
            return PgStatus(running=False)
        if s.hung or s.data is None:
            return PgStatus(running=True, error="timeout expired")
        data = s.data
        common: dict[str, Any] = {"running": True, "system_identifier": data.sysid, "timeline": data.timeline,
                                  "synchronous_standby_names": s.ssn}
        if not s.in_recovery:
            return PgStatus(in_recovery=False, role="primary", wal_lsn=data.lsn,
                            replication=self._replication(), **common)
        receiver = WalReceiver(STREAMING, data.timeline, s.upstream, 5432, self.name, "", data.lsn) \
            if s.streaming else None
        return PgStatus(in_recovery=True, role="replica", receive_lsn=data.lsn, replay_lsn=data.lsn,
                        replication_state=STREAMING if s.streaming else IN_ARCHIVE_RECOVERY, receiver=receiver,
                        replication=self._replication(), **common)

    def _replication(self) -> tuple[ReplicaConnection, ...]:
        named = named_in_ssn(self.server.ssn)
        # PostgreSQL's sync_state: "quorum" for the standbys of an ANY n list, "sync" for FIRST n.
        state = "quorum" if parse_ssn(self.server.ssn).kind == "ANY" else "sync"
        rows = []
        for other in sorted(self.world.servers.values(), key=lambda x: x.name):
            if other.streaming and other.upstream == self.name and other.data is not None:
                lsn = other.data.lsn
                rows.append(ReplicaConnection(other.name, "replicator", None, STREAMING,
                                              state if other.name in named else "async", 1, lsn, lsn, lsn, lsn))
        return tuple(rows)

    def disk_state(self, running: bool) -> tuple[DataDir, str | None, bool]:
        s = self.server
        if s.incomplete:
            return DataDir.INCOMPLETE, None, False
        if s.data is None:
            return DataDir.EMPTY, None, False
        if running:
            return DataDir.VALID, s.data.sysid, False
        return DataDir.VALID, s.data.sysid, s.data.was_primary

    standby_conns = staticmethod(PgOps.standby_conns)  # the real conversion

    def config_stale(self) -> bool:
        return False

    def set_parameters(self, params: Mapping[str, Any]) -> None:
        return None

    def set_hba(self, lines: tuple[str, ...] | None) -> None:
        return None

    def own_history(self, timeline: int | None) -> tuple[HistoryEntry, ...]:
        data = self.server.data
        if data is None or timeline is None or timeline < 2:
            return ()
        return tuple(HistoryEntry(tl, lsn, "no recovery target specified") for tl, lsn in data.history)

    def timeline_history(self, known: tuple[HistoryEntry, ...], leader: str) -> tuple[HistoryEntry, ...]:
        data = self.server.data
        own = self.own_history(data.timeline if data is not None else None)
        return merged_history(known, own, leader, "2026-01-01T00:00:00+00:00")

    def slot_positions(self) -> dict[str, int]:
        return {}

    # --- changes while running -------------------------------------------------------------------
    def follow(self, leader: Member | None) -> bool:
        s = self.server
        s.upstream = leader.name if leader is not None else None
        self.memory.upstream = leader
        return s.answers or not s.running

    def reconcile(self) -> bool:
        return True

    def set_sync_standby_names(self, value: str) -> bool:
        s = self.server
        if not s.answers:
            return False
        s.ssn = self.memory.ssn = value
        self.memory.ssn_set_lsn = s.data.lsn if (s.data is not None and not s.in_recovery) else None
        return True

    def ensure_slots(self, names: tuple[str, ...]) -> None:
        self.server.slots = frozenset(names)

    def checkpoint(self) -> None:
        return None

    def promote(self, *, strict_sync: bool, timeout: float = 30.0, history: tuple[HistoryEntry, ...] = ()) -> bool:
        s = self.server
        if not s.answers or not s.in_recovery or s.data is None:
            return False
        if s.fail_promote:
            s.stop()  # PANIC: the standby.signal stays, the next start is read-only again
            return False
        self.on_promote(self.name)
        if strict_sync:
            s.ssn = STRICT_PLACEHOLDER
        data = s.data
        # PgOps reserves the timelines the cluster's history lists from ours on: the new one is past them.
        newest = max([data.timeline, *(h.timeline + 1 for h in history if h.timeline >= data.timeline)])
        s.data = dataclasses.replace(data, timeline=newest + 1,
                                     history=(*data.history, (data.timeline, data.lsn)))
        s.in_recovery, s.upstream, s.streaming = False, None, False
        self.memory.upstream = self.memory.ssn_set_lsn = None
        return True

    # --- lifecycle -------------------------------------------------------------------------------
    def stop(self, mode: str = "fast", kill_after: float | None = None) -> bool:
        s = self.server
        if s.frozen:
            return False
        s.hung = False
        s.stop()
        return True

    def start(self, *, primary: bool, upstream: Member | None, timeout: float | None = None) -> tuple[bool, str]:
        s = self.server
        if s.data is None or s.incomplete:
            return False, "no data directory"
        if s.fail_start or (primary and s.fail_promote):
            return False, "PostgreSQL did not accept connections; see its log"
        s.running, s.in_recovery = True, not primary
        s.upstream = upstream.name if (upstream is not None and not primary) else None
        self.memory.upstream = upstream if not primary else None
        return True, ""

    def restart(self, timeout: float | None = None) -> tuple[bool, str]:
        s = self.server
        primary = s.running and not s.in_recovery
        s.stop()
        if s.fail_start:
            return False, "PostgreSQL did not accept connections; see its log"
        upstream = None if primary else self.memory.upstream  # PgOps restarts with what it remembers
        s.running, s.in_recovery, s.upstream = True, not primary, upstream.name if upstream else None
        return True, ""

    def bootstrap(self) -> tuple[bool, str]:
        s = self.server
        s.data, s.incomplete = new_data(), False
        s.running, s.in_recovery, s.upstream, s.ssn = True, False, None, ""
        self.memory.upstream = None
        return True, ""

    def _source(self, source: Member, what: str) -> Server:
        src = self.world.servers.get(source.name)
        if src is None or not src.answers or src.data is None or not self.world.reachable(self.name, source.name):
            raise RetryLater(f"{what}: {source.name} unreachable")
        return src

    def clone(self, source: Member) -> tuple[bool, str]:
        src = self._source(source, f"clone from {source.name}")
        assert src.data is not None
        s = self.server
        s.data, s.incomplete = dataclasses.replace(src.data, was_primary=False), False
        return self.start(primary=False, upstream=source)

    def rewind(self, source: Member) -> tuple[bool, str]:
        src = self._source(source, f"rewind from {source.name}")
        assert src.data is not None
        s = self.server
        if s.data is None or s.data.sysid != src.data.sysid:
            return False, "pg_rewind: source and target are different systems"
        s.stop()
        s.data = dataclasses.replace(src.data, was_primary=False)
        return self.start(primary=False, upstream=source)

    def reinitialize(self, source: Member) -> tuple[bool, str]:
        self._source(source, f"re-clone from {source.name}")
        self.server.stop()
        self.server.data = None
        return self.clone(source)

    def wipe(self) -> bool:
        self.server.data, self.server.incomplete = None, False
        return True
