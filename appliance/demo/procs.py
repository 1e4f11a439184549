"""Process helpers for the demo runner: /proc trees, pid files, signals and waiting for exits."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path

PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name is in parentheses and may hold spaces or parentheses itself.
    return raw[raw.rfind(")") + 2 :].split()


def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (an orphan nobody reaped yet is dead)."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def cmdline(pid: int) -> list[str]:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def read_pidfile(path: str | Path) -> int | None:
    """The pid on the first line of ``path``, or None if the file is missing or garbled."""
    try:
        first = Path(path).read_text().split("\n", 1)[0].strip()
    except (FileNotFoundError, PermissionError):
        return None
    return int(first) if first.isdigit() else None


def live_pid_from(path: str | Path, must_contain: str) -> int | None:
    """The pid in ``path`` if that process is alive and its command line mentions ``must_contain``.

    The check guards against a stale pid file whose pid was reused by an unrelated process.
    """
    pid = read_pidfile(path)
    if pid is None or not pid_alive(pid):
        return None
    return pid if any(must_contain in part for part in cmdline(pid)) else None


def children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (breadth first), not including ``pid``."""
    tree = children_map()
    found: list[int] = []
    todo = list(tree.get(pid, []))
    while todo:
        child = todo.pop(0)
        found.append(child)
        todo.extend(tree.get(child, []))
    return [p for p in found if pid_alive(p)]


def postmaster_pid(data_dir: str | Path) -> int | None:
    """The postmaster of ``data_dir``: not a supervisord descendant, since pg_ctl detaches it."""
    return live_pid_from(Path(data_dir) / "postmaster.pid", "postgres")


def signal_pids(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def wait_gone(
    pids: Iterable[int],
    timeout: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[int]:
    """Wait until every pid has exited; returns those still alive at the deadline."""
    remaining = list(pids)
    deadline = clock() + timeout
    while True:
        remaining = [pid for pid in remaining if pid_alive(pid)]
        if not remaining or clock() >= deadline:
            return remaining
        sleep(0.1)


def pids_mentioning(text: str) -> list[int]:
    """Live processes whose command line mentions ``text`` (e.g. a demo directory)."""
    me = os.getpid()
    found = []
    for entry in PROC.iterdir():
        if entry.name.isdigit() and int(entry.name) != me:
            pid = int(entry.name)
            if pid_alive(pid) and any(text in part for part in cmdline(pid)):
                found.append(pid)
    return found
