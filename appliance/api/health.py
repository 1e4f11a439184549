"""Pure evaluation of Patroni's health-check paths against the manager's published state."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from appliance.channel.state import StateDoc, lease_of, postgres_of, staleness
from appliance.core.model import ReplicationState, Role
from appliance.core.tags import Tags
from appliance.core.wal import wal_lag

_UNITS = {"": 1, "b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3, "tb": 1024**4}
_LAG_RE = re.compile(r"^\s*(\d+)\s*(b|[kmgt]b)?\s*$", re.IGNORECASE)  # PostgreSQL's memory units


def parse_lag(value: str | None) -> int | None:
    """``1048576``, ``1024kB``, ``16MB``, ``1GB`` -> bytes; None when absent or unparsable (no limit)."""
    if value is None:
        return None
    match = _LAG_RE.match(value)
    if not match:
        return None
    return int(match.group(1)) * _UNITS[(match.group(2) or "").lower()]


@dataclass(frozen=True)
class Verdict:
    code: int
    reason: str = ""


OK = Verdict(200)


def classify(path: str) -> str | None:
    """Map a request path to a check name the way Patroni's substring dispatch does."""
    p = path.strip("/").split("?")[0].lower().replace("_", "-")
    table = [
        (("",), "primary"),
        (("standby-leader",), "standby_leader"),
        (("read-only-sync", "read-only-synchronous"), "read_only_sync"),
        (("read-only-quorum",), "read_only_quorum"),
        (("read-only", "readonly"), "read_only"),
        (("leader",), "leader"),
        (("primary", "master", "read-write"), "primary"),
        (("asynchronous", "async"), "async"),
        (("synchronous", "sync"), "sync"),
        (("quorum",), "quorum"),
        (("replica",), "replica"),
        (("health",), "health"),
        (("liveness",), "liveness"),
        (("readiness",), "readiness"),
    ]
    if p == "":
        return "primary"
    for needles, name in table[1:]:
        if any(n in p for n in needles):
            return name
    return None


def evaluate(check: str, args: Mapping[str, str], doc: StateDoc | None, now: float) -> Verdict:
    """200 or 503 (with a reason) for one health check."""
    if doc is None:
        return Verdict(503, "no state from the manager yet")
    if check == "liveness":
        return _liveness(doc, now)
    stale = staleness(doc, now)
    if stale:
        return Verdict(503, stale)
    fn = _CHECKS.get(check)
    if fn is None:
        return Verdict(503, f"unknown check {check}")
    return fn(doc, args, now)


def _holds_lock(doc: StateDoc, now: float) -> str | None:
    lease = lease_of(doc)
    if not lease.get("holder"):
        return "this node does not hold the leader lock"
    expires = lease.get("expires_mono")
    if not isinstance(expires, (int, float)) or now >= expires:
        return "the leader lease could not be renewed in time"
    return None


def _primary(doc: StateDoc, args: Mapping[str, str], now: float) -> Verdict:
    why = _holds_lock(doc, now)
    if why:
        return Verdict(503, why)
    pg = postgres_of(doc)
    if not pg.get("running"):
        return Verdict(503, "PostgreSQL is not running")
    if pg.get("role") != Role.PRIMARY:
        return Verdict(503, "holding the lock but PostgreSQL is not read-write yet")
    return OK


def _leader(doc: StateDoc, args: Mapping[str, str], now: float) -> Verdict:
    why = _holds_lock(doc, now)
    return Verdict(503, why) if why else OK


def _standby_leader(doc: StateDoc, args: Mapping[str, str], now: float) -> Verdict:
    return Verdict(503, "this cluster is not a standby cluster")


def _tags_match(doc: StateDoc, args: Mapping[str, str]) -> str | None:
    tags = Tags.from_json(doc.get("tags")).values
    for key, want in args.items():
        if not key.startswith("tag_"):
            continue
        name = key[4:]
        if name not in tags:
            return f"tag {name} is not set"
        if str(tags[name]).lower() != str(want).lower():
            return f"tag {name} is {tags[name]!r}, not {want!r}"
    return None


def lag_bytes(doc: StateDoc) -> int | None:
    pg = postgres_of(doc)
    replayed = pg.get("replay_lsn")
    if not isinstance(replayed, int):
        return None
    candidates = [v for v in (doc.get("cluster_optime"), pg.get("receive_lsn")) if isinstance(v, int)]
    if not candidates:
        return 0
    return wal_lag(max(candidates), replayed)


