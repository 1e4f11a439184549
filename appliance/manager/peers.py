"""Ask every other member's REST API for its /patroni status, in parallel, with a short timeout."""

from __future__ import annotations

from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from appliance.core.model import Member, PgState
from appliance.core.state import PeerStatus
from appliance.core.tags import Tags
from appliance.net.http import Client, request

PEER_TIMEOUT = 2.0  # Patroni's healthiest-node probe timeout
# For the last leader, gone from the DCS, asked during a leader race whether it still accepts writes
# (mostly a crashed node: its probe must not add seconds to the failover; an API that cannot answer
# within it counts as not writable), and for the members a paused primary without the DCS asks (an
# isolated one must demote before its lease can run out, after a DCS attempt of up to retry_timeout).
QUICK_TIMEOUT = 0.5


class PeerFetcher(Protocol):
    """GET /patroni of each member (``quick``: the names asked with QUICK_TIMEOUT)."""

    def __call__(self, members: list[Member], *, quick: Collection[str] = ()) -> tuple[PeerStatus, ...]: ...


def wal_position(doc: dict[str, Any]) -> int | None:
    """The WAL position a /patroni answer reports (location on a primary, max(received, replayed) else)."""
    xlog = doc.get("xlog") or {}
    values = [xlog.get(k) for k in ("location", "received_location", "replayed_location")]
    ints = [v for v in values if isinstance(v, int)]
    return max(ints) if ints else None


def parse_status(name: str, doc: dict[str, Any]) -> PeerStatus:
    writable = doc.get("postgres_writable")  # the fencer's sight, now (the rest: the manager's last state)
    age = doc.get("state_age")
    state = doc.get("state")
    return PeerStatus(name=name, reachable=True, role=doc.get("role"), running=state == PgState.RUNNING,
                      starting=state in (PgState.STARTING, PgState.RESTARTING),
                      wal_position=wal_position(doc), tags=Tags.from_json(doc.get("tags")),
                      writable=writable if isinstance(writable, bool) else None,
                      published_ago=float(age) if isinstance(age, (int, float)) and not isinstance(age, bool)
                      and age >= 0 else None)


def fetch_one(member: Member, timeout: float, client: Client | None = None) -> PeerStatus:
    """A peer's /patroni (a 503 still carries the status document), its certificate verified."""
    if not member.api_url:
        return PeerStatus(name=member.name, reachable=False)
    try:
        doc = request(member.api_url, client, timeout=timeout, authenticate=False).json()
    except Exception:  # unreachable, refused, bad certificate: not a candidate either way
        return PeerStatus(name=member.name, reachable=False)
    if not isinstance(doc, dict):
        return PeerStatus(name=member.name, reachable=False)
    return parse_status(member.name, doc)


def fetch_peers(members: list[Member], timeout: float = PEER_TIMEOUT, client: Client | None = None,
                quick: Collection[str] = ()) -> tuple[PeerStatus, ...]:
    """Every member's status; unreachable ones come back with reachable=False. Those named in
    ``quick`` get QUICK_TIMEOUT (a node that may be down must not slow the race down)."""
    if not members:
        return ()
    with ThreadPoolExecutor(max_workers=min(8, len(members))) as pool:
        return tuple(pool.map(lambda m: fetch_one(m, min(timeout, QUICK_TIMEOUT) if m.name in quick else timeout,
                                                  client), members))
