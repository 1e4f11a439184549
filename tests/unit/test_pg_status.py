"""Pure parts of PgStatus: row conversion, replication_state and the Patroni wal position."""

from __future__ import annotations

from pathlib import Path

from appliance.postgres import PgStatus
from appliance.postgres.process import read_pid_file
from appliance.postgres.status import receiver_from_row, replica_connection_from_row, replication_state


def test_replica_connection_from_row() -> None:
    row = ("node_2", "replicator", "10.0.0.2", "streaming", "sync", 1, "0/3000000", "0/3000000", "0/2FFFF00", None)
    rc = replica_connection_from_row(row)
    assert (rc.application_name, rc.sync_state, rc.sync_priority) == ("node_2", "sync", 1)
    assert rc.flush_lsn == 0x2FFFF00 and rc.replay_lsn is None


def test_replication_state() -> None:
    streaming = receiver_from_row(("streaming", 2, "h", 5432, "n1", "user=r", "0/5000000"))
    assert streaming is not None and streaming.flushed_lsn == 0x5000000
    waiting = receiver_from_row(("waiting", 2, "h", 5432, None, None, None))
    assert replication_state(True, streaming) == "streaming"
    assert replication_state(True, waiting) == "in archive recovery"
    assert replication_state(True, None) == "in archive recovery"
    assert replication_state(False, None) is None
    assert receiver_from_row(None) is None


def test_wal_position() -> None:
    assert PgStatus(running=True, role="primary", wal_lsn=10).wal_position == 10
    assert PgStatus(running=True, role="replica", receive_lsn=7, replay_lsn=9).wal_position == 9
    assert PgStatus(running=True, role="replica", replay_lsn=5).wal_position == 5
    assert PgStatus(running=False).wal_position is None
    assert PgStatus(running=True, error="starting").queryable is False


def test_pid_file(tmp_path: Path) -> None:
    (tmp_path / "postmaster.pid").write_text(
        "4242\n/var/lib/postgresql/data\n1700000000\n5432\n/var/run/postgresql\n*\n  1234   5\nready   \n"
    )
    pid = read_pid_file(str(tmp_path))
    assert pid is not None and (pid.pid, pid.port, pid.status, pid.start_time) == (4242, 5432, "ready", 1700000000)
    assert read_pid_file(str(tmp_path / "nope")) is None
