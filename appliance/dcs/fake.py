"""An in-memory DCS with etcd's semantics (revisions, leases, txn compares), shared by several fake nodes."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from appliance.dcs.base import DCSError
from appliance.dcs.formats import Row, cluster_prefix
from appliance.dcs.kv import ChangeTracker, Compare, Delete, LeaseNotFound, Op, Put
from appliance.dcs.session import KVSession

Listener = Callable[[str, int, bool], None]


@dataclass
class _Entry:
    value: str
    create_revision: int
    mod_revision: int
    lease: int


@dataclass
class _Lease:
    ttl: int
    refreshed_at: float


class FakeStore:
    """The shared "etcd": one per test, several FakeDCS nodes on it.

    Leases expire when ``clock() > last refresh + ttl`` (checked on every access, or by
    expire_leases()). ``available = False`` simulates a full outage for every node.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.available = True
        self.revision = 1
        self._lock = threading.RLock()
        self._kv: dict[str, _Entry] = {}
        self._leases: dict[int, _Lease] = {}
        self._next_lease = 0x7E57_0001
        self._events: deque[tuple[int, str, bool]] = deque(maxlen=10000)
        self._listeners: list[tuple[str, Listener]] = []

    # ------------------------------------------------------------ helpers for tests

    def raw(self, prefix: str = "") -> dict[str, str]:
        """Every key under ``prefix`` with its raw value (what etcdctl would show)."""
        with self._lock:
            self._expire()
            return {k: e.value for k, e in sorted(self._kv.items()) if k.startswith(prefix)}

    def entry(self, key: str) -> Row | None:
        with self._lock:
            self._expire()
            return self._row(key)

    def set_raw(self, key: str, value: str, lease: int = 0) -> int:
        """Write any value (garbage included), bypassing the outage flag."""
        with self._lock:
            return self._apply([Put(key, value, lease)])

    def expire_leases(self) -> None:
        with self._lock:
            self._expire()

    def revoke(self, lease_id: int) -> None:
        """Revoke a lease and delete its keys now (etcd's LeaseRevoke; a thawed stale etcd leader
        did this to a lease that was being kept alive, etcd#15247)."""
        with self._lock:
            if self._leases.pop(lease_id, None) is not None:
                self._apply([Delete(k) for k, e in list(self._kv.items()) if e.lease == lease_id])

    def lease_ids(self) -> list[int]:
        with self._lock:
            self._expire()
            return sorted(self._leases)

    # ------------------------------------------------------------ etcd operations

    def check(self) -> None:
        if not self.available:
            raise DCSError("the fake DCS is unavailable (simulated outage)")

    def range_prefix(self, prefix: str) -> tuple[list[Row], int]:
        with self._lock:
            self.check()
            self._expire()
            rows = [self._row(k) for k in sorted(self._kv) if k.startswith(prefix)]
            return [r for r in rows if r is not None], self.revision

    def get(self, key: str) -> Row | None:
        with self._lock:
            self.check()
            self._expire()
            return self._row(key)

    def txn(self, compares: Sequence[Compare], success: Sequence[Op]) -> tuple[bool, int]:
        with self._lock:
            self.check()
            self._expire()
            if not all(self._holds(c) for c in compares):
                return False, self.revision
            return True, self._apply(success)

    def put(self, key: str, value: str, lease: int = 0) -> int:
        return self.txn([], [Put(key, value, lease)])[1]

    def delete(self, key: str, prefix: bool = False) -> int:
        return self.txn([], [Delete(key, prefix)])[1]

    def lease_grant(self, ttl: int) -> int:
        with self._lock:
            self.check()
            self._expire()
            lease_id, self._next_lease = self._next_lease, self._next_lease + 1
            self._leases[lease_id] = _Lease(ttl, self.clock())
            return lease_id

    def lease_keepalive(self, lease_id: int) -> int:
        """Remaining TTL after the refresh, 0 if the lease is gone (as etcd answers)."""
        with self._lock:
            self.check()
            self._expire()
            lease = self._leases.get(lease_id)
            if lease is None:
                return 0
            lease.refreshed_at = self.clock()
            return lease.ttl

    def subscribe(self, prefix: str, listener: Listener, start_revision: int | None) -> None:
        """Deliver every change under ``prefix`` to ``listener``, replaying from ``start_revision``."""
        with self._lock:
            if start_revision is not None:
                for revision, key, deleted in list(self._events):
                    if revision >= start_revision and key.startswith(prefix):
                        listener(key, revision, deleted)
            self._listeners.append((prefix, listener))

    # ------------------------------------------------------------ internals

    def _row(self, key: str) -> Row | None:
        e = self._kv.get(key)
        return Row(key, e.value, e.mod_revision, e.create_revision, e.lease) if e else None

    def _holds(self, compare: Compare) -> bool:
        entry = self._kv.get(compare.key)
        if compare.target == "value":
            # etcd: a value compare against a missing key is false, whatever the operator.
            return entry is not None and entry.value == compare.value
        actual = 0
        if entry is not None:
            actual = {"create": entry.create_revision, "mod": entry.mod_revision, "lease": entry.lease}[compare.target]
        return actual == compare.value

    def _apply(self, ops: Sequence[Op]) -> int:
        """Apply ops at one new revision (none if nothing changed), as an etcd txn does."""
        for op in ops:
            if isinstance(op, Put) and op.lease and op.lease not in self._leases:
                raise LeaseNotFound(f"etcdserver: requested lease not found ({op.lease:x})")
        revision = self.revision + 1
        changes: list[tuple[str, bool]] = []
        for op in ops:
            if isinstance(op, Put):
                old = self._kv.get(op.key)
                created = old.create_revision if old else revision
                self._kv[op.key] = _Entry(op.value, created, revision, op.lease)
                changes.append((op.key, False))
            else:
                keys = [k for k in self._kv if k.startswith(op.key)] if op.prefix else [op.key]
                for key in keys:
                    if self._kv.pop(key, None) is not None:
                        changes.append((key, True))
        if changes:
            self.revision = revision
            self._publish(revision, changes)
        return self.revision

    def _expire(self) -> None:
        now = self.clock()
        dead = {i for i, lease in self._leases.items() if now > lease.refreshed_at + lease.ttl}
        if not dead:
            return
        for lease_id in dead:
            del self._leases[lease_id]
        self._apply([Delete(k) for k, e in list(self._kv.items()) if e.lease in dead])

    def _publish(self, revision: int, changes: list[tuple[str, bool]]) -> None:
        for key, deleted in changes:
            self._events.append((revision, key, deleted))
            for prefix, listener in self._listeners:
                if key.startswith(prefix):
                    listener(key, revision, deleted)


