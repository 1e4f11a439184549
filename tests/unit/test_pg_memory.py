"""PgMemory and PgOps: observing changes nothing; each action records what PostgreSQL was told."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from appliance.core.model import Member
from appliance.manager.memory import PgMemory
from appliance.manager.pgops import PgOps
from appliance.postgres.config import PgConfig
from appliance.postgres.history import parse_history
from appliance.postgres.slots import wanted_slots
from appliance.postgres.status import PgStatus

PRIMARY = PgStatus(running=True, role="primary", in_recovery=False, wal_lsn=5000, timeline=1,
                   synchronous_standby_names='FIRST 1 ("n2")')
REPLICA = PgStatus(running=True, role="replica", in_recovery=True, replay_lsn=4000, timeline=1)
LEADER = Member(name="n1", conn_url="postgres://10.0.0.1:5432/postgres")


@dataclass
class FakeMonitor:
    answers: list[PgStatus]
    slots: dict[str, int] = field(default_factory=dict)
    ensured: list[tuple[str, ...]] = field(default_factory=list)

    def status(self) -> PgStatus:
        return self.answers[0] if len(self.answers) == 1 else self.answers.pop(0)

    def slot_positions(self) -> dict[str, int]:
        return dict(self.slots)

    def ensure_slots(self, names: tuple[str, ...]) -> None:
        self.ensured.append(names)


@dataclass
class FakeControl:
    cfg: PgConfig = field(default_factory=lambda: PgConfig(name="n2", data_dir="/nonexistent", run_as=None))
    written: list[dict[str, Any]] = field(default_factory=list)
    promoted: bool = False

    def write_config(self, params: Any, conninfo: Any, slot: Any, standby: bool,
                     synchronous_standby_names: str | None = None) -> bool:
        self.written.append({"params": dict(params), "conninfo": conninfo, "standby": standby,
                             "ssn": synchronous_standby_names})
        return True

    def reload(self) -> bool:
        return True

    def set_synchronous_standby_names(self, value: str) -> bool:
        return True

    def promote(self, timeout: float, checkpoint: bool) -> bool:
        self.promoted = True
        return True

    def checkpoint(self) -> None:
        pass


def ops_with(*answers: PgStatus, params: dict[str, Any] | None = None) -> tuple[PgOps, FakeControl, FakeMonitor]:
    control, monitor = FakeControl(), FakeMonitor(list(answers))
    ops = PgOps(control, params or {"work_mem": "4MB"}, monitor=monitor)  # type: ignore[arg-type]
    return ops, control, monitor


def test_status_is_what_postgres_says_and_changes_nothing() -> None:
    ops, _, _ = ops_with(PRIMARY)
    before = PgMemory(**vars(ops.memory))
    assert ops.status() is PRIMARY
    assert ops.memory == before and ops.memory.written is None and ops.memory.ssn == ""


def test_track_takes_the_setting_in_effect_and_the_lsn_once_on_a_primary() -> None:
    memory = PgMemory()
    memory.track(PgStatus(running=False), {"a": 1})
    assert memory == PgMemory()
    memory.track(PRIMARY, {"a": 1})
    assert (memory.ssn, memory.ssn_set_lsn, memory.written) == ('FIRST 1 ("n2")', 5000, {"a": 1})
    later = PgStatus(running=True, role="primary", wal_lsn=9000, synchronous_standby_names='FIRST 1 ("n2")')
    memory.track(later, {"a": 2})
    assert (memory.ssn, memory.ssn_set_lsn, memory.written) == ('FIRST 1 ("n2")', 5000, {"a": 1})  # the LSN stays


def test_a_setting_we_did_not_see_take_effect_counts_from_now() -> None:
    """A reload that took effect after set_sync_standby_names stopped waiting (or an outside change):
    when it did is unknown, so only standbys caught up with the present confirm it (else a standby
    flushed past an older change would count as holding commits it may lack)."""
    memory = PgMemory()
    memory.track(PRIMARY, {})
    memory.track(PgStatus(running=True, role="primary", wal_lsn=9000, synchronous_standby_names='ANY 1 ("n2","n3")'),
                 {})
    assert (memory.ssn, memory.ssn_set_lsn) == ('ANY 1 ("n2","n3")', 9000)


def test_track_on_a_replica_records_no_lsn_and_not_an_unanswered_status() -> None:
    memory = PgMemory()
    memory.track(REPLICA, {})
    assert memory.ssn == "" and memory.ssn_set_lsn is None and memory.written == {}
    memory.ssn = "x"
    memory.track(PgStatus(running=True, error="starting up"), {})
    assert memory.ssn == "x"


def test_config_is_stale_once_the_parameters_or_hba_differ_from_what_was_written() -> None:
    memory = PgMemory(hba_written=("host all all all scram-sha-256",))
    assert not memory.config_stale({"a": 1}, ("host all all all scram-sha-256",))  # nothing written yet
    memory.written = {"a": 1}
    assert not memory.config_stale({"a": 1}, ("host all all all scram-sha-256",))
    assert memory.config_stale({"a": 2}, ("host all all all scram-sha-256",))
    assert memory.config_stale({"a": 1}, None)


def test_follow_promote_and_sync_are_recorded_in_memory() -> None:
    ops, control, _ = ops_with(PRIMARY)
    assert ops.follow(LEADER)
    assert ops.memory.upstream == LEADER and ops.memory.following == "n1"
    assert ops.memory.written == {"work_mem": "4MB"} and control.written[-1]["standby"]
    assert ops.promote(strict_sync=False)
    assert control.promoted and ops.memory.upstream is None and ops.memory.ssn_set_lsn is None
    assert ops.set_sync_standby_names('FIRST 1 ("n3")')
    assert (ops.memory.ssn, ops.memory.ssn_set_lsn) == ('FIRST 1 ("n3")', 5000)


def test_the_changed_parameters_are_stale_until_written() -> None:
    ops, _, _ = ops_with(PRIMARY)
    ops.memory.track(ops.status(), ops.params)
    assert not ops.config_stale()
    ops.set_parameters({"work_mem": "8MB"})
    assert ops.config_stale()
    ops.reconcile()
    assert not ops.config_stale() and ops.memory.written == {"work_mem": "8MB"}


def test_slot_positions_and_slot_upkeep_go_through_the_monitor() -> None:
    ops, _, monitor = ops_with(PRIMARY)
    monitor.slots = {"n1": 4096}
    assert ops.slot_positions() == {"n1": 4096}
    ops.ensure_slots(("n1", "n3"))
    assert monitor.ensured == [("n1", "n3")]


def test_wanted_slots_are_sanitised_and_never_our_own() -> None:
    assert wanted_slots(["n1", "Node-2", "n3"], "n3") == {"n1", "node_2"}


def test_a_history_file_parses_to_its_switches() -> None:
    text = "1\t0/3000158\tno recovery target specified\n\n# comment\n2\t0/5000000\nbad\tline\n3\tnot-an-lsn\tx\n"
    assert parse_history(text) == ((1, 0x3000158, "no recovery target specified"), (2, 0x5000000, ""))