def _replica(doc: StateDoc, args: Mapping[str, str], now: float) -> Verdict:
    pg = postgres_of(doc)
    if not pg.get("running"):
        return Verdict(503, "PostgreSQL is not running")
    if pg.get("role") != Role.REPLICA:
        return Verdict(503, f"role is {pg.get('role')}, not replica")
    problem = doc.get("replication_problem")
    if problem:
        return Verdict(503, f"stale replica: {problem}")
    if Tags.from_json(doc.get("tags")).noloadbalance:
        return Verdict(503, "tagged noloadbalance")
    want_state = args.get("replication_state")
    if want_state and pg.get("replication_state") != want_state:
        return Verdict(503, f"replication_state is {pg.get('replication_state')}, not {want_state}")
    limit = parse_lag(args.get("lag"))
    lag = lag_bytes(doc)
    if limit is not None and lag is not None and lag > limit:
        return Verdict(503, f"lag {lag} bytes exceeds {limit}")
    why = _tags_match(doc, args)
    return Verdict(503, why) if why else OK


def _read_only(doc: StateDoc, args: Mapping[str, str], now: float) -> Verdict:
    primary = _primary(doc, args, now)
    return primary if primary.code == 200 else _replica(doc, args, now)


def _listed(doc: StateDoc) -> bool:
    """Named in the sync key: a synchronous standby, or in quorum mode a voter (a quorum standby)."""
    return doc.get("name") in ((doc.get("cluster") or {}).get("sync_standby") or [])


def _quorum_mode(doc: StateDoc) -> bool:
    return bool((doc.get("cluster") or {}).get("quorum"))


def _sync(doc: StateDoc, args: Mapping[str, str], now: float) -> Verdict:
    if not doc.get("dcs_ok"):
        return Verdict(503, "DCS unreachable: sync state unknown")
    if _quorum_mode(doc):
        return Verdict(503, "synchronous_mode is quorum: no synchronous standby, see /quorum")
    if not _listed(doc):
        return Verdict(503, "not a synchronous standby")
    return _replica(doc, args, now)


def _quorum(doc: StateDoc, args: Mapping[str, str], now: float) -> Verdict:
    if not doc.get("dcs_ok"):
        return Verdict(503, "DCS unreachable: sync state unknown")
    if not _quorum_mode(doc):
        return Verdict(503, "synchronous_mode is not quorum")
    if not _listed(doc):
        return Verdict(503, "not a quorum standby (not a voter in the sync key)")
    return _replica(doc, args, now)


def _async(doc: StateDoc, args: Mapping[str, str], now: float) -> Verdict:
    if not doc.get("dcs_ok"):
        return Verdict(503, "DCS unreachable: sync state unknown")
    if _listed(doc):
        kind = "quorum" if _quorum_mode(doc) else "synchronous"
        return Verdict(503, f"a {kind} standby, not asynchronous")
    return _replica(doc, args, now)


def _read_only_sync(doc: StateDoc, args: Mapping[str, str], now: float) -> Verdict:
    primary = _primary(doc, args, now)
    return primary if primary.code == 200 else _sync(doc, args, now)


def _read_only_quorum(doc: StateDoc, args: Mapping[str, str], now: float) -> Verdict:
    primary = _primary(doc, args, now)
    return primary if primary.code == 200 else _quorum(doc, args, now)


def _health(doc: StateDoc, args: Mapping[str, str], now: float) -> Verdict:
    if not postgres_of(doc).get("running"):
        return Verdict(503, "PostgreSQL is not running")
    why = _tags_match(doc, args)
    return Verdict(503, why) if why else OK


def _liveness(doc: StateDoc, now: float) -> Verdict:
    if doc.get("paused"):
        return OK
    ttl = float(doc.get("ttl") or 30)
    limit = ttl if postgres_of(doc).get("role") == Role.PRIMARY else 2 * ttl
    started = doc.get("loop_started_mono")
    if not isinstance(started, (int, float)):
        return Verdict(503, "the HA loop has not run yet")
    age = now - started
    if age > limit:
        return Verdict(503, f"the HA loop last ran {age:.1f}s ago (limit {limit:.0f}s)")
    return OK


def _readiness(doc: StateDoc, args: Mapping[str, str], now: float) -> Verdict:
    if _holds_lock(doc, now) is None:
        return OK
    pg = postgres_of(doc)
    if not pg.get("running"):
        return Verdict(503, "PostgreSQL is not running")
    if pg.get("replication_state") != ReplicationState.STREAMING:
        return Verdict(503, f"replication_state is {pg.get('replication_state')}, not streaming")
    if doc.get("replication_problem"):
        return Verdict(503, f"stale replica: {doc['replication_problem']}")
    limit = parse_lag(args.get("lag"))
    if limit is None:
        limit = int(doc.get("maximum_lag_on_failover") or 1048576)
    lag = lag_bytes(doc)
    if lag is not None and lag > limit:
        return Verdict(503, f"lag {lag} bytes exceeds {limit}")
    return OK


_CHECKS = {
    "primary": _primary,
    "leader": _leader,
    "standby_leader": _standby_leader,
    "replica": _replica,
    "read_only": _read_only,
    "sync": _sync,
    "async": _async,
    "read_only_sync": _read_only_sync,
    "quorum": _quorum,
    "read_only_quorum": _read_only_quorum,
    "health": _health,
    "readiness": _readiness,
}