class FakeBackend:
    """One node's view of the FakeStore; ``available = False`` cuts only this node off."""

    def __init__(self, store: FakeStore) -> None:
        self.store = store
        self.available = True
        self._subscribed = False
        self._closed = False

    def _check(self) -> None:
        if not self.available:
            raise DCSError("this node cannot reach the fake DCS (simulated partition)")

    def range_prefix(self, prefix: str) -> tuple[list[Row], int]:
        self._check()
        return self.store.range_prefix(prefix)

    def get(self, key: str) -> Row | None:
        self._check()
        return self.store.get(key)

    def txn(self, compares: Sequence[Compare], success: Sequence[Op]) -> tuple[bool, int]:
        self._check()
        return self.store.txn(compares, success)

    def put(self, key: str, value: str, lease: int = 0) -> int:
        self._check()
        return self.store.put(key, value, lease)

    def delete(self, key: str, prefix: bool = False) -> int:
        self._check()
        return self.store.delete(key, prefix)

    def lease_grant(self, ttl: int) -> tuple[int, float]:
        self._check()
        sent = self.store.clock()
        return self.store.lease_grant(ttl), sent

    def lease_keepalive(self, lease_id: int) -> tuple[int, float]:
        self._check()
        sent = self.store.clock()
        return self.store.lease_keepalive(lease_id), sent

    def watch(self, tracker: ChangeTracker, start_revision: int | None) -> None:
        if self._subscribed:
            return
        self._subscribed = True

        def deliver(key: str, revision: int, deleted: bool) -> None:
            if self.available and not self._closed:
                tracker.note(key, revision, deleted)

        self.store.subscribe(tracker.prefix, deliver, start_revision)

    def close(self) -> None:
        self._closed = True


class FakeDCS(KVSession):
    """The DCS Protocol in memory: ``FakeDCS(store, "node1")``; several nodes share one FakeStore."""

    def __init__(
        self,
        store: FakeStore,
        name: str,
        ttl: int = 30,
        scope: str = "pgappliance",
        namespace: str = "/service/",
    ) -> None:
        self.backend = FakeBackend(store)
        super().__init__(self.backend, cluster_prefix(namespace, scope), name, ttl)

    @property
    def available(self) -> bool:
        return self.backend.available

    @available.setter
    def available(self, value: bool) -> None:
        self.backend.available = value
