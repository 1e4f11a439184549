"""Timeline lineage, pure: the leader's history keeps the DCS ``history`` true, and a replica whose
own switches differ from it has diverged even on the same timeline number."""

from __future__ import annotations

from appliance.core.model import HistoryEntry


def reconciled_history(dcs: tuple[HistoryEntry, ...], own: tuple[HistoryEntry, ...],
                       keep: int) -> tuple[HistoryEntry, ...] | None:
    """The DCS history rewritten to the leader's lineage (``own``: its timeline history file), or
    None when it already is. Rows that agree keep their reason, time and new leader; rows of
    timelines the leader does not descend from (a node that promoted on its own) are dropped."""
    if not own:
        return None
    by_tl = {h.timeline: h for h in dcs}
    merged = [known if (known := by_tl.get(h.timeline)) is not None and known.lsn == h.lsn else h for h in own]
    if keep > 0:
        merged = merged[-keep:]
    current = dcs[-keep:] if keep > 0 else dcs
    if [(h.timeline, h.lsn) for h in merged] == [(h.timeline, h.lsn) for h in current]:
        return None
    return tuple(merged)


def forked_elsewhere(dcs: tuple[HistoryEntry, ...], own: tuple[HistoryEntry, ...], position: int) -> bool:
    """True when one of our switches left a timeline at another LSN than the cluster's history says
    and our WAL goes past the earlier of the two points: from there on our WAL is not the leader's."""
    theirs = {h.timeline: h.lsn for h in dcs}
    for h in own:
        lsn = theirs.get(h.timeline)
        if lsn is not None and lsn != h.lsn and position > min(lsn, h.lsn):
            return True
    return False


STUCK_AFTER = 10.0  # seconds a replica may be without a stream from a running leader


def replica_problem(diverged: bool, not_streaming_since: float | None, now: float) -> str | None:
    """Why this replica must not serve reads (None: it may): it diverged from the leader's
    timeline, or it has not streamed from a running leader for STUCK_AFTER seconds."""
    if diverged:
        return "diverged from the leader's timeline"
    if not_streaming_since is not None and now - not_streaming_since > STUCK_AFTER:
        return f"not streaming from the leader for {now - not_streaming_since:.0f}s"
    return None


def merged_history(known: tuple[HistoryEntry, ...], own: tuple[HistoryEntry, ...], leader: str,
                   timestamp: str) -> tuple[HistoryEntry, ...]:
    """A new primary's history file (``own``) as the DCS rows: a row the DCS already has with the
    same switch LSN is kept as it was, any other is stamped with ``timestamp`` and ``leader``."""
    if not own:
        return known
    by_tl = {h.timeline: h for h in known}
    return tuple(k if (k := by_tl.get(h.timeline)) is not None and k.lsn == h.lsn
                 else HistoryEntry(h.timeline, h.lsn, h.reason, timestamp, leader) for h in own)
