"""What a node publishes while a start or restart of its PostgreSQL is in flight (manager.publish):
the role the job brings it up in, so that a leader race waits for a primary that is coming back."""

from __future__ import annotations

import pytest

from appliance.core.model import PgState, Role
from appliance.manager.peers import parse_status
from appliance.manager.publish import member_value, patroni_doc
from appliance.postgres.status import PgStatus

DOWN = PgStatus(running=False)


@pytest.mark.parametrize(("status", "job", "starting_as", "state", "role"), [
    (DOWN, "start", Role.PRIMARY, PgState.STARTING, Role.PRIMARY),
    (DOWN, "restart", Role.PRIMARY, PgState.RESTARTING, Role.PRIMARY),
    (DOWN, "start", Role.REPLICA, PgState.STARTING, Role.REPLICA),
    (DOWN, None, None, PgState.STOPPED, Role.UNINITIALIZED),
    # A running server says what it is, whatever the job aims for.
    (PgStatus(running=True, in_recovery=True, role="replica"), "restart", Role.PRIMARY, PgState.RUNNING, "replica"),
])
def test_role_and_state_while_a_start_is_in_flight(status: PgStatus, job: str | None, starting_as: Role | None,
                                                   state: PgState, role: str) -> None:
    doc = patroni_doc("n1", "batman", status, None, job, {}, False, None, starting_as)
    assert (doc["state"], doc["role"]) == (state, role)
    member = member_value("n1", "postgres://h:5432/postgres", "https://h:8008/patroni", status, job, {},
                          starting_as=starting_as)
    assert (member.state, member.role) == (state, role)


def test_a_racer_reads_a_start_as_primary_from_the_answer() -> None:
    doc = patroni_doc("n1", "batman", DOWN, None, "start", {}, False, None, Role.PRIMARY)
    answer = parse_status("n1", {**doc, "postgres_writable": False})
    assert answer.starting and answer.role == Role.PRIMARY
