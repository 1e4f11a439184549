"""Operations that (re)create a data directory's content: initdb, pg_basebackup and pg_rewind.

Each one marks the data dir INCOMPLETE while it runs (a marker beside it), so that a crash in
the middle leaves a state the manager recognises as "wipe and re-clone", never a half-written
cluster that looks valid.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Mapping
from typing import Any, Protocol

import psycopg
from psycopg import sql

from appliance.postgres import files
from appliance.postgres.config import ConnInfo, PgConfig, UserCredentials
from appliance.postgres.controldata import DataDirState, data_dir_state
from appliance.postgres.errors import DataDirNotEmpty, PgError
from appliance.postgres.process import Runner
from appliance.postgres.status import connect

log = logging.getLogger(__name__)

# What a non-superuser needs for pg_rewind (PostgreSQL docs, pg_rewind "Notes"), plus CHECKPOINT.
REWIND_FUNCTIONS = (
    "pg_catalog.pg_ls_dir(text, boolean, boolean)",
    "pg_catalog.pg_stat_file(text, boolean)",
    "pg_catalog.pg_read_binary_file(text)",
    "pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)",
)
# pg_rewind prints this just before it starts changing the target: a failure after it leaves
# the data directory unusable.
_REWIND_STARTED = "rewinding from last common checkpoint"


class Server(Protocol):
    """What provisioning needs from the server whose data directory it (re)creates: its settings,
    its programs' runner, and four operations (PostgresControl provides them)."""

    @property
    def cfg(self) -> PgConfig: ...

    @property
    def runner(self) -> Runner: ...

    def is_running(self) -> bool: ...

    def write_config(self, parameters: Mapping[str, Any] | None, primary_conninfo: str | ConnInfo | None,
                     primary_slot_name: str | None, standby: bool, synchronous_standby_names: str | None) -> bool: ...

    def launch(self, timeout: float) -> bool: ...

    def stop(self, mode: str, timeout: float) -> bool: ...


def _parent(data_dir: str) -> str:
    return os.path.dirname(os.path.normpath(data_dir))


def _require_empty(ctl: Server, operation: str) -> None:
    state = data_dir_state(ctl.cfg.data_dir)
    if state not in (DataDirState.MISSING, DataDirState.EMPTY):
        raise DataDirNotEmpty(
            f"refusing to {operation} into {ctl.cfg.data_dir}: it is {state.value}. "
            "It is never overwritten; call remove_data_dir() first if its content is disposable"
        )


def standby_conninfo(cfg: PgConfig, source: ConnInfo) -> ConnInfo:
    """primary_conninfo for streaming from `source`'s host and port as our replication user."""
    return cfg.replication_conninfo(source.host, source.port)


def _syncfs(path: str) -> None:
    """Make a freshly written data directory durable with one sync instead of per-file fsyncs."""
    del path  # os.sync() flushes every file system; Python has no syncfs()
    os.sync()


def initdb(ctl: Server, superuser_password: str | None) -> None:
    """initdb (checksums, our superuser and its password via --pwfile), write our config, start,
    create the replication and rewind roles. Leaves PostgreSQL running as a primary, since the
    bootstrap continues with it (the manager publishes the sysid and takes the leader key)."""
    cfg = ctl.cfg
    _require_empty(ctl, "initdb")
    files.set_incomplete(cfg.data_dir, "initdb")
    files.make_private_dir(cfg.data_dir, ctl.runner.owner)
    args = [cfg.binary("initdb"), "-D", cfg.data_dir, "-U", cfg.superuser.username]
    # initdb's own pg_hba.conf is replaced by ours before the first start; peer is a safe stopgap.
    # --no-sync + one syncfs afterwards: initdb's per-file fsyncs cost seconds on a busy disk, and the
    # incomplete marker stays until the data is durable.
    args += ["--auth-local=peer", "--auth-host=scram-sha-256", "--no-sync", "--no-instructions", *cfg.initdb_options]
    content = f"{superuser_password}\n" if superuser_password else ""
    with files.temp_private_file(content, _parent(cfg.data_dir), ctl.runner.owner) as pwfile:
        result = ctl.runner.run([*args, f"--pwfile={pwfile}"] if content else args)
    if not result.ok:
        raise PgError(f"initdb failed (fix the cause, then remove_data_dir() and retry): {result.tail(10)}")
    _syncfs(cfg.data_dir)
    ctl.write_config(cfg.parameters, None, None, standby=False, synchronous_standby_names="")
    if not ctl.launch(60.0):
        raise PgError(f"the new cluster did not start; see {cfg.log_file or 'the log'}")
    try:
        create_roles(ctl)
    except psycopg.Error as exc:
        ctl.stop("immediate", 60.0)
        raise PgError(f"creating the replication/rewind roles failed: {exc}") from exc
    files.clear_incomplete(cfg.data_dir)
    log.info("initdb done: %s, running as primary", cfg.data_dir)


def create_roles(ctl: Server) -> None:
    cfg = ctl.cfg
    su = cfg.superuser.username
    with connect(cfg.local_conninfo(), statement_timeout_ms=30_000) as conn:
        # A failing statement would be logged with its text, password included.
        conn.execute("SET log_statement = 'none'")
        conn.execute("SET log_min_error_statement = 'panic'")
        created: set[str] = {su}
        if cfg.replication.username not in created:
            _create_role(conn, cfg.replication, replication=True)
            created.add(cfg.replication.username)
        rew = cfg.rewind_user
        if rew is not None and rew.username != su:
            if rew.username not in created:
                _create_role(conn, rew, replication=False)
            ident = sql.Identifier(rew.username)
            for fn in REWIND_FUNCTIONS:
                conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(sql.SQL(fn), ident))
            conn.execute(sql.SQL("GRANT pg_checkpoint TO {}").format(ident))


