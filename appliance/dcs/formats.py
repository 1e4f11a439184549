"""Patroni's exact DCS value formats: tolerant decoding into the core model, exact encoding back."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlparse, urlunparse

from appliance.core.model import (
    ClusterStatus,
    ClusterView,
    Failover,
    HistoryEntry,
    Leader,
    Member,
    PgState,
    Role,
    SyncState,
)
from appliance.core.tags import Tags

# Key names relative to the cluster prefix (patroni/dcs/__init__.py).
INITIALIZE = "initialize"
CONFIG = "config"
LEADER = "leader"
MEMBERS = "members/"
FAILOVER = "failover"
SYNC = "sync"
HISTORY = "history"
STATUS = "status"
LEADER_OPTIME = "optime/leader"  # written by Patroni < 2.1 instead of status
FAILSAFE = "failsafe"

# The member fields with a typed home in Member, in the order Patroni's ha.touch_member builds them.
_MEMBER_HEAD = ("conn_url", "api_url", "state", "role", "version")
_MEMBER_EXTRA_HEAD = ("proxy_url", "checkpoint_after_promote")
_MEMBER_FIELDS = frozenset(
    (
        *_MEMBER_HEAD,
        "tags",
        "pending_restart",
        "pending_restart_reason",
        "xlog_location",
        "replay_lsn",
        "receive_lsn",
        "replication_state",
        "timeline",
    )
)


class Row(NamedTuple):
    """One key under the cluster prefix as etcd returns it."""

    key: str
    value: str
    mod_revision: int
    create_revision: int
    lease: int


def cluster_prefix(namespace: str, scope: str) -> str:
    """``/<namespace>/<scope>/`` with slashes normalised, as Patroni builds its base path."""
    if not scope or "/" in scope:
        raise ValueError(f"scope {scope!r} must be a non-empty name without '/'")
    return re.sub("/+", "/", f"/{namespace}/{scope}/")


def dumps(value: Any) -> str:
    """Compact JSON, as Patroni writes every JSON value (``separators=(',', ':')``)."""
    return json.dumps(value, separators=(",", ":"))


def _loads(value: str | None) -> Any:
    if not value:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


# ---------------------------------------------------------------- members/<name>


def decode_member(name: str, value: str, mod_revision: int = 0) -> Member:
    """Decode a ``members/<name>`` value; garbage yields a member with defaults, never an exception."""
    data = _legacy_member(value) if value.startswith("postgres") else _loads(value)
    if not isinstance(data, dict):
        data = {}
    reason = data.get("pending_restart_reason")
    return Member(
        name=name,
        conn_url=_str(data.get("conn_url")) or "",
        api_url=_str(data.get("api_url")) or "",
        state=_str(data.get("state")) or PgState.UNKNOWN,
        role=_str(data.get("role")) or Role.UNINITIALIZED,
        version=_str(data.get("version")) or "",
        xlog_location=_int(data.get("xlog_location")),
        timeline=_int(data.get("timeline")),
        replication_state=_str(data.get("replication_state")),
        receive_lsn=_int(data.get("receive_lsn")),
        replay_lsn=_int(data.get("replay_lsn")),
        tags=Tags.from_json(data.get("tags")),
        pending_restart=data.get("pending_restart") is True,
        pending_restart_reason=dict(reason) if isinstance(reason, dict) else None,
        extra={k: v for k, v in data.items() if k not in _MEMBER_FIELDS},
        mod_revision=mod_revision,
    )


def _legacy_member(value: str) -> dict[str, Any]:
    # Patroni < 1.0 stored "postgres://host:port/db?application_name=<api_url>".
    parts = urlparse(value)
    api_url = next((v for k, v in parse_qsl(parts.query) if k == "application_name"), "")
    conn_url = urlunparse((parts.scheme, parts.netloc, parts.path, parts.params, "", parts.fragment))
    return {"conn_url": conn_url, "api_url": api_url}


def encode_member(member: Member) -> str:
    """The JSON Patroni's touch_member writes, keys in Patroni's order; ``extra`` is written back."""
    data: dict[str, Any] = {
        "conn_url": member.conn_url,
        "api_url": member.api_url,
        "state": member.state,
        "role": member.role,
        "version": member.version,
    }
    extra = {k: v for k, v in member.extra.items() if k not in _MEMBER_FIELDS}
    for key in _MEMBER_EXTRA_HEAD:
        if key in extra:
            data[key] = extra.pop(key)
    if member.tags:
        data["tags"] = member.tags.to_json()
    if member.pending_restart:
        data["pending_restart"] = True
    if member.pending_restart_reason is not None:
        data["pending_restart_reason"] = member.pending_restart_reason
    optional = (
        ("xlog_location", member.xlog_location),
        ("replay_lsn", member.replay_lsn),
        ("receive_lsn", member.receive_lsn),
        ("replication_state", member.replication_state),
        ("timeline", member.timeline),
    )
    data.update((k, v) for k, v in optional if v is not None)
    data.update(extra)
    return dumps(data)


# ---------------------------------------------------------------- config, sync, failover


def decode_config(value: str) -> dict[str, Any]:
    """The dynamic config; garbage or a non-object yields ``{}`` (the key exists but says nothing)."""
    data = _loads(value)
    return data if isinstance(data, dict) else {}


def encode_config(config: Mapping[str, Any]) -> str:
    return dumps(dict(config))


def decode_sync(value: str, mod_revision: int = 0) -> SyncState:
    """``{"leader":..,"quorum":..,"sync_standby":"a,b"}``; garbage yields an empty state (no leader)."""
    data = _loads(value)
    if not isinstance(data, dict) or not _str(data.get("leader")):
        return SyncState(mod_revision=mod_revision)
    standby = _str(data.get("sync_standby")) or ""
    names = tuple(n.strip() for n in standby.split(",") if n.strip())
    return SyncState(
        leader=data["leader"], sync_standby=names, quorum=_int(data.get("quorum")), mod_revision=mod_revision
    )


def encode_sync(leader: str | None, sync_standby: Iterable[str], quorum: int | None = 0) -> str:
    """Patroni's AbstractDCS.sync_state: names sorted and comma-joined, ``null`` when none.

    Patroni passes ``quorum=0`` outside quorum mode, so that is the default here too.
    """
    names = sorted(sync_standby)
    return dumps({"leader": leader, "quorum": quorum, "sync_standby": ",".join(names) if names else None})


def decode_failover(value: str, mod_revision: int = 0) -> Failover:
    """JSON ``{"leader","member","scheduled_at"}``, legacy ``leader:candidate``; ``{}`` is empty."""
    if not value:
        return Failover(mod_revision=mod_revision)
    try:
        data = json.loads(value)
    except ValueError:
        parts = [p.strip() for p in value.split(":")]
        member = parts[1] if len(parts) > 1 else None
        return Failover(leader=parts[0] or None, member=member or None, mod_revision=mod_revision)
    if not isinstance(data, dict):
        return Failover(mod_revision=mod_revision)
    return Failover(
        leader=_str(data.get("leader")) or None,
        member=_str(data.get("member")) or None,
        scheduled_at=_str(data.get("scheduled_at")) or None,
        mod_revision=mod_revision,
    )


def encode_failover(failover: Failover) -> str:
    """Patroni's manual_failover: only the fields that are set; an empty request is ``{}``."""
    data: dict[str, str] = {}
    if failover.leader:
        data["leader"] = failover.leader
    if failover.member:
        data["member"] = failover.member
    if failover.scheduled_at:
        data["scheduled_at"] = failover.scheduled_at
    return dumps(data)


