"""What a running PostgreSQL reports about itself (PgStatus), read over one short SQL connection."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from appliance.core.model import ReplicationState, Role
from appliance.core.wal import parse_lsn
from appliance.postgres.config import ConnInfo

STREAMING = ReplicationState.STREAMING
IN_ARCHIVE_RECOVERY = ReplicationState.IN_ARCHIVE_RECOVERY


@dataclass(frozen=True)
class ReplicaConnection:
    """One row of pg_stat_replication (a standby streaming from this server)."""

    application_name: str
    usename: str | None
    client_addr: str | None
    state: str | None
    sync_state: str | None
    sync_priority: int | None
    sent_lsn: int | None
    write_lsn: int | None
    flush_lsn: int | None
    replay_lsn: int | None


@dataclass(frozen=True)
class WalReceiver:
    """pg_stat_wal_receiver on a replica: where it streams from and how far it got."""

    status: str
    received_tli: int | None
    sender_host: str | None
    sender_port: int | None
    slot_name: str | None
    conninfo: str | None  # libpq's obfuscated form: no password
    flushed_lsn: int | None


@dataclass(frozen=True)
class PendingRestart:
    """A setting changed in a file that needs a restart: value in effect and value in the file."""

    name: str
    old_value: str | None
    new_value: str | None


@dataclass(frozen=True)
class PgStatus:
    """A snapshot of one PostgreSQL; LSNs are ints. running=False means no postmaster at all."""

    running: bool
    error: str | None = None  # running but not queryable (starting up, auth, timeout): why
    in_recovery: bool | None = None
    role: Role | None = None  # PRIMARY or REPLICA
    timeline: int | None = None
    server_version: int | None = None
    postmaster_start_time: datetime | None = None
    system_identifier: str | None = None
    wal_lsn: int | None = None  # primary: pg_current_wal_flush_lsn()
    receive_lsn: int | None = None
    replay_lsn: int | None = None
    replay_timestamp: datetime | None = None
    replay_paused: bool | None = None
    replication_state: str | None = None  # replica: "streaming" | "in archive recovery"
    receiver: WalReceiver | None = None
    replication: tuple[ReplicaConnection, ...] = ()
    synchronous_standby_names: str | None = None
    pending_restart: tuple[PendingRestart, ...] = ()

    @property
    def queryable(self) -> bool:
        return self.running and self.error is None

    @property
    def wal_position(self) -> int | None:
        """Patroni's xlog_location: the flush LSN on a primary, max(receive, replay) on a replica."""
        if self.role == Role.PRIMARY:
            return self.wal_lsn
        known = [x for x in (self.receive_lsn, self.replay_lsn) if x is not None]
        return max(known) if known else None


def connect(info: ConnInfo, statement_timeout_ms: int = 2000, replication: bool = False) -> psycopg.Connection[Any]:
    """Autocommit connection with a short connect and statement timeout (the loop must not hang);
    ``replication``: a physical replication connection (replication commands only, no SQL)."""
    extra: dict[str, Any] = {"replication": "true"} if replication else {}
    return psycopg.connect(
        host=info.host,
        port=info.port,
        user=info.user,
        password=info.password or None,
        dbname=info.dbname,
        application_name=info.application_name or "pgappliance",
        connect_timeout=info.connect_timeout or 2,
        options=f"-c statement_timeout={int(statement_timeout_ms)}",
        autocommit=True,
        **extra,
    )


_COMMON = """SELECT pg_is_in_recovery(), current_setting('server_version_num')::int,
    pg_postmaster_start_time(), (SELECT system_identifier::text FROM pg_control_system()),
    current_setting('synchronous_standby_names')"""
# Stale after a promotion until the next checkpoint, so a primary reads its timeline from its WAL file name.
_PRIMARY = """SELECT pg_current_wal_flush_lsn()::text,
    ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int"""
_REPLICA = """SELECT pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text,
    pg_last_xact_replay_timestamp(), pg_is_wal_replay_paused(),
    (SELECT timeline_id FROM pg_control_checkpoint())"""
_RECEIVER = """SELECT status, received_tli, sender_host, sender_port, slot_name, conninfo,
    flushed_lsn::text FROM pg_stat_wal_receiver"""
