"""Timeline history files (pg_wal/<TLI>.history): which timeline switched at which LSN, and why."""

from __future__ import annotations

import os

from appliance.core.wal import format_lsn, parse_lsn

Switch = tuple[int, int, str]  # (parent timeline, LSN where it ended, reason)


def history_path(data_dir: str, timeline: int) -> str:
    return os.path.join(data_dir, "pg_wal", f"{timeline:08X}.history")


def parse_history(text: str) -> tuple[Switch, ...]:
    """The switches of one history file; comment, blank and malformed lines are skipped."""
    switches: list[Switch] = []
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) < 2 or not parts[0].strip().isdigit():
            continue
        try:
            lsn = parse_lsn(parts[1].strip())
        except ValueError:
            lsn = None
        if lsn is None:
            continue
        switches.append((int(parts[0]), lsn, parts[2].strip() if len(parts) > 2 else ""))
    return tuple(switches)


def render_history(switches: tuple[Switch, ...]) -> str:
    """A history file's text: one ``parent<TAB>LSN<TAB>reason`` line per switch, oldest first."""
    return "".join(f"{tl}\t{format_lsn(lsn)}\t{' '.join(reason.split())}\n" for tl, lsn, reason in switches)


def reserved_timelines(switches: tuple[Switch, ...], current: int) -> dict[int, str]:
    """The history files (timeline -> text) of the timelines that the cluster's history says others
    created from ``current`` or later: PostgreSQL promotes to the newest timeline whose history
    file it finds, plus one. Without them, a node that never saw a timeline that another node
    created (and then lost, before anyone followed it) would create it again from another point:
    two different histories under one timeline ID, which neither streaming nor pg_rewind can tell
    apart (PostgreSQL avoids that with a shared WAL archive, which the appliance may not have)."""
    ordered = tuple(sorted(switches))
    return {tl + 1: render_history(tuple(s for s in ordered if s[0] <= tl))
            for tl, _lsn, _reason in ordered if tl >= current}
