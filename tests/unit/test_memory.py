"""Memory: the primary_start_timeout clock of the key holder, and the back-off after failed jobs and
promotions (a key holder that comes up read-only and dies at every promotion is not "up")."""

from __future__ import annotations

from appliance.core.model import ClusterView, Leader, Member, Role
from appliance.core.state import JobResult
from appliance.manager.events import EventLog
from appliance.manager.memory import Memory
from appliance.postgres.status import PgStatus

HOLDING = ClusterView(initialize="1", leader=Leader("n1"), members=(Member("n1"),))
OTHER = ClusterView(initialize="1", leader=Leader("n2"), members=(Member("n1"), Member("n2")))
DOWN = PgStatus(running=False)
PRIMARY = PgStatus(running=True, role=Role.PRIMARY)
READ_ONLY = PgStatus(running=True, role=Role.REPLICA)


def test_the_clock_of_the_key_holder_runs_until_postgres_runs_as_primary() -> None:
    memory = Memory(EventLog())
    memory.track(HOLDING, "n1", DOWN, None, 10.0)
    memory.track(HOLDING, "n1", READ_ONLY, None, 12.0)  # up, but not as the primary: still counting
    assert memory.pg_down_since == 10.0
    memory.track(HOLDING, "n1", DOWN, "start", 14.0)
    assert memory.pg_down_since == 10.0
    memory.track(HOLDING, "n1", PRIMARY, None, 16.0)
    assert memory.pg_down_since is None


def test_a_read_only_replica_without_the_key_has_no_clock() -> None:
    memory = Memory(EventLog())
    memory.track(OTHER, "n1", READ_ONLY, None, 10.0)
    memory.track(OTHER, "n1", DOWN, None, 11.0)
    assert memory.pg_down_since is None


def test_every_failed_promotion_backs_off_further_and_a_read_only_start_clears_nothing() -> None:
    memory = Memory(EventLog())
    waits = []
    now = 0.0
    for _ in range(4):
        memory.after_promote(False, now)  # the server died during the promotion
        assert memory.retry is not None
        waits.append(memory.retry.until - now)
        now = memory.retry.until
        # The start that follows brings PostgreSQL up read-only under our key: not a success yet.
        memory.after_job(JobResult("start", True, ""), HOLDING, READ_ONLY, None, now, "n1")
        assert memory.retry is not None
    assert waits == sorted(waits) and waits[-1] > waits[0], waits
    memory.after_promote(True, now)
    memory.after_job(JobResult("start", True, ""), HOLDING, PRIMARY, None, now, "n1")
    assert memory.retry is None


def test_a_start_that_brings_a_replica_up_clears_the_back_off() -> None:
    memory = Memory(EventLog())
    memory.after_job(JobResult("start", False, "no"), OTHER, DOWN, None, 1.0, "n1")
    assert memory.retry is not None
    memory.after_job(JobResult("start", True, ""), OTHER, READ_ONLY, None, 3.0, "n1")
    assert memory.retry is None


def test_the_vacancy_of_the_leader_key_is_timed_from_the_first_read_that_found_it_free() -> None:
    """Quorum votes count only from answers published after this moment (core/election.py)."""
    memory = Memory(EventLog())
    free = ClusterView(initialize="1", members=(Member("n1"), Member("n2")))
    memory.track(OTHER, "n1", READ_ONLY, None, 10.0)
    assert memory.leader_free_since is None
    memory.track(free, "n1", READ_ONLY, None, 11.0)
    memory.track(free, "n1", READ_ONLY, None, 12.0)
    memory.track(None, "n1", READ_ONLY, None, 13.0)  # the DCS unreadable: nothing learnt
    assert memory.leader_free_since == 11.0
    memory.track(OTHER, "n1", READ_ONLY, None, 14.0)
    memory.track(free, "n1", READ_ONLY, None, 15.0)
    assert memory.leader_free_since == 15.0  # a new vacancy