_REPLICATION = """SELECT application_name, usename, host(client_addr), state, sync_state, sync_priority,
    sent_lsn::text, write_lsn::text, flush_lsn::text, replay_lsn::text
    FROM pg_stat_replication ORDER BY application_name, pid"""
_PENDING = """SELECT s.name, s.setting, f.setting FROM pg_settings s
    LEFT JOIN LATERAL (SELECT fs.setting FROM pg_file_settings fs
        WHERE fs.name = s.name ORDER BY fs.seqno DESC LIMIT 1) f ON true
    WHERE s.pending_restart ORDER BY s.name"""


def replica_connection_from_row(row: Sequence[Any]) -> ReplicaConnection:
    name, user, addr, state, sync_state, prio, sent, write, flush, replay = row
    return ReplicaConnection(
        application_name=name or "",
        usename=user,
        client_addr=addr,
        state=state,
        sync_state=sync_state,
        sync_priority=prio,
        sent_lsn=parse_lsn(sent),
        write_lsn=parse_lsn(write),
        flush_lsn=parse_lsn(flush),
        replay_lsn=parse_lsn(replay),
    )


def receiver_from_row(row: Sequence[Any] | None) -> WalReceiver | None:
    if row is None or row[0] is None:
        return None
    status, tli, host, port, slot, conninfo, flushed = row
    return WalReceiver(status, tli, host, port, slot, conninfo, parse_lsn(flushed))


def replication_state(in_recovery: bool, receiver: WalReceiver | None) -> str | None:
    if not in_recovery:
        return None
    return STREAMING if receiver is not None and receiver.status == STREAMING else IN_ARCHIVE_RECOVERY


def query_status(conn: psycopg.Connection[Any]) -> PgStatus:
    """Every field of PgStatus from one connection (a handful of cheap queries)."""
    with conn.cursor() as cur:
        in_recovery, version, started, sysid, sync_names = _one(cur, _COMMON)
        receiver = None
        fields: dict[str, Any] = {}
        if in_recovery:
            receive, replay, replay_ts, paused, ckpt_tli = _one(cur, _REPLICA)
            receiver = receiver_from_row(cur.execute(_RECEIVER).fetchone())
            fields.update(
                receive_lsn=parse_lsn(receive),
                replay_lsn=parse_lsn(replay),
                replay_timestamp=replay_ts,
                replay_paused=paused,
                timeline=receiver.received_tli if receiver and receiver.received_tli else ckpt_tli,
            )
        else:
            flush, tli = _one(cur, _PRIMARY)
            fields.update(wal_lsn=parse_lsn(flush), timeline=tli)
        replication = tuple(replica_connection_from_row(r) for r in cur.execute(_REPLICATION).fetchall())
        pending = tuple(PendingRestart(*r) for r in cur.execute(_PENDING).fetchall())
    return PgStatus(
        running=True,
        in_recovery=in_recovery,
        role=Role.REPLICA if in_recovery else Role.PRIMARY,
        server_version=version,
        postmaster_start_time=started,
        system_identifier=sysid,
        replication_state=replication_state(in_recovery, receiver),
        receiver=receiver,
        replication=replication,
        synchronous_standby_names=sync_names,
        pending_restart=pending,
        **fields,
    )


def unreachable(info: ConnInfo, timeout: int = 3) -> str | None:
    """Why ``info`` accepts no connection (None: it does)."""
    try:
        with psycopg.connect(info.dsn(), connect_timeout=timeout, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return str(exc).strip()[:200]
    return None


def replay_timeline(conn: psycopg.Connection[Any]) -> int | None:
    """The timeline from IDENTIFY_SYSTEM on a replication connection: on a standby, the one replay is
    on (pg_control_checkpoint() lags after a timeline switch until the next restartpoint)."""
    row = conn.execute("IDENTIFY_SYSTEM").fetchone()
    if row is None:
        return None
    try:
        return int(row[1])
    except (IndexError, TypeError, ValueError):
        return None


def _one(cur: psycopg.Cursor[Any], sql: str) -> tuple[Any, ...]:
    row = cur.execute(sql).fetchone()
    if row is None:
        raise psycopg.DataError(f"no row from: {sql.split()[1]}")
    return tuple(row)