def _create_role(conn: psycopg.Connection[Any], user: UserCredentials, replication: bool) -> None:
    options = sql.SQL("LOGIN REPLICATION" if replication else "LOGIN")
    if user.password:
        stmt = sql.SQL("CREATE ROLE {} WITH {} PASSWORD {}").format(
            sql.Identifier(user.username), options, sql.Literal(user.password)
        )
    else:
        log.warning("role %s has no password: it can only log in through the local socket", user.username)
        stmt = sql.SQL("CREATE ROLE {} WITH {}").format(sql.Identifier(user.username), options)
    conn.execute(stmt)


def basebackup(
    ctl: Server,
    source: ConnInfo,
    parameters: Mapping[str, Any] | None,
    use_slot: bool,
    timeout: float | None,
) -> bool:
    """pg_basebackup -X stream -c fast into the empty data dir, then our standby config."""
    cfg = ctl.cfg
    _require_empty(ctl, "clone")
    files.set_incomplete(cfg.data_dir, "basebackup")
    files.make_private_dir(cfg.data_dir, ctl.runner.owner)
    args = [cfg.binary("pg_basebackup"), "-D", cfg.data_dir, "-X", "stream", "-c", "fast", "-w", "--no-sync"]
    args += ["-d", source.dsn(with_password=False), f"--label=pgappliance clone for {cfg.name}"]
    with files.temp_passfile([source], _parent(cfg.data_dir), ctl.runner.owner) as passfile:
        result = ctl.runner.run(args, env={"PGPASSFILE": passfile}, timeout=timeout)
    if not result.ok:
        log.error("pg_basebackup from %s failed: %s", source.conn_url, result.tail(10))
        files.wipe_data_dir(cfg.data_dir, ctl.runner.owner)
        files.clear_incomplete(cfg.data_dir)
        return False
    params = cfg.parameters if parameters is None else parameters
    slot = cfg.slot_name if use_slot else None
    ctl.write_config(params, standby_conninfo(cfg, source), slot, standby=True, synchronous_standby_names="")
    _syncfs(cfg.data_dir)
    files.clear_incomplete(cfg.data_dir)
    log.info("cloned %s from %s", cfg.data_dir, source.conn_url)
    return True


def source_ready_for_rewind(source: ConnInfo) -> bool:
    """pg_rewind compares pg_control timelines: a just-promoted source must checkpoint first,
    or pg_rewind sees "same timeline" and skips a rewind that is needed."""
    remote = dataclasses.replace(source, connect_timeout=source.connect_timeout or 5)
    try:
        with connect(remote, statement_timeout_ms=120_000) as conn:
            row = conn.execute(
                "SELECT pg_is_in_recovery(), (SELECT timeline_id FROM pg_control_checkpoint())"
            ).fetchone()
            if row is None or row[0]:
                return True  # a standby source: let pg_rewind judge
            current = conn.execute(
                "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int"
            ).fetchone()
            if current is not None and row[1] < current[0]:
                log.info(
                    "rewind source %s has not checkpointed on timeline %s yet; asking it to",
                    source.conn_url,
                    current[0],
                )
                conn.execute("CHECKPOINT")
    except psycopg.Error as exc:
        log.error("cannot prepare rewind from %s: %s", source.conn_url, str(exc).strip())
        return False
    return True


def rewind(
    ctl: Server,
    source: ConnInfo,
    parameters: Mapping[str, Any] | None,
    use_slot: bool,
    timeout: float | None,
) -> bool:
    cfg = ctl.cfg
    if ctl.is_running():
        raise PgError("PostgreSQL is running: stop it before pg_rewind")
    state = data_dir_state(cfg.data_dir)
    if state is not DataDirState.VALID:
        raise PgError(f"cannot rewind: data directory {cfg.data_dir} is {state.value}; re-clone it instead")
    # pg_rewind copies the source's config files over ours: keep our parameters to write them back.
    params = dict(parameters) if parameters is not None else files.current_parameters(cfg.data_dir, cfg.parameters)
    if not source_ready_for_rewind(source):
        return False
    # pg_rewind first finishes crash recovery in single-user mode, which refuses to run with a
    # standby.signal (left by a start as a replica of a crashed primary): "standby mode is not
    # supported by single-user servers". The signal is written again once the rewind is done.
    files.set_standby_signal(cfg.data_dir, False, ctl.runner.owner)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(cfg.data_dir, "recovery.signal"))
    files.set_incomplete(cfg.data_dir, "rewind")
    args = [cfg.binary("pg_rewind"), f"--target-pgdata={cfg.data_dir}"]
    args.append(f"--source-server={source.dsn(with_password=False)}")
    with files.temp_passfile([source], _parent(cfg.data_dir), ctl.runner.owner) as passfile:
        result = ctl.runner.run(args, env={"PGPASSFILE": passfile}, timeout=timeout)
    if not result.ok:
        if result.returncode > 0 and _REWIND_STARTED not in result.output:
            files.clear_incomplete(cfg.data_dir)  # it failed before touching anything
        log.error("pg_rewind from %s failed: %s", source.conn_url, result.tail(15))
        return False
    slot = cfg.slot_name if use_slot else None
    ctl.write_config(params, standby_conninfo(cfg, source), slot, standby=True, synchronous_standby_names="")
    files.clear_incomplete(cfg.data_dir)
    log.info("rewound %s from %s: %s", cfg.data_dir, source.conn_url, result.tail(1))
    return True
