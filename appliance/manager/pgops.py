"""The manager's PostgreSQL operations: PostgresControl for actions and jobs, the Monitor for the
loop's observations (one kept connection), and PgMemory, where each action records what PostgreSQL
was told (whom we follow, synchronous_standby_names and when it took effect, what was written)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from appliance.core.model import HistoryEntry, Member, Role
from appliance.core.state import DataDir, StandbyConn
from appliance.core.timelines import merged_history
from appliance.manager.jobs import RetryLater
from appliance.manager.memory import PgMemory
from appliance.net.address import parse_conn_url
from appliance.postgres.config import ConnInfo, slot_name_for
from appliance.postgres.control import PostgresControl
from appliance.postgres.controldata import DataDirState
from appliance.postgres.errors import PgError
from appliance.postgres.history import history_path, parse_history
from appliance.postgres.monitor import Monitor
from appliance.postgres.status import PgStatus, unreachable

log = logging.getLogger(__name__)

_DATA_DIR = {
    DataDirState.MISSING: DataDir.EMPTY,
    DataDirState.EMPTY: DataDir.EMPTY,
    DataDirState.VALID: DataDir.VALID,
    DataDirState.INVALID: DataDir.INVALID,
    DataDirState.INCOMPLETE: DataDir.INCOMPLETE,
}


class PgOps:
    """Each long operation returns (ok, detail) so that it can run as a job. Observation (status,
    slot_positions, ensure_slots, ...) is for the loop's thread; jobs use PostgresControl only."""

    def __init__(self, control: PostgresControl, parameters: Mapping[str, Any],
                 start_timeout: float = 120.0, stop_timeout: float = 60.0, *,
                 memory: PgMemory | None = None, monitor: Monitor | None = None) -> None:
        self.control = control
        self.params: dict[str, Any] = dict(parameters)
        self.memory = memory if memory is not None else PgMemory(hba_written=control.cfg.pg_hba)
        self.monitor = monitor if monitor is not None else Monitor(control.cfg)
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._lock = threading.Lock()  # jobs and the loop both touch the config files

    # --- observation (loop thread) -------------------------------------------------------------
    @property
    def conn_url(self) -> str:
        return self.control.cfg.conn_url

    def status(self) -> PgStatus:
        """What PostgreSQL reports now; changes nothing (the loop gives it to PgMemory.track)."""
        return self.monitor.status()

    def _require_reachable(self, info: ConnInfo, what: str) -> None:
        """Raise RetryLater unless ``info`` accepts a connection (checked before touching any data)."""
        problem = unreachable(info)
        if problem is not None:
            raise RetryLater(f"{what}: {info.host}:{info.port} unreachable ({problem})")

    def disk_state(self, running: bool) -> tuple[DataDir, str | None, bool]:
        """(data dir state, sysid, was_primary) from disk; pg_control only while stopped (the sysid
        then read is remembered for the time PostgreSQL runs)."""
        if running:
            return DataDir.VALID, self.memory.sysid, False
        state = _DATA_DIR[self.control.data_dir_state()]
        if state is not DataDir.VALID:
            self.memory.sysid = None
            return state, None, False
        try:
            cd = self.control.controldata()
        except PgError as exc:
            log.warning("pg_controldata failed: %s", exc)
            return state, None, False
        self.memory.sysid = cd.system_identifier
        return state, cd.system_identifier, cd.was_primary

    @staticmethod
    def standby_conns(status: PgStatus) -> tuple[StandbyConn, ...]:
        """pg_stat_replication's rows as decide() reads them."""
        return tuple(StandbyConn(application_name=r.application_name, state=r.state or "",
                                 sync_state=r.sync_state or "", flush_lsn=r.flush_lsn)
                     for r in status.replication)

    def config_stale(self) -> bool:
        return self.memory.config_stale(self.params, self.hba)

    def set_parameters(self, params: Mapping[str, Any]) -> None:
        self.params = dict(params)

    @property
    def hba(self) -> tuple[str, ...] | None:
        return self.control.cfg.pg_hba

    def set_hba(self, lines: tuple[str, ...] | None) -> None:
        """The operator's pg_hba lines (a dynamic change): written, and reloaded, at the next reconcile."""
        if lines != self.control.cfg.pg_hba:
            self.control.cfg = dataclasses.replace(self.control.cfg, pg_hba=lines)
            self.monitor.cfg = self.control.cfg

    # --- configuration -------------------------------------------------------------------------
    def _conninfo(self, member: Member, dbname: str | None = None) -> ConnInfo:
        host, port = parse_conn_url(member.conn_url)
        info = self.control.cfg.replication_conninfo(host, port)
        return dataclasses.replace(info, dbname=dbname) if dbname else info

    def _write(self, *, standby: bool, upstream: Member | None, ssn: str | None = None) -> bool:
        conninfo = self._conninfo(upstream) if (standby and upstream is not None) else None
        slot = slot_name_for(self.control.cfg.name) if conninfo is not None else None
        with self._lock:
            changed = self.control.write_config(self.params, conninfo, slot, standby,
                                                synchronous_standby_names=ssn)
            self.memory.written = dict(self.params)
            self.memory.hba_written = self.hba
        return changed

    def follow(self, leader: Member | None) -> bool:
        self._write(standby=True, upstream=leader)
        self.memory.upstream = leader
        return self.control.reload()

    def reconcile(self) -> bool:
        standby = self.monitor.status().role != Role.PRIMARY
        self._write(standby=standby, upstream=None if not standby else self.memory.upstream)
        return self.control.reload()

    def set_sync_standby_names(self, value: str) -> bool:
        with self._lock:
            ok = self.control.set_synchronous_standby_names(value)
        if ok:
            self.memory.ssn = value
            self.memory.ssn_set_lsn = self.monitor.status().wal_lsn
        return ok

    def ensure_slots(self, names: tuple[str, ...]) -> None:
        self.monitor.ensure_slots(names)

    def slot_positions(self) -> dict[str, int]:
        """Where each slot on this primary stands (slot -> LSN), for the status key."""
        return self.monitor.slot_positions()

    # --- lifecycle (jobs) ----------------------------------------------------------------------
    def start(self, *, primary: bool, upstream: Member | None, timeout: float | None = None) -> tuple[bool, str]:
        self._write(standby=not primary, upstream=upstream)
        self.memory.upstream = upstream if not primary else None
        wait = self.start_timeout if timeout is None else timeout
        ok = self.control.start(timeout=wait)
        return ok, "" if ok else f"PostgreSQL did not accept connections within {wait:.0f}s; see its log"

    def restart(self, timeout: float | None = None) -> tuple[bool, str]:
        """Fast stop and start; ``timeout`` (POST /restart's) bounds the wait for connections."""
        primary = self.control.status().role == Role.PRIMARY  # a job: its own connection, not the loop's
        if not self.stop("fast"):
            return False, "PostgreSQL did not stop"
        return self.start(primary=primary, upstream=None if primary else self.memory.upstream, timeout=timeout)

    def stop(self, mode: str = "fast", kill_after: float | None = None) -> bool:
        """Stop PostgreSQL; with ``kill_after`` (primary_stop_timeout), a stop still running after that
        many seconds is cut short: immediate shutdown, then SIGKILL of the postmaster (Patroni's rule)."""
        if kill_after is None:
            return self.control.stop(mode=mode, timeout=self.stop_timeout)
        if self.control.stop(mode=mode, timeout=kill_after):
            return True
        log.warning("PostgreSQL did not stop within primary_stop_timeout=%.0fs: stopping it immediately", kill_after)
        if self.control.stop(mode="immediate", timeout=5):
            return True
        pid = self.control.postmaster_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while self.control.is_running() and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self.control.is_running()

    def checkpoint(self) -> None:
        try:
            self.control.checkpoint()
        except Exception as exc:  # only an optimisation before a planned stop
            log.warning("checkpoint before stopping failed: %s", exc)

    def bootstrap(self) -> tuple[bool, str]:
        try:
            self.control.initdb()
            self._write(standby=False, upstream=None, ssn="")
            self.control.reload()
        except PgError as exc:
            return False, str(exc)
        self.memory.upstream = None
        return True, ""

    def clone(self, source: Member) -> tuple[bool, str]:
        self._require_reachable(self._conninfo(source, dbname="postgres"), f"clone from {source.name}")
        try:
            ok = self.control.basebackup(self._conninfo(source), parameters=self.params)
        except PgError as exc:
            return False, str(exc)
        if not ok:
            return False, f"pg_basebackup from {source.name} failed"
        return self.start(primary=False, upstream=source)

    def rewind(self, source: Member) -> tuple[bool, str]:
        rewind_src = self.control.cfg.rewind_conninfo(*parse_conn_url(source.conn_url))
        self._require_reachable(rewind_src, f"rewind from {source.name}")
        if self.control.is_running() and not self.stop("fast"):
            return False, "could not stop PostgreSQL before pg_rewind"
        ok = self.control.rewind(self.control.cfg.rewind_conninfo(*parse_conn_url(source.conn_url)),
                                 parameters=self.params)
        if not ok:
            return False, f"pg_rewind from {source.name} failed"
        return self.start(primary=False, upstream=source)

    def reinitialize(self, source: Member) -> tuple[bool, str]:
        # Never wipe a data directory before knowing that a fresh copy can be had.
        self._require_reachable(self._conninfo(source, dbname="postgres"), f"re-clone from {source.name}")
        if self.control.is_running() and not self.stop("immediate"):
            return False, "could not stop PostgreSQL before re-cloning"
        try:
            self.control.remove_data_dir()
        except PgError as exc:
            return False, str(exc)
        return self.clone(source)

    def wipe(self) -> bool:
        try:
            self.control.remove_data_dir()
        except PgError as exc:
            log.error("cannot wipe the data directory: %s", exc)
            return False
        return True

    def promote(self, *, strict_sync: bool, timeout: float = 30.0, history: tuple[HistoryEntry, ...] = ()) -> bool:
        """Promote the standby; ``history`` (the cluster's, from the DCS) reserves the timelines other
        nodes created from ours on, so that PostgreSQL picks a timeline ID nobody used."""
        current = self.monitor.status().timeline if history else None  # no query when nothing to reserve
        if current is not None:
            reserved = self.control.reserve_timelines(tuple((h.timeline, h.lsn, h.reason) for h in history), current)
            if reserved:
                log.warning("timelines %s were created elsewhere from our timeline %s: promoting past them",
                            reserved, current)
        if strict_sync:
            from appliance.core.sync import STRICT_PLACEHOLDER

            self._write(standby=True, upstream=self.memory.upstream, ssn=STRICT_PLACEHOLDER)
            self.control.reload()
        if not self.control.promote(timeout=timeout, checkpoint=False):
            return False
        # The checkpoint only matters to a later pg_rewind elsewhere (which forces one if needed):
        # keep it off the path between promotion and the first write.
        threading.Thread(target=self._checkpoint_quietly, name="checkpoint-after-promote", daemon=True).start()
        self._write(standby=False, upstream=None)
        self.memory.upstream = None
        self.memory.ssn_set_lsn = None
        return True

    def _checkpoint_quietly(self) -> None:
        try:
            self.control.checkpoint()
        except Exception as exc:  # best effort; pg_rewind asks the source for one when needed
            log.warning("checkpoint after promotion failed: %s", exc)

    def own_history(self, timeline: int | None) -> tuple[HistoryEntry, ...]:
        """The switches behind ``timeline`` from our own history file (cached while the file is the same)."""
        if timeline is None or timeline < 2:
            return ()
        path = history_path(self.control.cfg.data_dir, timeline)
        try:
            st = os.stat(path)
            key = (timeline, st.st_ino, st.st_mtime_ns)
            cached = self.memory.history
            if cached is not None and cached[0] == key:
                return cached[1]
            with open(path) as fh:
                text = fh.read()
        except OSError as exc:
            log.warning("cannot read %s: %s", path, exc)
            return ()
        entries = tuple(HistoryEntry(tl, lsn, reason) for tl, lsn, reason in parse_history(text))
        self.memory.history = (key, entries)
        return entries

    def timeline_history(self, known: tuple[HistoryEntry, ...], leader: str) -> tuple[HistoryEntry, ...]:
        """The new timeline's history file, merged with what the DCS already knew."""
        own = self.own_history(self.monitor.status().timeline)
        return merged_history(known, own, leader, datetime.now(UTC).isoformat())
