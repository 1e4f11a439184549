"""The narrow DCS interface the manager uses; implemented by the etcd adapter and the in-memory fake."""

from __future__ import annotations

from typing import Any, Protocol

from appliance.core.model import ClusterStatus, ClusterView, Failover, HistoryEntry, Member


class DCSError(Exception):
    """The DCS could not be reached or did not answer in time: retryable, never fatal by itself."""


class DCS(Protocol):
    """Cluster state under ``/<namespace>/<scope>/`` with Patroni's key layout and value formats.

    One lease per process (TTL = ``ttl``) carries both ``leader`` and ``members/<name>``.
    Every method raises DCSError when the store cannot answer within its timeout.
    """

    name: str

    def read(self) -> ClusterView:
        """Read the whole cluster prefix linearizably (never from a stale or partitioned member)."""
        ...

    def keepalive(self) -> float:
        """Grant the session lease if there is none (or it expired), else refresh it.

        Returns the monotonic time at which the successful request was *sent*: the lease cannot
        expire on the server before that time + ttl.
        """
        ...

    @property
    def lease_id(self) -> int | None:
        """The session lease (None before the first grant): the leader key is ours to rely on only
        while it is attached to the lease we renew."""
        ...

    def set_ttl(self, ttl: int) -> None:
        """Use ``ttl`` for the next lease grant (the current lease is revoked lazily)."""
        ...

    @property
    def lease_ttl(self) -> int:
        """The TTL of the lease in effect (the requested one until a lease is granted): the loop must
        renew within it, whatever a new ``ttl`` says until the next grant."""
        ...

    def set_retry_timeout(self, seconds: float) -> None:
        """The budget of each later request (dynamic retry_timeout)."""
        ...

    def touch_member(self, member: Member) -> None:
        """Put ``members/<name>`` (JSON) on the session lease; skipped when unchanged."""
        ...

    def take_initialize(self, value: str = "") -> bool:
        """Create ``initialize`` if absent (txn create_revision == 0). True if we created it."""
        ...

    def set_initialize(self, sysid: str) -> None:
        """Overwrite ``initialize`` with the database system identifier."""
        ...

    def cancel_initialize(self, expected_revision: int | None = None) -> bool:
        """Delete ``initialize`` (failed or abandoned bootstrap)."""
        ...

    def acquire_leader(self) -> bool:
        """Create ``leader`` = our name on our lease if absent. True if we now hold it."""
        ...

    def update_leader(self) -> bool:
        """Confirm ``leader`` is ours and attached to the current lease (re-put it if the lease changed).

        False when the key is absent or owned by another member.
        """
        ...

    def release_leader(self) -> bool:
        """Delete ``leader`` if its value is our name."""
        ...

    def write_config(self, config: dict[str, Any], expected_revision: int | None) -> bool:
        """Write ``config``: create-only when expected_revision is None, else CAS on mod_revision."""
        ...

    def write_sync(self, leader: str, sync_standby: tuple[str, ...], expected_revision: int | None,
                   quorum: int | None = 0) -> bool:
        """Write ``sync`` with CAS (None: create-only; 0 is treated as "absent"); ``quorum`` is
        Patroni's field (0 outside quorum mode)."""
        ...

    def write_failover(self, failover: Failover, expected_revision: int | None) -> bool:
        """Write the ``failover`` key (None: unconditional; int: CAS)."""
        ...

    def clear_failover(self, expected_revision: int | None) -> bool:
        """Clear ``failover`` (Patroni writes ``{}``... we delete it), CAS when a revision is given."""
        ...

    def write_history(self, history: tuple[HistoryEntry, ...]) -> None:
        """Put the ``history`` key."""
        ...

    def write_status(self, status: ClusterStatus) -> None:
        """Put the ``status`` key (skipped when unchanged)."""
        ...

    def write_failsafe(self, members: dict[str, str]) -> None:
        """Put the ``failsafe`` key."""
        ...

    def delete_cluster(self) -> None:
        """Delete the whole cluster prefix."""
        ...

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` s; return early (True) when a watched key changed.

        Watched: leader, config, status, failover, sync, initialize, and members/* deletions, when
        changed by someone else after the last read() (or the last True); our own writes never wake us.
        """
        ...

    def close(self) -> None:
        """Revoke nothing; stop watch threads and close channels."""
        ...
