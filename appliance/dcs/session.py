"""The DCS semantics (Patroni's keys, lease, CAS rules, skip-if-unchanged) on top of any kv Backend."""

from __future__ import annotations

import logging
import threading
from typing import Any

from appliance.core.model import ClusterStatus, ClusterView, Failover, HistoryEntry, Member
from appliance.dcs import formats as f
from appliance.dcs.base import DCSError
from appliance.dcs.kv import Backend, ChangeTracker, Compare, Delete, LeaseNotFound, Op, Put

log = logging.getLogger(__name__)


class KVSession:
    """One process's session with the cluster prefix: implements the DCS Protocol of base.py.

    One lease carries ``leader`` and ``members/<name>``. The values last written or read are
    remembered (value, lease) per key so that unchanged member/status/failsafe puts are skipped.
    """

    def __init__(
        self,
        backend: Backend,
        prefix: str,
        name: str,
        ttl: int,
    ) -> None:
        if not name or "/" in name:
            raise ValueError(f"member name {name!r} must be a non-empty name without '/'")
        if ttl < 1:
            raise ValueError(f"ttl must be >= 1 second, got {ttl}")
        self.name = name
        self.prefix = prefix
        self._backend = backend
        self._ttl = ttl
        self._lock = threading.RLock()
        self._lease: int | None = None
        self._lease_ttl = 0
        self._known: dict[str, tuple[str, int]] = {}
        self._seen_revision = 0
        self._tracker = ChangeTracker(prefix)

    # ------------------------------------------------------------ reads and the lease

    def read(self) -> ClusterView:
        rows, revision = self._backend.range_prefix(self.prefix)
        view = f.build_view(rows, self.prefix)
        with self._lock:
            self._known = {row.key[len(self.prefix) :]: (row.value, row.lease) for row in rows}
            self._seen_revision = max(self._seen_revision, revision)
        return view

    @property
    def lease_id(self) -> int | None:
        return self._lease

    def keepalive(self) -> float:
        with self._lock:
            if self._lease is not None and self._lease_ttl == self._ttl:
                remaining, sent = self._backend.lease_keepalive(self._lease)
                if remaining > 0:
                    return sent
                if self._lease_carries_keys(self._lease):
                    # A member that lost touch (an etcd leader frozen and thawed) may answer "expired"
                    # for a lease the quorum keeps: a linearizable read still shows our keys on it.
                    # Ask another member; never give up a lease the cluster still holds.
                    log.warning("an etcd member answered that lease %x expired, but the quorum still holds "
                                "keys on it: asking another member", self._lease)
                    distrust = getattr(self._backend, "distrust_current", None)
                    if distrust is not None:
                        distrust()
                    remaining, sent = self._backend.lease_keepalive(self._lease)
                    if remaining > 0:
                        return sent
                    raise DCSError(f"etcd members disagree whether lease {self._lease:x} is alive")
                log.warning("etcd lease %x has expired; granting a new one", self._lease)
            return self._grant()

    def _lease_carries_keys(self, lease: int) -> bool:
        """A linearizable read (quorum-confirmed): does any key of the prefix still carry ``lease``?
        Keys of an expired lease are deleted with it."""
        rows, _ = self._backend.range_prefix(self.prefix)
        return any(row.lease == lease for row in rows)

    @property
    def lease_ttl(self) -> int:
        with self._lock:
            return self._lease_ttl if self._lease is not None else self._ttl

    def set_retry_timeout(self, seconds: float) -> None:
        """Backends without a request budget of their own (the in-memory store) ignore it."""

    def set_ttl(self, ttl: int) -> None:
        if ttl < 1:
            raise ValueError(f"ttl must be >= 1 second, got {ttl}")
        with self._lock:
            self._ttl = ttl

    def _grant(self) -> float:
        # The previous lease (if any) is left to expire: the leader key moves over in update_leader().
        lease, sent = self._backend.lease_grant(self._ttl)
        self._lease, self._lease_ttl = lease, self._ttl
        return sent

    def _ensure_lease(self) -> int:
        if self._lease is None:
            self._grant()
        assert self._lease is not None
        return self._lease

    # ------------------------------------------------------------ write helpers

    def _key(self, rel: str) -> str:
        return self.prefix + rel

    def _wrote(self, rel: str, value: str | None, lease: int, revision: int) -> None:
        if value is None:
            self._known.pop(rel, None)
        else:
            self._known[rel] = (value, lease)
        self._tracker.own_write(revision)

    def _put(self, rel: str, value: str, lease: int = 0) -> None:
        with self._lock:
            try:
                revision = self._backend.put(self._key(rel), value, lease)
            except Exception:
                self._known.pop(rel, None)
                raise
            self._wrote(rel, value, lease, revision)

    def _txn(self, rel: str, compare: Compare, op: Op) -> bool:
        with self._lock:
            try:
                ok, revision = self._backend.txn([compare], [op])
            except Exception:
                self._known.pop(rel, None)
                raise
            if not ok:
                self._known.pop(rel, None)
                return False
            if isinstance(op, Put):
                self._wrote(rel, op.value, op.lease, revision)
            else:
                self._wrote(rel, None, 0, revision)
            return True

    def _cas_put(self, rel: str, value: str, expected_revision: int | None) -> bool:
        """Create-only when ``expected_revision`` is None or 0, else compare-and-swap on mod_revision."""
        if expected_revision:
            compare = Compare(self._key(rel), "mod", expected_revision)
        else:
            compare = Compare(self._key(rel), "create", 0)
        return self._txn(rel, compare, Put(self._key(rel), value))

    def _skip_unchanged(self, rel: str, value: str, lease: int = 0) -> bool:
        return self._known.get(rel) == (value, lease)

    # ------------------------------------------------------------ members and the leader lock

    def touch_member(self, member: Member) -> None:
        if member.name != self.name:
            raise ValueError(f"touch_member({member.name!r}) from session {self.name!r}: publish only yourself")
        rel, value = f.MEMBERS + self.name, f.encode_member(member)
        with self._lock:
            lease = self._ensure_lease()
            if self._skip_unchanged(rel, value, lease):
                return
            try:
                self._put(rel, value, lease)
            except LeaseNotFound:
                log.warning("etcd lease %x vanished; granting a new one for %s", lease, rel)
                self._lease = None
                self._put(rel, value, self._ensure_lease())

    def acquire_leader(self) -> bool:
        with self._lock:
            try:
                return self._create_leader(self._ensure_lease())
            except LeaseNotFound:
                # Our lease expired between keepalive and now: a fresh lease is as good for a new lock.
                self._lease = None
                return self._create_leader(self._ensure_lease())

    def _create_leader(self, lease: int) -> bool:
        key = self._key(f.LEADER)
        if self._txn(f.LEADER, Compare(key, "create", 0), Put(key, self.name, lease)):
            return True
        # A retried request may have lost the answer of an earlier attempt that did create the key.
        row = self._backend.get(key)
        if row is not None and row.value == self.name and row.lease == lease:
            self._known[f.LEADER] = (row.value, row.lease)
            return True
        return False

    def update_leader(self) -> bool:
        rel = f.LEADER
        with self._lock:
            lease = self._ensure_lease()
            row = self._backend.get(self._key(rel))
            if row is None or row.value != self.name:
                self._known.pop(rel, None)
                return False
            if row.lease == lease:
                return True
            log.info("moving leader key from lease %x to lease %x", row.lease, lease)
            try:
                return self._txn(
                    rel, Compare(self._key(rel), "value", self.name), Put(self._key(rel), self.name, lease)
                )
            except LeaseNotFound:
                self._lease = None
                return False

    def release_leader(self) -> bool:
        rel = f.LEADER
        return self._txn(rel, Compare(self._key(rel), "value", self.name), Delete(self._key(rel)))

    # ------------------------------------------------------------ initialize

    def take_initialize(self, value: str = "") -> bool:
        rel = f.INITIALIZE
        return self._txn(rel, Compare(self._key(rel), "create", 0), Put(self._key(rel), value))

    def set_initialize(self, sysid: str) -> None:
        self._put(f.INITIALIZE, sysid)

    def cancel_initialize(self, expected_revision: int | None = None) -> bool:
        rel = f.INITIALIZE
        if expected_revision is None:
            self._delete(rel)
            return True
        return self._txn(rel, Compare(self._key(rel), "mod", expected_revision), Delete(self._key(rel)))

    def _delete(self, rel: str) -> None:
        with self._lock:
            try:
                revision = self._backend.delete(self._key(rel))
            except Exception:
                self._known.pop(rel, None)
                raise
            self._wrote(rel, None, 0, revision)

    # ------------------------------------------------------------ config, sync, failover

    def write_config(self, config: dict[str, Any], expected_revision: int | None) -> bool:
        return self._cas_put(f.CONFIG, f.encode_config(config), expected_revision)

    def write_sync(
        self,
        leader: str,
        sync_standby: tuple[str, ...],
        expected_revision: int | None,
        quorum: int | None = 0,
    ) -> bool:
        return self._cas_put(f.SYNC, f.encode_sync(leader, sync_standby, quorum), expected_revision)

    def write_failover(self, failover: Failover, expected_revision: int | None) -> bool:
        value = f.encode_failover(failover)
        if expected_revision is None:
            self._put(f.FAILOVER, value)
            return True
        return self._cas_put(f.FAILOVER, value, expected_revision)

    def clear_failover(self, expected_revision: int | None) -> bool:
        rel = f.FAILOVER
        if expected_revision is None:
            self._delete(rel)
            return True
        return self._txn(rel, Compare(self._key(rel), "mod", expected_revision), Delete(self._key(rel)))

    # ------------------------------------------------------------ history, status, failsafe

    def write_history(self, history: tuple[HistoryEntry, ...]) -> None:
        self._put(f.HISTORY, f.encode_history(history))

    def write_status(self, status: ClusterStatus) -> None:
        value = f.encode_status(status)
        with self._lock:
            if not self._skip_unchanged(f.STATUS, value):
                self._put(f.STATUS, value)

    def write_failsafe(self, members: dict[str, str]) -> None:
        value = f.encode_failsafe(members)
        with self._lock:
            if not self._skip_unchanged(f.FAILSAFE, value):
                self._put(f.FAILSAFE, value)

    def delete_cluster(self) -> None:
        with self._lock:
            revision = self._backend.delete(self.prefix, prefix=True)
            self._known.clear()
            self._tracker.own_write(revision)

    # ------------------------------------------------------------ watch

    def wait(self, timeout: float) -> bool:
        with self._lock:
            seen = self._seen_revision
        self._backend.watch(self._tracker, seen + 1 if seen else None)
        newest = self._tracker.wait_beyond(seen, timeout)
        if newest is None:
            return False
        with self._lock:
            self._seen_revision = max(self._seen_revision, newest)
        return True

    def close(self) -> None:
        self._backend.close()