# ---------------------------------------------------------------- history, status, failsafe


def decode_history(value: str) -> tuple[HistoryEntry, ...]:
    """``[[tl, lsn, reason, ts, new_leader], ...]``; rows of 3 or 4 (old Patroni) are kept, bad rows skipped."""
    data = _loads(value)
    if not isinstance(data, list):
        return ()
    entries = []
    for row in data:
        if not isinstance(row, list) or len(row) < 3:
            continue
        timeline, lsn = _int(row[0]), _int(row[1])
        if timeline is None or lsn is None:
            continue
        timestamp = _str(row[3]) if len(row) > 3 else None
        new_leader = _str(row[4]) if len(row) > 4 else None
        reason = row[2] if isinstance(row[2], str) else str(row[2])
        entries.append(HistoryEntry(timeline, lsn, reason, timestamp, new_leader))
    return tuple(entries)


def encode_history(history: Sequence[HistoryEntry]) -> str:
    rows: list[list[Any]] = []
    for entry in history:
        row: list[Any] = [entry.timeline, entry.lsn, entry.reason]
        if entry.timestamp is not None or entry.new_leader is not None:
            row.append(entry.timestamp)
        if entry.new_leader is not None:
            row.append(entry.new_leader)
        rows.append(row)
    return dumps(rows)


