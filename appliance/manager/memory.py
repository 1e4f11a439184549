"""What the manager remembers between ticks for decide(): since when PostgreSQL is down under our
lock or a replica is not streaming, the back-off after failed jobs, the last successful rewind, the
members whose slots are kept (Memory); what PostgreSQL was told (PgMemory). Observations go in,
plain values come out (no I/O but events)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from appliance.core import retry
from appliance.core.model import ClusterView, HistoryEntry, Member, PgState, ReplicationState, Role
from appliance.core.state import JobResult, Retry
from appliance.manager.events import EventLog
from appliance.postgres.status import PgStatus


class Memory:
    def __init__(self, events: EventLog) -> None:
        self.events = events
        self.pg_down_since: float | None = None
        self.not_streaming_since: float | None = None
        self.retry: Retry | None = None
        self.failed: JobResult | None = None  # a failed rewind decide() still has to answer (after back-off)
        self.rewound_from: tuple[str, int] | None = None
        self.member_seen: dict[str, float] = {}  # when each member key was last seen (member_slots_ttl)
        self.remembered: tuple[Member, ...] = ()  # the members of the last read with a leader key
        self.leader_free_since: float | None = None
        self._vacancy_sync: int | None = None  # the sync key's revision when we found the key free

    def track(self, view: ClusterView | None, name: str, status: PgStatus, job: str | None, now: float) -> None:
        # primary_start_timeout counts while the lock is held with PostgreSQL not running as the
        # primary (down, or up read-only while each promotion fails), also while a start or restart
        # job tries to bring it back.
        if view is not None and view.leader_name == name and not _runs_as_primary(status) \
                and (job is None or job in ("start", "restart")):
            self.pg_down_since = self.pg_down_since if self.pg_down_since is not None else now
        else:
            self.pg_down_since = None
        leader = view.member(view.leader_name) if view is not None and view.leader_name else None
        if (leader is not None and leader.name != name and leader.state == PgState.RUNNING and status.queryable
                and status.role == Role.REPLICA and status.replication_state != ReplicationState.STREAMING):
            self.not_streaming_since = self.not_streaming_since if self.not_streaming_since is not None else now
        else:
            self.not_streaming_since = None
        self._track_leader(view)
        if view is not None:
            # A sync key written since we found the leader key free means a leader came and went
            # between two of our reads: its replicas' WAL moved on, the vacancy starts again now.
            sync = view.sync.mod_revision if view.sync is not None else None
            if view.leader is not None:
                self.leader_free_since = self._vacancy_sync = None
            elif self.leader_free_since is None or sync != self._vacancy_sync:
                self.leader_free_since, self._vacancy_sync = now, sync

    def _track_leader(self, view: ClusterView | None) -> None:
        """Remember the members of the last read that had a leader key (Patroni's old_cluster), and
        every member seen in a read since: the leader's key and member key vanish with its lease, and
        a member that became leader between two of our reads (or before our first one, after a
        restart of this manager) vanishes without us ever seeing it lead."""
        if view is None:
            return
        if view.leader is not None:
            self.remembered = view.members
            return
        names = {m.name for m in view.members}
        self.remembered = (*view.members, *(m for m in self.remembered if m.name not in names))

    def after_promote(self, ok: bool, now: float) -> None:
        """A promotion that failed (the server died or did not finish) is one more failed attempt."""
        if ok:
            return
        self.retry = retry.after_failure(self.retry, "promote", now)
        self.events.emit("retry", f"promote failed: no new job for {self.retry.until - now:.0f}s",
                         level=logging.WARNING, job="promote", failures=self.retry.failures)

    def after_job(self, result: JobResult | None, view: ClusterView | None, status: PgStatus, job: str | None,
                  now: float, name: str = "") -> JobResult | None:
        """Back off after a job that failed or left PostgreSQL down; remember a successful rewind.
        Returns the job result decide() sees: a failed rewind stays until another job starts."""
        if status.queryable and status.replication_state == ReplicationState.STREAMING:
            self.rewound_from = None
        if result is not None:
            self._note(result, view, status, now, holder=view is not None and view.leader_name == name)
        if job is not None:
            self.failed = None
        elif result is None and self.failed is not None:
            return self.failed  # "re-clone" once the back-off is over
        return result

    def _note(self, result: JobResult, view: ClusterView | None, status: PgStatus, now: float,
              holder: bool = False) -> None:
        if result.ok and status.queryable:
            # Up read-only under our key clears nothing: the promotion that follows decides (after_promote).
            if not holder or _runs_as_primary(status):
                self.failed = None
                if self.retry is not None:
                    self.events.emit("retry", f"{result.job} succeeded: back-off cleared")
                self.retry = None
        else:
            self.retry = retry.after_failure(self.retry, result.job, now)
            self.failed = result if not result.ok and result.job == "rewind" else None
            self.events.emit("retry", f"{result.job} {'failed' if not result.ok else 'left PostgreSQL down'}: "
                             f"no new job for {self.retry.until - now:.0f}s", level=logging.WARNING,
                             job=result.job, failures=self.retry.failures)
        leader = view.member(view.leader_name) if view is not None and view.leader_name else None
        if result.job == "rewind" and result.ok and leader is not None and leader.timeline is not None:
            self.rewound_from = (leader.name, leader.timeline)

    def retained(self, view: ClusterView | None, name: str, ttl: int, now: float) -> tuple[str, ...]:
        """Vanished members whose slots are kept for member_slots_ttl (a previous leader's list too)."""
        if view is None:
            return ()
        present = {m.name for m in view.members}
        for member in present:
            self.member_seen[member] = now
        for member in view.status.retain_slots:
            self.member_seen.setdefault(member, now)
        for member, seen in list(self.member_seen.items()):
            if member not in present and now - seen >= ttl:
                del self.member_seen[member]
        return tuple(sorted(n for n in self.member_seen if n not in present and n != name))


@dataclass
class PgMemory:
    """What the manager told PostgreSQL, and facts it cannot ask it while running: whom
    primary_conninfo points at, the synchronous_standby_names in effect and the WAL LSN at which it
    took effect, the parameters and pg_hba lines last written, the sysid pg_control showed last
    while stopped, the parsed history file. PgOps records its changes here; the loop reads it."""

    upstream: Member | None = None
    ssn: str = ""
    ssn_set_lsn: int | None = None
    written: dict[str, Any] | None = None  # None: nothing written or seen yet (manager start)
    hba_written: tuple[str, ...] | None = None
    sysid: str | None = None
    history: tuple[tuple[int, int, int], tuple[HistoryEntry, ...]] | None = None  # ((tl, ino, mtime), entries)

    @property
    def following(self) -> str | None:
        """The member our primary_conninfo points at (None on a primary or a detached standby)."""
        return self.upstream.name if self.upstream is not None else None

    def track(self, status: PgStatus, parameters: Mapping[str, Any]) -> None:
        """Take in one observation: the setting in effect; on a manager restart, what is running."""
        if not status.queryable:
            return
        seen = status.synchronous_standby_names or ""
        if seen != self.ssn:
            # Not the value we last set: a reload that took effect after we stopped waiting for it,
            # or an outside change. When it took effect is unknown: count from now.
            self.ssn_set_lsn = None
        self.ssn = seen
        if status.role == Role.PRIMARY and self.ssn_set_lsn is None:
            # Unknown history of the setting (manager restart): only standbys caught up with the
            # present may be named synchronous.
            self.ssn_set_lsn = status.wal_lsn
        if self.written is None:
            self.written = dict(parameters)

    def config_stale(self, parameters: Mapping[str, Any], hba: tuple[str, ...] | None) -> bool:
        """The effective parameters or pg_hba lines differ from what was written last."""
        return (self.written is not None and self.written != dict(parameters)) or self.hba_written != hba


def _runs_as_primary(status: PgStatus) -> bool:
    return status.queryable and status.role == Role.PRIMARY
