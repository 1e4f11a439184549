"""The HA loop's view of the local PostgreSQL over one long-lived connection: status, slot positions
and slot upkeep. Loop thread only (jobs use PostgresControl's own connections); it remembers nothing
but the connection, so each status() is what PostgreSQL says now."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable

import psycopg

from appliance.core.model import Role
from appliance.postgres import slots
from appliance.postgres.config import ConnInfo, PgConfig
from appliance.postgres.process import running_postmaster
from appliance.postgres.session import Session, deadline
from appliance.postgres.slots import SlotChanges
from appliance.postgres.status import PgStatus, connect, query_status, replay_timeline

log = logging.getLogger(__name__)

STATEMENT_TIMEOUT_MS = 2000
# A kept connection meets no connect_timeout: a frozen server costs the loop this long at most per
# use, as long as the 2 s connect_timeout a new connection per tick used to cost.
DEADLINE = 2.0


class Monitor:
    """status() never raises: running=False without a postmaster; error=... when it does not answer."""

    def __init__(self, cfg: PgConfig, session: Session | None = None) -> None:
        self.cfg = cfg
        self.session = session or Session(lambda: connect(cfg.local_conninfo(), STATEMENT_TIMEOUT_MS), DEADLINE)

    def status(self) -> PgStatus:
        if running_postmaster(self.cfg.data_dir) is None:
            self.session.close()  # it died with the server; the next status() opens a new one
            return PgStatus(running=False)
        try:
            status = self.session.run(query_status)
        except psycopg.Error as exc:
            return PgStatus(running=True, error=str(exc).strip() or type(exc).__name__)
        if status.role == Role.REPLICA and not (status.receiver and status.receiver.received_tli):
            # Without a WAL receiver PostgreSQL only shows the last checkpoint's timeline, which lags
            # after a timeline switch; IDENTIFY_SYSTEM reports the timeline replay is on.
            tli = identify_timeline(self.cfg.local_conninfo())
            if tli is not None and (status.timeline is None or tli > status.timeline):
                status = dataclasses.replace(status, timeline=tli)
        return status

    def slot_positions(self) -> dict[str, int]:
        """slot -> LSN (restart_lsn, or confirmed_flush_lsn of a logical slot); {} when PostgreSQL does not answer."""
        try:
            return self.session.run(slots.positions)
        except psycopg.Error as exc:
            log.warning("cannot read the replication slots: %s", str(exc).strip())
            return {}

    def ensure_slots(self, names: Iterable[str]) -> SlotChanges:
        """As PostgresControl.ensure_slots, on the kept connection: nothing when PostgreSQL does not
        answer or is not a primary."""
        wanted = slots.wanted_slots(names, self.cfg.slot_name)
        try:
            if self.session.run(slots.in_recovery):
                return SlotChanges()
        except psycopg.Error:
            return SlotChanges()
        return self.session.run(lambda conn: slots.reconcile(conn, wanted))

    def close(self) -> None:
        self.session.close()


def identify_timeline(info: ConnInfo, timeout: float = DEADLINE) -> int | None:
    """IDENTIFY_SYSTEM's timeline over a short physical replication connection (a kept one would hold
    a walsender slot); None when it cannot be had."""
    try:
        with connect(info, STATEMENT_TIMEOUT_MS, replication=True) as conn, deadline(conn, timeout):
            return replay_timeline(conn)
    except psycopg.Error as exc:
        log.debug("IDENTIFY_SYSTEM failed: %s", exc)
        return None
