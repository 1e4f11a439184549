"""Pure parsing: pg_controldata output, and what a data directory holds."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import StrEnum

from appliance.core.wal import parse_lsn
from appliance.postgres.files import incomplete_marker

# pg_control states after which this data dir was (or is becoming) a primary.
PRIMARY_STATES = frozenset({"in production", "shut down", "shutting down", "in crash recovery"})
CLEAN_SHUTDOWN_STATES = frozenset({"shut down", "shut down in recovery"})


class DataDirState(StrEnum):
    """What a data directory holds, i.e. what may be done with it."""

    MISSING = "missing"  # no directory: initdb or clone may create it
    EMPTY = "empty"  # an empty directory: initdb or clone may fill it
    VALID = "valid"  # PG_VERSION and global/pg_control: a cluster
    INVALID = "invalid"  # not empty but not a cluster: never initdb/clone over it; wipe first
    INCOMPLETE = "incomplete"  # our initdb/clone/rewind was interrupted: unusable, wipe and re-clone


def data_dir_state(data_dir: str) -> DataDirState:
    if os.path.exists(incomplete_marker(data_dir)):
        return DataDirState.INCOMPLETE
    if not os.path.exists(data_dir):
        return DataDirState.MISSING
    if not os.path.isdir(data_dir):
        return DataDirState.INVALID
    if not os.listdir(data_dir):
        return DataDirState.EMPTY
    has_version = os.path.isfile(os.path.join(data_dir, "PG_VERSION"))
    has_control = os.path.isfile(os.path.join(data_dir, "global", "pg_control"))
    return DataDirState.VALID if has_version and has_control else DataDirState.INVALID


@dataclass(frozen=True)
class ControlData:
    """The fields of pg_controldata the HA logic needs; `raw` keeps every line."""

    system_identifier: str
    cluster_state: str
    timeline: int  # Latest checkpoint's TimeLineID
    checkpoint_lsn: int
    redo_lsn: int
    min_recovery_end_lsn: int
    min_recovery_end_timeline: int
    data_checksums: bool
    wal_log_hints: bool
    raw: dict[str, str] = field(default_factory=dict)

    @property
    def was_primary(self) -> bool:
        return self.cluster_state in PRIMARY_STATES

    @property
    def clean_shutdown(self) -> bool:
        return self.cluster_state in CLEAN_SHUTDOWN_STATES


def parse_controldata(output: str) -> ControlData:
    """Parse `LC_ALL=C pg_controldata` output; raises ValueError naming a missing field."""
    raw: dict[str, str] = {}
    for line in output.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            raw[key.strip()] = value.strip()

    def get(key: str) -> str:
        try:
            return raw[key]
        except KeyError:
            raise ValueError(f"pg_controldata output has no {key!r} line (is this PostgreSQL 15?)") from None

    return ControlData(
        system_identifier=get("Database system identifier"),
        cluster_state=get("Database cluster state"),
        timeline=int(get("Latest checkpoint's TimeLineID")),
        checkpoint_lsn=parse_lsn(get("Latest checkpoint location")) or 0,
        redo_lsn=parse_lsn(get("Latest checkpoint's REDO location")) or 0,
        min_recovery_end_lsn=parse_lsn(get("Minimum recovery ending location")) or 0,
        min_recovery_end_timeline=int(get("Min recovery ending loc's timeline")),
        data_checksums=get("Data page checksum version") != "0",
        wal_log_hints=raw.get("wal_log_hints setting") == "on",
        raw=raw,
    )
