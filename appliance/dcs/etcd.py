"""The etcd v3 DCS: Patroni-compatible keys on a multi-member etcd cluster, over gRPC (pyetcd's stubs)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from pyetcd import etcdrpc
from pyetcd.utils import prefix_range_end

from appliance.dcs.base import DCSError
from appliance.dcs.etcd_transport import EtcdTls, EtcdTransport, Metadata, NoAnswer
from appliance.dcs.etcd_watch import EtcdWatcher
from appliance.dcs.formats import Row, cluster_prefix
from appliance.dcs.kv import ChangeTracker, Compare, Delete, Op, Put
from appliance.dcs.session import KVSession

_TARGETS = {
    "create": ("CREATE", "create_revision"),
    "mod": ("MOD", "mod_revision"),
    "lease": ("LEASE", "lease"),
    "value": ("VALUE", "value"),
}


def _compare(compare: Compare) -> Any:
    target, field = _TARGETS[compare.target]
    message = etcdrpc.Compare(
        key=compare.key.encode(), result=etcdrpc.Compare.EQUAL, target=getattr(etcdrpc.Compare, target)
    )
    if compare.target == "value":
        message.value = str(compare.value).encode()
    else:
        setattr(message, field, int(compare.value))
    return message


def _request_op(op: Op) -> Any:
    if isinstance(op, Put):
        put = etcdrpc.PutRequest(key=op.key.encode(), value=op.value.encode(), lease=op.lease)
        return etcdrpc.RequestOp(request_put=put)
    return etcdrpc.RequestOp(request_delete_range=_delete_request(op))


def _delete_request(op: Delete) -> Any:
    key = op.key.encode()
    return etcdrpc.DeleteRangeRequest(key=key, range_end=prefix_range_end(key) if op.prefix else b"")


def _row(kv: Any) -> Row:
    return Row(
        kv.key.decode("utf-8", "replace"),
        kv.value.decode("utf-8", "replace"),
        int(kv.mod_revision),
        int(kv.create_revision),
        int(kv.lease),
    )


class EtcdBackend:
    """The kv Backend over etcd: every read is linearizable (serializable=False)."""

    def __init__(self, transport: EtcdTransport, prefix: str) -> None:
        self._transport = transport
        self._prefix = prefix
        self._watcher: EtcdWatcher | None = None

    def _call(self, what: str, fn: Callable[[Any, float, Metadata], Any]) -> tuple[Any, float]:
        return self._transport.call(what, fn)

    def range_prefix(self, prefix: str) -> tuple[list[Row], int]:
        key = prefix.encode()
        request = etcdrpc.RangeRequest(key=key, range_end=prefix_range_end(key), serializable=False)
        response, _ = self._call(f"read {prefix}", lambda ep, t, md: ep.kv.Range(request, timeout=t, metadata=md))
        return [_row(kv) for kv in response.kvs], int(response.header.revision)

    def get(self, key: str) -> Row | None:
        request = etcdrpc.RangeRequest(key=key.encode(), serializable=False)
        response, _ = self._call(f"get {key}", lambda ep, t, md: ep.kv.Range(request, timeout=t, metadata=md))
        return _row(response.kvs[0]) if response.kvs else None

    def txn(self, compares: Sequence[Compare], success: Sequence[Op]) -> tuple[bool, int]:
        request = etcdrpc.TxnRequest(
            compare=[_compare(c) for c in compares], success=[_request_op(op) for op in success]
        )
        what = "txn on " + ", ".join(c.key for c in compares)
        response, _ = self._call(what, lambda ep, t, md: ep.kv.Txn(request, timeout=t, metadata=md))
        return bool(response.succeeded), int(response.header.revision)

    def put(self, key: str, value: str, lease: int = 0) -> int:
        request = etcdrpc.PutRequest(key=key.encode(), value=value.encode(), lease=lease)
        response, _ = self._call(f"put {key}", lambda ep, t, md: ep.kv.Put(request, timeout=t, metadata=md))
        return int(response.header.revision)

    def delete(self, key: str, prefix: bool = False) -> int:
        request = _delete_request(Delete(key, prefix))
        response, _ = self._call(f"delete {key}", lambda ep, t, md: ep.kv.DeleteRange(request, timeout=t, metadata=md))
        return int(response.header.revision)

    def lease_grant(self, ttl: int) -> tuple[int, float]:
        request = etcdrpc.LeaseGrantRequest(TTL=ttl)
        response, sent = self._call(
            "lease grant", lambda ep, t, md: ep.lease.LeaseGrant(request, timeout=t, metadata=md)
        )
        if response.error:
            raise DCSError(f"etcd refused a lease of {ttl}s: {response.error}")
        return int(response.ID), sent

    def lease_keepalive(self, lease_id: int) -> tuple[int, float]:
        request = etcdrpc.LeaseKeepAliveRequest(ID=lease_id)

        def keepalive(ep: Any, timeout: float, metadata: Metadata) -> int:
            call = ep.lease.LeaseKeepAlive(iter([request]), timeout=timeout, metadata=metadata)
            try:
                for response in call:
                    return int(response.TTL)
            finally:
                call.cancel()
            raise NoAnswer("the keepalive stream ended without an answer")

        return self._call(f"lease keepalive {lease_id:x}", keepalive)

    def distrust_current(self) -> None:
        """Move on from the member that answered last (its answer contradicted the quorum)."""
        index, _ = self._transport.current()
        self._transport.mark_failed(index)

    def watch(self, tracker: ChangeTracker, start_revision: int | None) -> None:
        if self._watcher is None:
            self._watcher = EtcdWatcher(self._transport, tracker, self._prefix)
        self._watcher.ensure_started(start_revision)

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
        self._transport.close()


class EtcdDCS(KVSession):
    """The DCS Protocol of base.py on etcd v3, wire-compatible with Patroni's etcd3 adapter.

    ``hosts`` lists every etcd member; requests fail over between them within ``retry_timeout``.
    """

    def __init__(
        self,
        hosts: list[str],
        scope: str,
        namespace: str,
        name: str,
        ttl: int,
        retry_timeout: float,
        clock: Callable[[], float] = time.monotonic,
        username: str | None = None,
        password: str | None = None,
        tls: EtcdTls | None = None,
    ) -> None:
        prefix = cluster_prefix(namespace, scope)
        self.transport = EtcdTransport(hosts, retry_timeout, clock, username, password, tls)
        super().__init__(EtcdBackend(self.transport, prefix), prefix, name, ttl)

    def set_retry_timeout(self, seconds: float) -> None:
        self.transport.set_retry_timeout(seconds)

    def first_answering(self, timeout: float) -> str | None:
        """The first etcd member that answers a local read (up, even without quorum), or None."""
        return self.transport.first_answering(timeout)
