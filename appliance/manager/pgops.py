"""The manager's PostgreSQL operations: PostgresControl plus what the manager remembers between ticks
(whom we follow, synchronous_standby_names and when it took effect, the parameters last written)."""

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

import psycopg

from appliance.core.model import HistoryEntry, Member
from appliance.core.state import DataDir, StandbyConn
from appliance.core.wal import parse_lsn
from appliance.manager.jobs import RetryLater
from appliance.net.address import parse_conn_url
from appliance.postgres.config import ConnInfo
from appliance.postgres.control import PostgresControl
from appliance.postgres.controldata import DataDirState
from appliance.postgres.errors import PgError
from appliance.postgres.status import PgStatus

log = logging.getLogger(__name__)

_DATA_DIR = {
    DataDirState.MISSING: DataDir.EMPTY,
    DataDirState.EMPTY: DataDir.EMPTY,
    DataDirState.VALID: DataDir.VALID,
    DataDirState.INVALID: DataDir.INVALID,
    DataDirState.INCOMPLETE: DataDir.INCOMPLETE,
}


class PgOps:
    """Each long operation returns (ok, detail) so that it can run as a job."""

    def __init__(self, control: PostgresControl, parameters: Mapping[str, Any],
                 start_timeout: float = 120.0, stop_timeout: float = 60.0) -> None:
        self.control = control
        self.params: dict[str, Any] = dict(parameters)
        self.written: dict[str, Any] | None = None
        self._upstream: Member | None = None
        self.ssn: str = ""
        self.ssn_set_lsn: int | None = None
        self._history_cache: tuple[tuple[int, int, int], tuple[HistoryEntry, ...]] | None = None
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._lock = threading.Lock()  # jobs and the loop both touch the config files
        self._sysid: str | None = None
        self._hba_written: tuple[str, ...] | None = control.cfg.pg_hba

    # --- observation ---------------------------------------------------------------------------
    @property
    def upstream(self) -> str | None:
        """The member our primary_conninfo points at (None on a primary or a detached standby)."""
        return self._upstream.name if self._upstream is not None else None

    @property
    def conn_url(self) -> str:
        return self.control.cfg.conn_url

    def status(self) -> PgStatus:
        status = self.control.status()
        if status.queryable and status.role == "replica" and not (status.receiver and status.receiver.received_tli):
            # Without a WAL receiver PostgreSQL only shows the last checkpoint's timeline, which lags
            # after a timeline switch; IDENTIFY_SYSTEM reports the timeline replay is on.
            tli = self._replay_timeline()
            if tli is not None and (status.timeline is None or tli > status.timeline):
                status = dataclasses.replace(status, timeline=tli)
        if status.queryable:
            self.ssn = status.synchronous_standby_names or ""
            if status.role == "primary" and self.ssn_set_lsn is None:
                # Unknown history of the setting (manager restart): only standbys caught up with
                # the present may be named synchronous.
                self.ssn_set_lsn = status.wal_lsn
            if self.written is None:
                self.written = dict(self.params)
        return status

    def _replay_timeline(self) -> int | None:
        cfg = self.control.cfg
        info = cfg.local_conninfo()
        dsn = f"host={info.host} port={info.port} user={info.user} replication=true connect_timeout=2"
        result = self.control.runner.run([cfg.binary("psql"), "-XAtc", "IDENTIFY_SYSTEM", "-d", dsn])
        if not result.ok:
            return None
        fields = result.output.strip().split("|")
        try:
            return int(fields[1])
        except (IndexError, ValueError):
            return None

    def _require_reachable(self, info: ConnInfo, what: str) -> None:
        """Raise RetryLater unless ``info`` accepts a connection (checked before touching any data)."""
        try:
            with psycopg.connect(info.dsn(), connect_timeout=3, autocommit=True) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as exc:
            raise RetryLater(f"{what}: {info.host}:{info.port} unreachable ({str(exc).strip()[:200]})") from exc

    def disk_state(self, running: bool) -> tuple[DataDir, str | None, bool]:
        """(data dir state, sysid, was_primary) from disk; pg_control only while stopped."""
        if running:
            return DataDir.VALID, self._sysid, False
        state = _DATA_DIR[self.control.data_dir_state()]
        if state is not DataDir.VALID:
            self._sysid = None
            return state, None, False
        try:
            cd = self.control.controldata()
        except PgError as exc:
            log.warning("pg_controldata failed: %s", exc)
            return state, None, False
        self._sysid = cd.system_identifier
        return state, cd.system_identifier, cd.was_primary

    def standby_conns(self, status: PgStatus) -> tuple[StandbyConn, ...]:
        return tuple(StandbyConn(application_name=r.application_name, state=r.state or "",
                                 sync_state=r.sync_state or "", flush_lsn=r.flush_lsn)
                     for r in status.replication)

    def config_stale(self) -> bool:
        return (self.written is not None and self.written != self.params) or self._hba_written != self.hba

    def set_parameters(self, params: Mapping[str, Any]) -> None:
        self.params = dict(params)

    @property
    def hba(self) -> tuple[str, ...] | None:
        return self.control.cfg.pg_hba

    def set_hba(self, lines: tuple[str, ...] | None) -> None:
        """The operator's pg_hba lines (a dynamic change): written, and reloaded, at the next reconcile."""
        if lines != self.control.cfg.pg_hba:
            self.control.cfg = dataclasses.replace(self.control.cfg, pg_hba=lines)

    # --- configuration -------------------------------------------------------------------------
    def _conninfo(self, member: Member, dbname: str | None = None) -> ConnInfo:
        host, port = parse_conn_url(member.conn_url)
        info = self.control.cfg.replication_conninfo(host, port)
        return dataclasses.replace(info, dbname=dbname) if dbname else info

    def _write(self, *, standby: bool, upstream: Member | None, ssn: str | None = None) -> bool:
        conninfo = self._conninfo(upstream) if (standby and upstream is not None) else None
        from appliance.postgres.config import slot_name_for

        slot = slot_name_for(self.control.cfg.name) if conninfo is not None else None
        with self._lock:
            changed = self.control.write_config(self.params, conninfo, slot, standby,
                                                synchronous_standby_names=ssn)
            self.written = dict(self.params)
            self._hba_written = self.hba
        return changed

    def follow(self, leader: Member | None) -> bool:
        self._write(standby=True, upstream=leader)
        self._upstream = leader
        return self.control.reload()

    def reconcile(self) -> bool:
        standby = self.control.status().role != "primary"
        self._write(standby=standby, upstream=None if not standby else self._upstream)
        return self.control.reload()

    def set_sync_standby_names(self, value: str) -> bool:
        with self._lock:
            ok = self.control.set_synchronous_standby_names(value)
        if ok:
            self.ssn = value
            status = self.control.status()
            self.ssn_set_lsn = status.wal_lsn if status.wal_lsn is not None else None
        return ok

    def ensure_slots(self, names: tuple[str, ...]) -> None:
        self.control.ensure_slots(names)

    def slot_positions(self) -> dict[str, int]:
        return {}

    # --- lifecycle (jobs) ----------------------------------------------------------------------
    def start(self, *, primary: bool, upstream: Member | None, timeout: float | None = None) -> tuple[bool, str]:
        self._write(standby=not primary, upstream=upstream)
        self._upstream = upstream if not primary else None
        wait = self.start_timeout if timeout is None else timeout
        ok = self.control.start(timeout=wait)
        return ok, "" if ok else f"PostgreSQL did not accept connections within {wait:.0f}s; see its log"

    def restart(self, timeout: float | None = None) -> tuple[bool, str]:
        """Fast stop and start; ``timeout`` (POST /restart's) bounds the wait for connections."""
        primary = self.control.status().role == "primary"
        if not self.stop("fast"):
            return False, "PostgreSQL did not stop"
        return self.start(primary=primary, upstream=None if primary else self._upstream, timeout=timeout)

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
        self._upstream = None
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

    def promote(self, *, strict_sync: bool, timeout: float = 30.0) -> bool:
        if strict_sync:
            from appliance.core.sync import STRICT_PLACEHOLDER

            self._write(standby=True, upstream=self._upstream, ssn=STRICT_PLACEHOLDER)
            self.control.reload()
        if not self.control.promote(timeout=timeout, checkpoint=False):
            return False
        # The checkpoint only matters to a later pg_rewind elsewhere (which forces one if needed):
        # keep it off the path between promotion and the first write.
        threading.Thread(target=self._checkpoint_quietly, name="checkpoint-after-promote", daemon=True).start()
        self._write(standby=False, upstream=None)
        self._upstream = None
        self.ssn_set_lsn = None
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
        path = os.path.join(self.control.cfg.data_dir, "pg_wal", f"{timeline:08X}.history")
        try:
            st = os.stat(path)
            key = (timeline, st.st_ino, st.st_mtime_ns)
            cached = self._history_cache
            if cached is not None and cached[0] == key:
                return cached[1]
            with open(path) as fh:
                lines = fh.read().splitlines()
        except OSError as exc:
            log.warning("cannot read %s: %s", path, exc)
            return ()
        entries = []
        for line in lines:
            parts = line.split("\t")
            if len(parts) < 2 or not parts[0].strip().isdigit():
                continue
            lsn = parse_lsn(parts[1].strip())
            if lsn is None:
                continue
            entries.append(HistoryEntry(int(parts[0]), lsn, parts[2].strip() if len(parts) > 2 else ""))
        self._history_cache = (key, tuple(entries))
        return self._history_cache[1]

    def timeline_history(self, known: tuple[HistoryEntry, ...], leader: str) -> tuple[HistoryEntry, ...]:
        """The new timeline's history file, merged with what the DCS already knew."""
        status = self.control.status()
        own = self.own_history(status.timeline)
        if not own:
            return known
        by_tl = {h.timeline: h for h in known}
        now = datetime.now(UTC).isoformat()
        return tuple(known_entry if (known_entry := by_tl.get(h.timeline)) is not None and known_entry.lsn == h.lsn
                     else HistoryEntry(h.timeline, h.lsn, h.reason, now, leader) for h in own)
