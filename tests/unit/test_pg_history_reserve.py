"""The timelines a promotion must skip (postgres.history.reserved_timelines): the history files of
timelines that the cluster's history says others created from ours on, as PostgreSQL writes them."""

from __future__ import annotations

import pytest

from appliance.postgres.history import parse_history, render_history, reserved_timelines

DCS = ((1, 0x3000158, "no recovery target specified"), (2, 0x5000000, ""), (3, 0x7000028, "switchover"))


@pytest.mark.parametrize(("current", "reserved"), [
    (1, [2, 3, 4]),  # every timeline after ours was created elsewhere
    (2, [3, 4]),
    (3, [4]),  # our own ancestors are never written: only what lies beyond us
    (4, []),  # we are on the newest: nothing to skip
    (9, []),
])
def test_only_timelines_from_ours_on_are_reserved(current: int, reserved: list[int]) -> None:
    assert sorted(reserved_timelines(DCS, current)) == reserved


def test_each_file_holds_the_lineage_of_its_timeline() -> None:
    files = reserved_timelines(DCS, 1)
    assert parse_history(files[2]) == DCS[:1]
    assert parse_history(files[4]) == DCS
    assert files[3] == "1\t0/3000158\tno recovery target specified\n2\t0/5000000\t\n"


def test_a_reason_cannot_break_the_file_format() -> None:
    text = render_history(((1, 0x100, "evil\treason\nwith 2\t0/1\tlines"),))
    assert text.count("\n") == 1 and parse_history(text) == ((1, 0x100, "evil reason with 2 0/1 lines"),)


def test_unordered_rows_are_ordered() -> None:
    assert reserved_timelines(tuple(reversed(DCS)), 3) == reserved_timelines(DCS, 3)
