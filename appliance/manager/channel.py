"""The local channels between a node's processes: atomically replaced JSON files (the manager's
state for the API, the lease order and report between the manager and the fencer, the failsafe record).

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
from collections.abc import Callable
from pathlib import Path
from typing import Any

STATE_FILE = "state.json"


def state_path(run_dir: str) -> Path:
    return Path(run_dir) / STATE_FILE


def write_json(path: Path, doc: Any, default: Callable[[Any], Any] | None = None) -> None:
    """Atomically replace ``path`` (temp file + fsync-free rename): a reader never sees half a document."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh, separators=(",", ":"), default=default)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_json(path: Path) -> Any:
    """The document in ``path``; None when it is missing or unreadable."""
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def write_state(run_dir: str, doc: dict[str, Any]) -> None:
    write_json(state_path(run_dir), doc, default=str)


def read_state(run_dir: str) -> dict[str, Any] | None:
    """The manager's last published state, or None when there is none (or it is unreadable)."""
    doc = read_json(state_path(run_dir))
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
    if isinstance(pid, int) and not process_exists(pid):
        return f"manager (pid {pid}) is not running"
    return None


def process_exists(pid: int) -> bool:
    """kill(pid, 0): the process exists (another user's counts too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
