"""Physical replication slots on a primary, over a given connection: where each one stands, and
creating and dropping them to match the members."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg

from appliance.core.wal import parse_lsn
from appliance.postgres.config import slot_name_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SlotChanges:
    """What ensure_slots did."""

    created: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()


def wanted_slots(names: Iterable[str], own_slot: str) -> set[str]:
    """The slot names of ``names`` (sanitised as Patroni does), never our own."""
    return {slot_name_for(n) for n in names} - {own_slot}


def in_recovery(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    return row is None or bool(row[0])


def positions(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """slot name -> LSN of every lasting slot, as Patroni's leader publishes them in the ``status``
    key: restart_lsn for a physical slot, confirmed_flush_lsn for a logical one."""
    rows = conn.execute("SELECT slot_name, (CASE WHEN slot_type = 'logical' THEN confirmed_flush_lsn "
                        "ELSE restart_lsn END)::text FROM pg_replication_slots WHERE NOT temporary "
                        "ORDER BY slot_name").fetchall()
    return {str(name): lsn for name, text in rows if (lsn := parse_lsn(text)) is not None}


def reconcile(conn: psycopg.Connection[Any], wanted: set[str]) -> SlotChanges:
    """Create the missing physical slots of ``wanted`` (reserving WAL now) and drop the inactive
    physical slots not in it. The caller has checked that this server is a primary."""
    rows = conn.execute("SELECT slot_name, active FROM pg_replication_slots WHERE slot_type = 'physical'").fetchall()
    existing = {name: active for name, active in rows}
    created = tuple(sorted(wanted - existing.keys()))
    for name in created:
        conn.execute("SELECT pg_create_physical_replication_slot(%s, true)", (name,))
    dropped: list[str] = []
    for name in sorted(existing.keys() - wanted):
        if existing[name]:
            continue
        try:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (name,))
            dropped.append(name)
        except psycopg.errors.ObjectInUse:
            log.info("slot %s became active; kept", name)
    return SlotChanges(created, tuple(dropped))
