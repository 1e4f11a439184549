"""The local channel between the manager and the API: an atomically replaced JSON state file.

The manager rewrites ``<run_dir>/state.json`` every tick. Monotonic timestamps are comparable across
processes on one host (CLOCK_MONOTONIC), so the API can tell fresh state from stale without trusting
wall clocks: a health answer comes from fresh state only.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

STATE_FILE = "state.json"


def state_path(run_dir: str) -> Path:
    return Path(run_dir) / STATE_FILE


def write_state(run_dir: str, doc: dict[str, Any]) -> None:
    """Atomically replace the state file (write to a temp file, fsync-free rename)."""
    path = state_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".state.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh, separators=(",", ":"), default=str)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_state(run_dir: str) -> dict[str, Any] | None:
    """The manager's last published state, or None when there is none (or it is unreadable)."""
    try:
        with open(state_path(run_dir)) as fh:
            doc = json.load(fh)
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


class StateCache:
    """read_state() that parses the file again only when it changed (health checks come often)."""

    def __init__(self, run_dir: str) -> None:
        self._path = state_path(run_dir)
        self._lock = threading.Lock()
        self._key: tuple[int, int, int] | None = None
        self._doc: dict[str, Any] | None = None

    def read(self) -> dict[str, Any] | None:
        try:
            st = os.stat(self._path)
        except OSError:
            return None
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            if key != self._key:
                self._doc = read_state(str(self._path.parent))
                self._key = key if self._doc is not None else None
            return self._doc


def staleness(doc: dict[str, Any], now: float | None = None) -> str | None:
    """Why ``doc`` must not be trusted (manager dead, hung, or too old), or None when it is fresh."""
    now = time.monotonic() if now is None else now
    updated = doc.get("updated_mono")
    max_age = doc.get("max_age")
    if not isinstance(updated, (int, float)) or not isinstance(max_age, (int, float)):
        return "manager state is malformed"
    age = now - updated
    if age > max_age:
        return f"manager state is {age:.1f}s old (limit {max_age:.1f}s): manager dead or hung"
    pid = doc.get("pid")
    if isinstance(pid, int) and not _alive(pid):
        return f"manager (pid {pid}) is not running"
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
