"""PostgresControl against real PostgreSQL 15 instances on loopback (run as the postgres user)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.postgres import (
    ConnInfo,
    DataDirNotEmpty,
    DataDirState,
    PgError,
    PostgresControl,
    format_sync_names,
    strict_sync_names,
)
from tests.support.pg import PgNodes, free_port, pg_available, wait_until

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


def source_of(primary: PostgresControl, replica: PostgresControl) -> ConnInfo:
    return replica.cfg.replication_conninfo(primary.cfg.connect_host, primary.cfg.connect_port)


def clone(primary: PostgresControl, replica: PostgresControl) -> None:
    primary.ensure_slots({replica.cfg.name})
    assert replica.basebackup(source_of(primary, replica))
    assert replica.start(timeout=30)
    wait_until(lambda: replica.status().replication_state == "streaming")


def slot_active(primary: PostgresControl, slot: str) -> bool:
    rows = primary.query("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,))
    return bool(rows and rows[0][0])


def test_initdb_gives_a_running_primary(nodes: PgNodes) -> None:
    pg = nodes.new("alpha")
    assert pg.data_dir_state() is DataDirState.MISSING
    assert pg.status().running is False
    pg.initdb()
    st = pg.status()
    assert (st.running, st.role, st.in_recovery, st.timeline) == (True, "primary", False, 1)
    assert st.server_version is not None and st.server_version // 10000 == 15
    assert st.wal_lsn and st.wal_position == st.wal_lsn
    assert st.system_identifier == pg.sysid()
    assert pg.postmaster_pid() is not None and pg.data_dir_state() is DataDirState.VALID
    cd = pg.controldata()
    assert cd.data_checksums and cd.wal_log_hints and cd.timeline == 1
    assert pg.was_primary_when_stopped()
    roles = dict(pg.query("SELECT rolname, rolreplication FROM pg_roles WHERE rolname IN ('replicator','rewinder')"))
    assert roles == {"replicator": True, "rewinder": False}
    # Rendering is deterministic: writing the same config again changes nothing.
    assert pg.write_config(standby=False) is False
    with pytest.raises(DataDirNotEmpty):
        pg.initdb()
    assert pg.stop("fast", timeout=20)
    assert not pg.is_running() and pg.status().running is False
    assert pg.controldata().cluster_state == "shut down" and pg.was_primary_when_stopped()
    with pytest.raises(DataDirNotEmpty):
        pg.basebackup(ConnInfo("127.0.0.1", free_port(), "replicator"))


def test_pending_restart_is_reported(nodes: PgNodes) -> None:
    pg = nodes.new("alpha")
    pg.initdb()
    params = {**pg.cfg.parameters, "max_connections": "40", "work_mem": "8MB"}
    assert pg.write_config(params)
    assert pg.reload()
    wait_until(lambda: pg.status().pending_restart)
    st = pg.status()
    assert [(p.name, p.old_value, p.new_value) for p in st.pending_restart] == [("max_connections", "30", "40")]
    assert pg.query("SHOW work_mem") == [("8MB",)]
    assert pg.restart(timeout=30)
    assert pg.status().pending_restart == ()


def test_clone_streams_and_sync_standby_takes_effect(nodes: PgNodes) -> None:
    primary, replica = nodes.new("alpha"), nodes.new("beta-2")
    primary.initdb()
    clone(primary, replica)
    st = replica.status()
    assert (st.role, st.in_recovery, st.timeline) == ("replica", True, 1)
    assert st.receiver and st.receiver.slot_name == "beta_2" and st.receiver.sender_port == primary.cfg.listen_port
    assert st.system_identifier == primary.status().system_identifier
    assert replica.controldata().cluster_state == "in archive recovery" and not replica.was_primary_when_stopped()
    assert slot_active(primary, "beta_2")

    primary.set_synchronous_standby_names(format_sync_names(["beta-2"]))
    rows = wait_until(lambda: primary.status().replication)
    assert [(r.application_name, r.usename) for r in rows] == [("beta_2", "replicator")]
    wait_until(lambda: primary.status().replication[0].sync_state == "sync")
    primary.query("CREATE TABLE t AS SELECT 1 AS x")  # returns only once the sync standby flushed it
    # synchronous_commit=on waits for the flush, not for replay: the row becomes visible shortly after.
    assert wait_until(lambda: replica.query("SELECT x FROM t")) == [(1,)]

    # A strict placeholder blocks commits; only check that it is applied, then go async again.
    primary.set_synchronous_standby_names(strict_sync_names())
    assert primary.status().synchronous_standby_names == strict_sync_names()
    primary.set_synchronous_standby_names("")
    wait_until(lambda: primary.status().replication[0].sync_state == "async")
    # Our value survives a reconfigure that does not mention it.
    primary.set_synchronous_standby_names(format_sync_names(["beta-2"]))
    primary.write_config()
    conf = Path(primary.cfg.data_dir, "postgresql.appliance.conf").read_text()
    assert "synchronous_standby_names = 'FIRST 1 (\"beta_2\")'" in conf


def test_failover_rewind_and_reclone(nodes: PgNodes) -> None:
    old, new = nodes.new("alpha"), nodes.new("beta")
    old.initdb()
    clone(old, new)
    old.query("CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
    wait_until(lambda: new.query("SELECT count(*) FROM t") == [(1,)])

    # Failover: the replica is promoted; the old primary keeps writing (a split brain to repair).
    assert new.promote(timeout=30)
    st = new.status()
    assert (st.role, st.timeline) == ("primary", 2)
    assert new.controldata().timeline == 2  # promote() checkpoints for the others' pg_rewind
    old.query("INSERT INTO t VALUES (99)")
    new.query("INSERT INTO t VALUES (2)")
    # A crash, not a clean stop: PostgreSQL 15's pg_rewind runs crash recovery itself.
    assert old.stop("immediate", timeout=20)
    assert old.was_primary_when_stopped() and old.controldata().cluster_state == "in production"

    # A rewind against an unreachable source fails cleanly and leaves the data usable.
    unreachable = old.cfg.rewind_conninfo("127.0.0.1", free_port())
    assert old.rewind(unreachable) is False
    assert old.data_dir_state() is DataDirState.VALID

    new.ensure_slots({"alpha"})
    # A crashed primary restarted as a replica once (it could not start) carries a standby.signal:
    # pg_rewind's single-user crash recovery refuses to run with one.
    Path(old.cfg.data_dir, "standby.signal").touch()
    assert old.rewind(old.cfg.rewind_conninfo(new.cfg.connect_host, new.cfg.connect_port))
    assert old.data_dir_state() is DataDirState.VALID
    assert old.start(timeout=30), nodes.log_tail(old)
    wait_until(lambda: old.status().replication_state == "streaming", timeout=30)
    st = old.status()
    assert (st.role, st.timeline) == ("replica", 2)
    assert st.receiver and st.receiver.sender_port == new.cfg.listen_port
    assert old.cfg.listen_port == int(old.query("SHOW port")[0][0])  # our config, not the source's
    wait_until(lambda: old.query("SELECT x FROM t ORDER BY x") == [(1,), (2,)])
    assert slot_active(new, "alpha")
    with pytest.raises(PgError):
        old.rewind(old.cfg.rewind_conninfo(new.cfg.connect_host, new.cfg.connect_port))  # running

    # Re-clone: wipe then basebackup from the new primary.
    assert old.stop("immediate", timeout=20)
    old.remove_data_dir()
    assert old.data_dir_state() is DataDirState.EMPTY
    assert oct(os.stat(old.cfg.data_dir).st_mode & 0o777) == "0o700"
    assert old.basebackup(source_of(new, old))
    assert old.start(timeout=30)
    wait_until(lambda: old.status().replication_state == "streaming")
    assert old.query("SELECT x FROM t ORDER BY x") == [(1,), (2,)]


def test_failed_clone_leaves_an_empty_dir(nodes: PgNodes) -> None:
    pg = nodes.new("gamma")
    assert pg.basebackup(pg.cfg.replication_conninfo("127.0.0.1", free_port())) is False
    assert pg.data_dir_state() is DataDirState.EMPTY
    assert not pg.is_running()


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def test_a_promotion_whose_server_dies_returns_at_once(nodes: PgNodes) -> None:
    """The HA loop waits in promote(): a server that dies meanwhile must not hold it for the timeout."""
    import signal
    import threading
    import time

    from appliance.postgres.process import kill_cluster

    primary, standby = nodes.new("alpha"), nodes.new("beta")
    primary.initdb()
    clone(primary, standby)
    assert primary.stop("fast", timeout=20)
    postmaster = standby.postmaster_pid()
    assert postmaster is not None
    startup = [p for p in _children(postmaster) if b"startup" in Path(f"/proc/{p}/cmdline").read_bytes()]
    assert startup, "no startup process under the standby's postmaster"
    os.kill(startup[0], signal.SIGSTOP)  # the promotion cannot finish now
    result: list[bool] = []
    started = time.monotonic()
    worker = threading.Thread(target=lambda: result.append(standby.promote(timeout=30, checkpoint=False)))
    worker.start()
    time.sleep(1.0)
    assert worker.is_alive(), "promote() returned before the server died"
    kill_cluster(standby.cfg.data_dir)
    worker.join(10)
    assert result == [False]
    assert time.monotonic() - started < 10, "promote() waited for its timeout after the server died"


def test_start_right_after_a_postmaster_kill9(nodes: PgNodes) -> None:
    """kill -9 of the postmaster alone leaves its children attached to the shared memory (and, in a
    container, a pid file whose pid is soon reused): the very next start must still succeed."""
    import signal

    pg = nodes.new("alpha")
    pg.initdb()
    postmaster = pg.postmaster_pid()
    assert postmaster is not None
    os.kill(postmaster, signal.SIGKILL)
    wait_until(lambda: not pg.is_running(), timeout=5, interval=0.01)  # gone (a zombie at most)
    assert pg.start(timeout=30), "the first start after kill -9 of the postmaster failed"
    assert wait_until(lambda: pg.status().role) == "primary"
    # A pid file whose pid now belongs to another (non-postgres) process.
    assert pg.stop("immediate", timeout=20)
    import subprocess

    other = subprocess.Popen(["sleep", "60"])
    try:
        pid_file = Path(pg.cfg.data_dir, "postmaster.pid")
        pid_file.write_text(f"{other.pid}\n{pg.cfg.data_dir}\n")
        assert pg.start(timeout=30), "a stale pid file naming a live non-postgres pid blocked the start"
    finally:
        other.kill()
        other.wait()


def test_a_promotion_skips_the_timelines_the_cluster_history_names(nodes: PgNodes) -> None:
    """Another node promoted to timeline 2 (and 3) and was lost before this replica followed it: the
    cluster's history in the DCS says so. Promoted, this replica must not create a second, different
    timeline 2 (issue 11's whole-cluster restart: a replica promoted while stopping, and after the
    restart another node promoted from the same timeline to the same ID; neither streaming nor
    pg_rewind could tell the two apart and the first one stayed stuck)."""
    primary, replica = nodes.new("alpha"), nodes.new("beta")
    primary.initdb()
    clone(primary, replica)
    assert replica.status().timeline == 1
    lsn = replica.status().wal_position
    assert lsn is not None
    elsewhere = ((1, lsn - 8, "no recovery target specified"), (2, lsn + 4096, "switchover"))
    assert replica.reserve_timelines(elsewhere, 1) == [2, 3]
    assert replica.reserve_timelines(elsewhere, 1) == []  # an existing file is never replaced
    assert replica.promote(timeout=30)
    st = replica.status()
    assert (st.role, st.timeline) == ("primary", 4), nodes.log_tail(replica)
    # Its own history names only its real parent: timeline 1, at its own switch point.
    text = Path(replica.cfg.data_dir, "pg_wal", "00000004.history").read_text()
    assert [line.split("\t")[0] for line in text.splitlines() if line.strip()] == ["1"]
