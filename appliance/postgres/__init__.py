"""PostgreSQL control: initdb, basebackup, start/stop, promote, demote, rewind, status, conf files."""

from appliance.core.wal import format_lsn, parse_lsn
from appliance.net.address import conn_url, parse_conn_url, split_host_port
from appliance.postgres.config import (
    STRICT_SYNC_PLACEHOLDER,
    ConnInfo,
    PgConfig,
    UserCredentials,
    format_sync_names,
    slot_name_for,
    strict_sync_names,
)
from appliance.postgres.control import PostgresControl
from appliance.postgres.controldata import ControlData, DataDirState
from appliance.postgres.errors import DataDirNotEmpty, PgError
from appliance.postgres.slots import SlotChanges
from appliance.postgres.status import PendingRestart, PgStatus, ReplicaConnection, WalReceiver

__all__ = [
    "STRICT_SYNC_PLACEHOLDER",
    "ConnInfo",
    "ControlData",
    "DataDirNotEmpty",
    "DataDirState",
    "PendingRestart",
    "PgConfig",
    "PgError",
    "PgStatus",
    "PostgresControl",
    "ReplicaConnection",
    "SlotChanges",
    "UserCredentials",
    "WalReceiver",
    "conn_url",
    "format_lsn",
    "format_sync_names",
    "parse_conn_url",
    "parse_lsn",
    "slot_name_for",
    "split_host_port",
    "strict_sync_names",
]
