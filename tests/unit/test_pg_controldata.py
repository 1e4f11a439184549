"""LSN helpers and pg_controldata parsing."""

from __future__ import annotations

import pytest

from appliance.postgres import format_lsn, parse_lsn
from appliance.postgres.controldata import parse_controldata

SAMPLE = """pg_control version number:            1300
Catalog version number:               202209061
Database system identifier:           7712501570214933780
Database cluster state:               shut down in recovery
Latest checkpoint location:           16/B374D848
Latest checkpoint's REDO location:    16/B374D810
Latest checkpoint's TimeLineID:       3
Minimum recovery ending location:     16/B4000000
Min recovery ending loc's timeline:   3
wal_log_hints setting:                on
Data page checksum version:           1
"""


def test_lsn_roundtrip() -> None:
    assert parse_lsn("16/B374D848") == 0x16B374D848
    assert parse_lsn("0/0") == 0
    assert parse_lsn(None) is None and parse_lsn("") is None
    assert format_lsn(0x16B374D848) == "16/B374D848"
    with pytest.raises(ValueError):
        parse_lsn("1234")


def test_parse_controldata() -> None:
    cd = parse_controldata(SAMPLE)
    assert cd.system_identifier == "7712501570214933780"
    assert cd.timeline == 3 and cd.checkpoint_lsn == 0x16B374D848 and cd.redo_lsn == 0x16B374D810
    assert cd.min_recovery_end_lsn == 0x16B4000000 and cd.min_recovery_end_timeline == 3
    assert cd.data_checksums and cd.wal_log_hints
    assert cd.clean_shutdown and not cd.was_primary
    assert cd.raw["Catalog version number"] == "202209061"


@pytest.mark.parametrize(
    ("state", "primary"),
    [
        ("in production", True),
        ("shut down", True),
        ("shutting down", True),
        ("in crash recovery", True),
        ("shut down in recovery", False),
        ("in archive recovery", False),
        ("starting up", False),
    ],
)
def test_was_primary(state: str, primary: bool) -> None:
    text = SAMPLE.replace("shut down in recovery", state)
    assert parse_controldata(text).was_primary is primary


def test_missing_field_is_named() -> None:
    with pytest.raises(ValueError, match="TimeLineID"):
        parse_controldata(SAMPLE.replace("Latest checkpoint's TimeLineID", "X"))
