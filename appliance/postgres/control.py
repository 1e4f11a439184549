"""PostgresControl: the one object the manager uses to run, query and reconfigure local PostgreSQL.

The adapter makes no HA decision: it does what it is told and reports what it sees.
Logs: the postmaster writes to PgConfig.log_file (default: postgresql.log beside the data dir),
opened by pg_ctl -l. Inheriting our stderr instead (log_file=None) would tie PostgreSQL's logging
to the pipe of whichever process started it, which outlives a manager restart badly.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import psycopg

from appliance.postgres import files, provision, slots
from appliance.postgres.config import ConnInfo, PgConfig
from appliance.postgres.controldata import ControlData, DataDirState, data_dir_state, parse_controldata
from appliance.postgres.errors import PgError
from appliance.postgres.history import Switch, history_path, reserved_timelines
from appliance.postgres.process import (
    Runner,
    cluster_pids,
    is_postgres_process,
    kill_cluster,
    read_pid_file,
    running_postmaster,
)
from appliance.postgres.slots import SlotChanges
from appliance.postgres.status import PgStatus, connect, query_status

log = logging.getLogger(__name__)

STOP_MODES = ("smart", "fast", "immediate")
_SYNC_LINE_RE = re.compile(r"^synchronous_standby_names = .*$", re.M)


class PostgresControl:
    """Start/stop/promote/rewind/clone one data directory and report its state."""

    def __init__(self, cfg: PgConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.clock = clock
        self.runner = Runner(cfg.run_as)
        self.owner = self.runner.owner

    # -- data directory -------------------------------------------------------------------------

    def data_dir_state(self) -> DataDirState:
        return data_dir_state(self.cfg.data_dir)

    def controldata(self) -> ControlData:
        result = self.runner.run([self.cfg.binary("pg_controldata"), "-D", self.cfg.data_dir])
        if not result.ok:
            raise PgError(f"pg_controldata failed (is {self.cfg.data_dir} a data directory?): {result.tail(5)}")
        return parse_controldata(result.output)

    def sysid(self) -> str:
        return self.controldata().system_identifier

    def was_primary_when_stopped(self) -> bool:
        """True when pg_control says the cluster last ran (or crashed) as a primary."""
        return self.controldata().was_primary

    def initdb(self, superuser_password: str | None = None) -> None:
        """Create a new cluster and leave it running as a primary (see provision.initdb)."""
        provision.initdb(self, self.cfg.superuser.password if superuser_password is None else superuser_password)

    def basebackup(
        self,
        source: ConnInfo,
        *,
        parameters: Mapping[str, Any] | None = None,
        use_slot: bool = True,
        timeout: float | None = None,
    ) -> bool:
        """Clone `source` into the empty data dir and configure a standby of it; PostgreSQL stays stopped."""
        return provision.basebackup(self, source, parameters, use_slot, timeout)

    def rewind(
        self,
        source: ConnInfo,
        *,
        parameters: Mapping[str, Any] | None = None,
        use_slot: bool = True,
        timeout: float | None = None,
    ) -> bool:
        """pg_rewind from `source`, then configure a standby of it; False on failure. Must be stopped."""
        return provision.rewind(self, source, parameters, use_slot, timeout)

    def remove_data_dir(self) -> None:
        """Empty the data dir (kept, mode 0700, owned by PostgreSQL's user) before a re-clone."""
        if self.is_running():
            raise PgError("PostgreSQL is running on this data directory: stop it before removing the data")
        files.wipe_data_dir(self.cfg.data_dir, self.owner)
        files.clear_incomplete(self.cfg.data_dir)

    # -- configuration --------------------------------------------------------------------------

    def write_config(
        self,
        parameters: Mapping[str, Any] | None = None,
        primary_conninfo: str | ConnInfo | None = None,
        primary_slot_name: str | None = None,
        standby: bool = False,
        synchronous_standby_names: str | None = None,
    ) -> bool:
        """Write postgresql.appliance.conf, the include line, pg_hba.conf and standby.signal.

        parameters None: PgConfig.parameters. synchronous_standby_names None: the value in
        `parameters`, else the one already in our file (so a reconfigure keeps the manager's choice).
        Returns whether any file changed; the caller decides between reload and restart.
        """
        data_dir = self.cfg.data_dir
        if not os.path.isfile(os.path.join(data_dir, "PG_VERSION")):
            raise PgError(f"{data_dir} holds no cluster: initdb or clone before writing its config")
        params = self.cfg.parameters if parameters is None else parameters
        sync = synchronous_standby_names
        if sync is None:
            sync = params.get("synchronous_standby_names")
        if sync is None:
            sync = files.read_appliance_conf(data_dir).get("synchronous_standby_names", "")
        conninfo = primary_conninfo.dsn() if isinstance(primary_conninfo, ConnInfo) else primary_conninfo
        text = files.render_appliance_conf(self.cfg, params, conninfo, primary_slot_name, str(sync))
        changed = files.write_file(os.path.join(data_dir, files.APPLIANCE_CONF), text, self.owner)
        changed |= files.ensure_include(data_dir, self.owner)
        hba = files.render_hba(self.cfg.hba_lines)
        changed |= files.write_file(os.path.join(data_dir, "pg_hba.conf"), hba, self.owner)
        changed |= files.set_standby_signal(data_dir, standby, self.owner)
        self.write_passfile()
        return changed

    def write_passfile(self) -> None:
        """The replication/rewind passwords for libpq (primary_conninfo names the file, not the password)."""
        if self.cfg.passfile:
            files.write_file(self.cfg.passfile, files.wildcard_passfile(self.cfg.network_users()), self.owner)

    def current_parameters(self) -> dict[str, Any]:
        """The parameters in our conf file now (without the keys we manage); PgConfig's when none."""
        return files.current_parameters(self.cfg.data_dir, self.cfg.parameters)

    def set_synchronous_standby_names(self, value: str, timeout: float = 5.0) -> bool:
        """Put `value` in our conf file and reload; returns once the server uses it (or the timeout)."""
        path = os.path.join(self.cfg.data_dir, files.APPLIANCE_CONF)
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            raise PgError(f"{path} is missing: call write_config before setting sync standbys") from None
        line = f"synchronous_standby_names = {files.conf_value(value)}"
        new = _SYNC_LINE_RE.sub(lambda _m: line, text) if _SYNC_LINE_RE.search(text) else text + line + "\n"
        changed = files.write_file(path, new, self.owner)
        if self.is_running():
            self.reload()
            if self._wait_setting("synchronous_standby_names", value, timeout) and value:
                self.nudge_standbys()
        return changed

    def nudge_standbys(self) -> None:
        """Write and flush one small WAL record so that every standby replies at once.

        A commit waiting for a standby named synchronous only now is released by that standby's
        next reply; without new WAL that comes only after wal_receiver_status_interval. The record
        commits with synchronous_commit=local, so this never waits for a standby itself."""
        try:
            with self.connect() as conn, conn.cursor() as cur, conn.transaction():
                cur.execute("SELECT pg_is_in_recovery()")
                row = cur.fetchone()
                if row is None or row[0]:
                    return
                cur.execute("SET LOCAL synchronous_commit TO local")
                cur.execute("SELECT pg_logical_emit_message(true, 'pgappliance', 'synchronous_standby_names')")
        except psycopg.Error as exc:
            log.debug("could not nudge the standbys: %s", exc)

    def _wait_setting(self, name: str, value: str, timeout: float) -> bool:
        deadline = self.clock() + timeout
        while True:
            try:
                rows = self.query("SELECT current_setting(%s)", (name,))
                if rows and rows[0][0] == value:
                    return True
            except psycopg.Error as exc:
                log.debug("waiting for %s: %s", name, exc)
            if self.clock() >= deadline:
                log.warning("%s did not become %r within %.0f s after reload", name, value, timeout)
                return False
            time.sleep(0.05)

    # -- process --------------------------------------------------------------------------------

    def postmaster_pid(self) -> int | None:
        found = running_postmaster(self.cfg.data_dir)
        return found.pid if found else None

    def is_running(self) -> bool:
        return self.postmaster_pid() is not None

    def start(self, timeout: float = 60.0) -> bool:
        """pg_ctl start -w. False: failed, or not accepting connections within `timeout`
        (then it may still be starting: see is_running())."""
        if self.is_running():
            return True
        state = self.data_dir_state()
        if state is not DataDirState.VALID:
            raise PgError(f"cannot start PostgreSQL: data directory {self.cfg.data_dir} is {state.value}")
        self._clear_leftovers()
        return self.launch(timeout)

    def _clear_leftovers(self) -> None:
        """What a killed postmaster leaves behind would make the start fail: its orphaned children
        still attached to the shared memory, and a postmaster.pid naming a pid that is now another
        process (PostgreSQL then refuses to start: "lock file already exists")."""
        orphans = cluster_pids(self.cfg.data_dir)
        if orphans:
            log.warning("killing %d orphaned PostgreSQL process(es) of a dead postmaster: %s", len(orphans), orphans)
            kill_cluster(self.cfg.data_dir)
        stale = read_pid_file(self.cfg.data_dir)
        if stale is not None and running_postmaster(self.cfg.data_dir) is None:
            log.warning("removing a stale postmaster.pid (pid %d is not a postmaster)", stale.pid)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.cfg.data_dir, "postmaster.pid"))
        # The socket's lock file names the dead postmaster too (still a zombie until it is reaped).
        lock = os.path.join(self.cfg.socket_dir, f".s.PGSQL.{self.cfg.listen_port}.lock")
        try:
            with open(lock, encoding="utf-8", errors="replace") as f:
                first = f.readline().strip()
        except OSError:
            return
        if first.lstrip("-").isdigit() and not is_postgres_process(abs(int(first))):
            log.warning("removing a stale socket lock file %s (pid %s is not a postmaster)", lock, first)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock)

    def launch(self, timeout: float) -> bool:
        """pg_ctl start without the data dir check (initdb starts its still-incomplete cluster)."""
        self._prepare_runtime_paths()
        args = [self.cfg.binary("pg_ctl"), "start", "-w", "-s", "-t", str(max(1, math.ceil(timeout)))]
        args += ["-D", self.cfg.data_dir]
        if self.cfg.log_file:
            args += ["-l", self.cfg.log_file]
        # Without -l the postmaster keeps pg_ctl's stdout: capturing it would wait for the server's exit.
        result = self.runner.run(args, capture=bool(self.cfg.log_file), timeout=timeout + 15)
        if not result.ok:
            log.error("PostgreSQL did not start (see %s): %s", self.cfg.log_file or "stderr", result.tail(5))
        return result.ok

    def _prepare_runtime_paths(self) -> None:
        if not os.path.isdir(self.cfg.socket_dir):
            files.make_private_dir(self.cfg.socket_dir, self.owner, 0o750)
        if self.cfg.log_file and not os.path.exists(self.cfg.log_file):
            with open(self.cfg.log_file, "a", encoding="utf-8"):
                pass
            os.chmod(self.cfg.log_file, 0o640)
            if self.owner:
                self.owner.apply(self.cfg.log_file)

    def stop(self, mode: str = "fast", timeout: float = 60.0) -> bool:
        """pg_ctl stop -m mode -w. True when no postmaster runs afterwards."""
        if mode not in STOP_MODES:
            raise ValueError(f"stop mode must be one of {STOP_MODES}, got {mode!r}")
        if not self.is_running():
            return True
        args = [self.cfg.binary("pg_ctl"), "stop", "-s", "-D", self.cfg.data_dir, "-m", mode, "-w"]
        args += ["-t", str(max(1, math.ceil(timeout)))]
        result = self.runner.run(args, timeout=timeout + 15)
        if result.ok:
            return True
        still = self.is_running()
        if still:
            log.error("PostgreSQL did not stop (%s) within %.0f s: %s", mode, timeout, result.tail(5))
        return not still

    def restart(self, timeout: float = 60.0, mode: str = "fast") -> bool:
        return self.stop(mode, timeout) and self.start(timeout)

    def reload(self) -> bool:
        """SIGHUP the postmaster (re-read conf files); False when it is not running."""
        pid = self.postmaster_pid()
        if pid is None:
            return False
        try:
            os.kill(pid, signal.SIGHUP)
        except ProcessLookupError:
            return False
        return True

    def reserve_timelines(self, switches: tuple[Switch, ...], current: int) -> list[int]:
        """Write the history files of timelines others created from ``current`` on (history.
        reserved_timelines) that pg_wal lacks, before a promotion; never replaces a file. Returns
        the timelines written."""
        written = []
        for timeline, text in sorted(reserved_timelines(switches, current).items()):
            path = history_path(self.cfg.data_dir, timeline)
            if not os.path.exists(path):
                files.write_file(path, text, self.owner)
                written.append(timeline)
        return written

    def promote(self, timeout: float = 30.0, checkpoint: bool = True) -> bool:
        """Promote a running standby; True once it accepts writes. Checkpoints afterwards (unless
        told not to: the caller then does it off the critical path) so that pg_control, read by
        pg_rewind on the others, shows the new timeline."""
        if not self.is_running():
            return False
        if self._in_recovery() is False:
            return True
        result = self.runner.run([self.cfg.binary("pg_ctl"), "promote", "-W", "-s", "-D", self.cfg.data_dir])
        if not result.ok:
            log.error("pg_ctl promote failed: %s", result.tail(5))
            return False
        deadline = self.clock() + timeout
        while self._in_recovery() is not False:
            if not self.is_running():
                log.error("PostgreSQL died during the promotion")
                return False
            if self.clock() >= deadline:
                log.error("promotion did not finish within %.0f s", timeout)
                return False
            time.sleep(0.05)
        if not checkpoint:
            return True
        try:
            self.checkpoint()
        except psycopg.Error as exc:
            log.warning("checkpoint after promotion failed (pg_rewind may see a stale timeline): %s", exc)
        return True

    def _in_recovery(self) -> bool | None:
        try:
            return bool(self.query("SELECT pg_is_in_recovery()")[0][0])
        except psycopg.Error:
            return None

    # -- SQL ------------------------------------------------------------------------------------

    def connect(self, statement_timeout_ms: int = 2000) -> psycopg.Connection[Any]:
        """Superuser, unix socket, autocommit, short timeouts."""
        return connect(self.cfg.local_conninfo(), statement_timeout_ms)

    def query(
        self, sql: str, params: tuple[Any, ...] | None = None, statement_timeout_ms: int = 2000
    ) -> list[tuple[Any, ...]]:
        with self.connect(statement_timeout_ms) as conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return [tuple(r) for r in cur.fetchall()] if cur.description else []

    def checkpoint(self, timeout_ms: int = 300_000) -> None:
        self.query("CHECKPOINT", statement_timeout_ms=timeout_ms)

    def status(self) -> PgStatus:
        """Never raises: running=False without a postmaster; error=... when it does not answer."""
        if running_postmaster(self.cfg.data_dir) is None:
            return PgStatus(running=False)
        try:
            with self.connect() as conn:
                return query_status(conn)
        except psycopg.Error as exc:
            return PgStatus(running=True, error=str(exc).strip() or type(exc).__name__)

    def ensure_slots(self, names: Iterable[str]) -> SlotChanges:
        """On a primary: create the missing physical slots (reserving WAL now) and drop inactive
        physical slots not in `names`. Names are sanitised; our own slot is never created."""
        wanted = slots.wanted_slots(names, self.cfg.slot_name)
        if self._in_recovery() is not False:
            return SlotChanges()
        with self.connect() as conn:
            return slots.reconcile(conn, wanted)
