"""Timeline history files (pg_wal/<TLI>.history): which timeline switched at which LSN, and why."""

from __future__ import annotations

import os

from appliance.core.wal import parse_lsn

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
