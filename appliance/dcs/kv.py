"""Key-value primitives under the DCS semantics: the backend interface (etcd or fake) and change tracking."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from appliance.dcs.base import DCSError
from appliance.dcs.formats import Row, wakes_watcher


class LeaseNotFound(DCSError):
    """The lease a write referred to has expired or been revoked: grant a new one before retrying."""


@dataclass(frozen=True)
class Compare:
    """``target(key) == value`` inside a transaction; a missing key has create/mod revision and lease 0."""

    key: str
    target: Literal["create", "mod", "value", "lease"]
    value: int | str


@dataclass(frozen=True)
class Put:
    key: str
    value: str
    lease: int = 0


@dataclass(frozen=True)
class Delete:
    key: str
    prefix: bool = False


Op = Put | Delete


class Backend(Protocol):
    """What the DCS session needs from a store; every method raises DCSError when it cannot answer."""

    def range_prefix(self, prefix: str) -> tuple[list[Row], int]:
        """All keys under ``prefix``, linearizably, and the store revision of the answer."""
        ...

    def get(self, key: str) -> Row | None:
        """One key, linearizably."""
        ...

    def txn(self, compares: Sequence[Compare], success: Sequence[Op]) -> tuple[bool, int]:
        """Apply ``success`` if every compare holds; returns (succeeded, revision after the txn)."""
        ...

    def put(self, key: str, value: str, lease: int = 0) -> int:
        """Unconditional put; returns the new revision. LeaseNotFound if ``lease`` is gone."""
        ...

    def delete(self, key: str, prefix: bool = False) -> int:
        """Delete a key (or every key under a prefix); returns the revision after the delete."""
        ...

    def lease_grant(self, ttl: int) -> tuple[int, float]:
        """A new lease; returns (lease id, clock time at which the successful request was sent)."""
        ...

    def lease_keepalive(self, lease_id: int) -> tuple[int, float]:
        """Refresh a lease; returns (remaining TTL, send time). A TTL <= 0 means it has expired."""
        ...

    def watch(self, tracker: ChangeTracker, start_revision: int | None) -> None:
        """Make sure changes under the tracker's prefix reach it from ``start_revision`` on (idempotent)."""
        ...

    def close(self) -> None: ...


class ChangeTracker:
    """Collects watch events and lets wait() block until someone else changed a watched key.

    Our own writes are not news to us: their revisions are recorded and skipped, so a leader that
    writes ``status`` every loop does not wake itself up again and again.
    """

    _KEEP = 1024

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._cond = threading.Condition()
        self._pending: set[int] = set()
        self._own: deque[int] = deque(maxlen=self._KEEP)
        self._forced = False

    def own_write(self, revision: int) -> None:
        with self._cond:
            self._own.append(revision)
            self._pending.discard(revision)

    def note(self, key: str, revision: int, deleted: bool) -> None:
        """One event from the watch (``key`` absolute)."""
        rel = key[len(self.prefix) :] if key.startswith(self.prefix) else None
        if rel is None or not wakes_watcher(rel, deleted):
            return
        with self._cond:
            if revision in self._own:
                return
            self._pending.add(revision)
            if len(self._pending) > self._KEEP:
                self._pending = set(sorted(self._pending)[-self._KEEP :])
            self._cond.notify_all()

    def force(self) -> None:
        """Events may have been lost (compaction, resync): the next wait returns at once."""
        with self._cond:
            self._forced = True
            self._cond.notify_all()

    def wait_beyond(self, revision: int, timeout: float) -> int | None:
        """Block until a relevant change newer than ``revision``; returns its revision, or None on timeout."""
        with self._cond:
            self._pending = {r for r in self._pending if r > revision and r not in self._own}
            if not self._cond.wait_for(lambda: self._forced or self._fresh(revision), max(timeout, 0.0)):
                return None
            self._forced = False
            newest = max(self._pending, default=revision)
            self._pending.clear()
            return newest

    def _fresh(self, revision: int) -> bool:
        return any(r > revision and r not in self._own for r in self._pending)