def decode_status(value: str) -> ClusterStatus:
    """``{"optime":..,"slots":{..},"retain_slots":[..]}``; a bare int is the legacy optime."""
    data = _loads(value)
    if isinstance(data, int) and not isinstance(data, bool):
        return ClusterStatus(optime=data)
    if not isinstance(data, dict):
        return ClusterStatus()
    slots = data.get("slots")
    if isinstance(slots, str):
        slots = _loads(slots)
    retain = data.get("retain_slots")
    if isinstance(retain, str):
        retain = _loads(retain)
    parsed_slots: dict[str, int] = {}
    if isinstance(slots, dict):
        for name, lsn in slots.items():
            number = _int(lsn)
            if number is not None:
                parsed_slots[str(name)] = number
    retain_slots = tuple(s for s in retain if isinstance(s, str)) if isinstance(retain, list) else ()
    return ClusterStatus(optime=_int(data.get("optime")), slots=parsed_slots, retain_slots=retain_slots)


def encode_status(status: ClusterStatus) -> str:
    """As Patroni's write_status: ``None`` and empty slots/retain_slots are left out."""
    data: dict[str, Any] = {}
    if status.optime is not None:
        data["optime"] = status.optime
    if status.slots:
        data["slots"] = dict(status.slots)
    if status.retain_slots:
        data["retain_slots"] = list(status.retain_slots)
    return dumps(data)


def decode_failsafe(value: str) -> dict[str, str] | None:
    data = _loads(value)
    if not isinstance(data, dict):
        return None
    return {str(k): v for k, v in data.items() if isinstance(v, str)}


def encode_failsafe(members: Mapping[str, str]) -> str:
    return dumps(dict(members))


# ---------------------------------------------------------------- the whole view


def build_view(rows: Iterable[Row | tuple[str, str, int, int, int]], prefix: str = "") -> ClusterView:
    """Build a ClusterView from the rows under ``prefix`` (keys may be absolute or relative to it)."""
    nodes: dict[str, tuple[str, int, int]] = {}  # key relative to the prefix: (value, mod_revision, lease)
    for key, value, mod_revision, _, lease in rows:
        if prefix and key.startswith(prefix):
            key = key[len(prefix) :]
        nodes[key] = (value, mod_revision, lease)
    config = nodes.get(CONFIG)
    leader = nodes.get(LEADER)
    sync = nodes.get(SYNC)
    failover = nodes.get(FAILOVER)
    history = nodes.get(HISTORY)
    status = nodes.get(STATUS) or nodes.get(LEADER_OPTIME)
    failsafe = nodes.get(FAILSAFE)
    initialize = nodes.get(INITIALIZE)
    members = sorted(
        (
            _decode_member_once(key[len(MEMBERS) :], value, mod_revision)
            for key, (value, mod_revision, _) in nodes.items()
            if key.startswith(MEMBERS) and key.count("/") == 1 and len(key) > len(MEMBERS)
        ),
        key=lambda m: m.name,
    )
    return ClusterView(
        initialize=initialize[0] if initialize else None,
        initialize_revision=initialize[1] if initialize else 0,
        config=decode_config(config[0]) if config else None,
        config_revision=config[1] if config else 0,
        leader=Leader(*leader) if leader else None,
        members=tuple(members),
        sync=_decode_sync_once(*sync[:2]) if sync else None,
        failover=decode_failover(*failover[:2]) if failover else None,
        history=_decode_history_once(history[0]) if history else (),
        status=_decode_status_once(status[0]) if status else ClusterStatus(),
        failsafe=decode_failsafe(failsafe[0]) if failsafe else None,
    )


# Every manager decodes the same keys again each loop; the decoded values are immutable, so one
# decoding of each serves every reader (the config, a mutable dict, is decoded for each).
_decode_member_once = functools.lru_cache(maxsize=256)(decode_member)
_decode_sync_once = functools.lru_cache(maxsize=16)(decode_sync)
_decode_history_once = functools.lru_cache(maxsize=16)(decode_history)
_decode_status_once = functools.lru_cache(maxsize=64)(decode_status)


def wakes_watcher(key: str, deleted: bool) -> bool:
    """Whether a change of ``key`` (relative to the prefix) should wake the HA loop early.

    Member puts happen every loop on every node, so only a member's disappearance wakes.
    """
    if key.startswith(MEMBERS):
        return deleted
    return key in (LEADER, CONFIG, STATUS, FAILOVER, SYNC, INITIALIZE)
