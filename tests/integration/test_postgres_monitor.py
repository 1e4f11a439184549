"""The loop's Monitor against real PostgreSQL 15: one kept connection, reopened after a restart, cut
when the server freezes; slot positions; IDENTIFY_SYSTEM over a replication connection."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from appliance.postgres import PostgresControl
from appliance.postgres.monitor import DEADLINE, Monitor, identify_timeline
from tests.support.pg import PgNodes, pg_available, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not pg_available(), reason="PostgreSQL 15 binaries not installed"),
    pytest.mark.timeout(180),
]


@pytest.fixture
def nodes() -> Iterator[PgNodes]:
    created = PgNodes()
    yield created
    created.cleanup()


def backend_pid(monitor: Monitor) -> int:
    return int(monitor.session.run(lambda conn: conn.execute("SELECT pg_backend_pid()").fetchone()[0]))


def clone(primary: PostgresControl, replica: PostgresControl) -> None:
    primary.ensure_slots({replica.cfg.name})
    source = replica.cfg.replication_conninfo(primary.cfg.connect_host, primary.cfg.connect_port)
    assert replica.basebackup(source)
    assert replica.start(timeout=30)
    wait_until(lambda: replica.status().replication_state == "streaming")


def test_one_connection_for_every_status_and_a_new_one_after_a_restart(nodes: PgNodes) -> None:
    pg = nodes.new("alpha")
    pg.initdb()
    monitor = Monitor(pg.cfg)
    first = monitor.status()
    fresh = pg.status()
    assert (first.role, first.timeline, first.system_identifier) == ("primary", 1, fresh.system_identifier)
    for _ in range(5):
        assert monitor.status().queryable
    assert monitor.session.opened == 1

    assert pg.restart(timeout=30)
    after = monitor.status()  # the kept connection died with the server: replaced within this call
    assert after.queryable and after.role == "primary", after.error
    assert monitor.session.opened == 2

    assert pg.stop("fast", timeout=20)
    assert monitor.status().running is False
    assert pg.start(timeout=30)
    assert monitor.status().queryable and monitor.session.opened == 3


def test_a_frozen_server_costs_one_deadline_then_status_recovers(nodes: PgNodes) -> None:
    pg = nodes.new("alpha")
    pg.initdb()
    monitor = Monitor(pg.cfg)
    assert monitor.status().queryable
    pid = backend_pid(monitor)
    os.kill(pid, signal.SIGSTOP)  # statement_timeout cannot fire in a stopped backend
    try:
        started = time.monotonic()
        frozen = monitor.status()
        took = time.monotonic() - started
    finally:
        os.kill(pid, signal.SIGCONT)
    assert frozen.running and not frozen.queryable
    assert frozen.error is not None and "did not answer within" in frozen.error
    assert DEADLINE - 0.1 < took < DEADLINE + 1.0
    again = monitor.status()
    assert again.queryable and backend_pid(monitor) != pid and monitor.session.opened == 2


def test_slot_positions_and_slot_upkeep_on_the_kept_connection(nodes: PgNodes) -> None:
    primary, replica = nodes.new("alpha"), nodes.new("beta")
    primary.initdb()
    monitor = Monitor(primary.cfg)
    assert monitor.slot_positions() == {}
    changes = monitor.ensure_slots(("alpha", "beta", "gamma"))
    assert changes.created == ("beta", "gamma") and changes.dropped == ()
    positions = monitor.slot_positions()
    assert set(positions) == {"beta", "gamma"} and all(isinstance(v, int) and v > 0 for v in positions.values())
    assert monitor.ensure_slots(("beta",)).dropped == ("gamma",)
    with primary.connect() as other:  # a temporary slot (pg_basebackup's kind) is not published
        other.execute("SELECT pg_create_physical_replication_slot('passing', true, true)")
        assert set(monitor.slot_positions()) == {"beta"}
    clone(primary, replica)
    primary.query("CREATE TABLE t AS SELECT 1 AS x")
    lsn = primary.status().wal_lsn or 0
    wait_until(lambda: monitor.slot_positions()["beta"] >= lsn)  # the streaming replica moves it
    assert Monitor(replica.cfg).ensure_slots(("alpha",)).created == ()  # nothing on a standby
    assert monitor.session.opened == 1


def test_identify_system_gives_the_timeline_replay_is_on(nodes: PgNodes) -> None:
    a, b, c = nodes.new("alpha"), nodes.new("beta"), nodes.new("gamma")
    a.initdb()
    clone(a, b)
    clone(a, c)
    assert identify_timeline(b.cfg.local_conninfo()) == 1
    assert b.promote(timeout=30)
    assert identify_timeline(b.cfg.local_conninfo()) == 2
    b.ensure_slots({"gamma"})
    # gamma follows beta onto timeline 2, then beta goes away: no WAL receiver tells the timeline.
    params: dict[str, Any] = dict(c.cfg.parameters)
    source = c.cfg.replication_conninfo(b.cfg.connect_host, b.cfg.connect_port)
    c.write_config(params, source, c.cfg.slot_name, standby=True)
    assert c.restart(timeout=30)
    wait_until(lambda: c.status().replication_state == "streaming" and c.status().timeline == 2, timeout=30)
    assert b.stop("immediate", timeout=20)
    monitor = Monitor(c.cfg)
    st = wait_until(lambda: (s := monitor.status()).receiver is None and s, timeout=30)
    assert (st.role, st.timeline) == ("replica", 2)
    assert identify_timeline(c.cfg.local_conninfo()) == 2
