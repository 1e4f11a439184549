"""LSNs read and written one way, and one segment-padding rule for the election, /replica?lag and the API."""

from __future__ import annotations

from typing import Any

import pytest

from appliance.api.health import lag_bytes
from appliance.api.switchover_checks import CandidateCheck
from appliance.core.model import ClusterStatus, ClusterView, Leader, Member
from appliance.core.wal import WAL_SEGMENT, format_lsn, lsn_or_none, parse_lsn, wal_lag

LSNS = [("0/0", 0), ("0/50000D8", 0x50000D8), ("3/10", (3 << 32) + 0x10), ("16/B374D848", 0x16B374D848)]


@pytest.mark.parametrize(("text", "value"), LSNS)
def test_lsn_text_form_round_trips(text: str, value: int) -> None:
    assert parse_lsn(text) == value
    assert lsn_or_none(text) == value
    assert format_lsn(value) == text


@pytest.mark.parametrize(("value", "expected"), [(42, 42), (None, None), ("", None), ("unknown", None),
                                                 ("x/y", None), (True, None), (1.5, None)])
def test_a_foreign_lsn_that_is_not_one_reads_as_none(value: Any, expected: int | None) -> None:
    assert lsn_or_none(value) == expected


def test_a_server_lsn_that_is_not_one_is_an_error() -> None:
    assert parse_lsn(None) is None and parse_lsn("") is None
    with pytest.raises(ValueError, match="not an LSN"):
        parse_lsn("1234")


SEG = WAL_SEGMENT
LAGS = [
    (1000, 1000, 0),
    (900, 1000, 0),
    (3 * SEG, 3 * SEG - 200, 0),  # idle primary right after a segment switch: padding
    (3 * SEG, 2 * SEG, 0),
    (3 * SEG, 2 * SEG - 200, SEG + 200),  # a whole segment behind
    (3 * SEG + 8, 3 * SEG - 200, 208),
]


@pytest.mark.parametrize(("optime", "position", "lag"), LAGS)
def test_every_lag_reader_applies_the_segment_padding_rule(optime: int, position: int, lag: int) -> None:
    assert wal_lag(optime, position) == lag
    doc = {"postgres": {"replay_lsn": position}, "cluster_optime": optime}
    assert lag_bytes(doc) == lag
    for limit in (0, lag, lag + 1):
        view = ClusterView(leader=Leader("n1"), members=(Member("n1", xlog_location=optime), Member("n2")),
                           status=ClusterStatus(optime=optime), config={"maximum_lag_on_failover": limit})
        problem = CandidateCheck(view, None)._lag_problem(position)
        assert (problem is None) is (lag <= limit)
