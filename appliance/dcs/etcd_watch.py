"""A background etcd watch on the cluster prefix that feeds a ChangeTracker and survives member failures."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import grpc
from pyetcd import etcdrpc
from pyetcd.utils import prefix_range_end

from appliance.dcs.base import DCSError
from appliance.dcs.etcd_transport import EtcdTransport, describe
from appliance.dcs.kv import ChangeTracker

log = logging.getLogger(__name__)

_RESTART_PAUSE = 0.5
_DELETE = 1  # mvccpb.Event.EventType.DELETE
# Ask the member to cancel the watch when it loses its raft leader, instead of going silent.
_REQUIRE_LEADER = ("hasleader", "true")


class EtcdWatcher:
    """Watches the prefix from a revision on; restarts on the next member after an error.

    It resumes after the last revision it delivered, so no event is lost across restarts; if etcd
    compacted that revision away, the tracker is forced (the HA loop just reads again).
    """

    def __init__(self, transport: EtcdTransport, tracker: ChangeTracker, prefix: str) -> None:
        self._transport = transport
        self._tracker = tracker
        self._prefix = prefix.encode()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._call: Any = None
        self._call_index = -1
        self._cancelled_by_us = False
        self._next_revision: int | None = None
        transport.add_failure_listener(self._endpoint_failed)

    def ensure_started(self, start_revision: int | None) -> None:
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._next_revision = start_revision
            self._thread = threading.Thread(target=self._run, name="etcd-watch", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._cancel_call()
        with self._lock:
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _endpoint_failed(self, index: int) -> None:
        # A request just failed on the member our stream is on: the stream may be silently stuck there.
        with self._lock:
            same = index == self._call_index
        if same:
            self._cancel_call()

    def _cancel_call(self) -> None:
        with self._lock:
            call = self._call
            self._cancelled_by_us = call is not None
        if call is not None:
            call.cancel()

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                at_once = self._watch_once()
                failures = 0
            except (DCSError, grpc.RpcError) as exc:
                at_once = False
                failures += 1
                level = logging.WARNING if failures == 1 else logging.DEBUG
                log.log(level, "etcd watch on %s interrupted (%s); restarting", self._prefix.decode(), describe(exc))
            if not at_once:
                self._stop.wait(_RESTART_PAUSE)

    def _watch_once(self) -> bool:
        """One watch stream; True when it may be restarted at once (we moved it, or a resync)."""
        index, endpoint, metadata = self._transport.stream_metadata()
        done = threading.Event()
        call = endpoint.watch.Watch(self._requests(done), metadata=(*metadata, _REQUIRE_LEADER))
        with self._lock:
            self._call, self._call_index, self._cancelled_by_us = call, index, False
        if self._stop.is_set():
            call.cancel()
        try:
            for response in call:
                outcome = self._handle(response)
                if outcome == "cancelled":
                    self._transport.mark_failed(index)
                if outcome != "ok":
                    return outcome == "resync"
            return False
        except grpc.RpcError:
            with self._lock:
                ours = self._cancelled_by_us
            if not ours:
                self._transport.mark_failed(index)
                raise
            return True
        finally:
            done.set()
            call.cancel()
            with self._lock:
                self._call, self._call_index = None, -1

    def _requests(self, done: threading.Event) -> Iterator[Any]:
        create = etcdrpc.WatchCreateRequest(
            key=self._prefix,
            range_end=prefix_range_end(self._prefix),
            start_revision=self._next_revision or 0,
        )
        yield etcdrpc.WatchRequest(create_request=create)
        # Keep the send side open: a half-closed stream makes etcd end the watch.
        done.wait()

    def _handle(self, response: Any) -> str:
        """Feed one WatchResponse to the tracker: "ok", or why this stream is over."""
        if response.compact_revision:
            log.info("etcd compacted past revision %s; resyncing", self._next_revision)
            self._next_revision = None
            self._tracker.force()
            return "resync"
        if response.canceled:
            log.warning("etcd cancelled the watch: %s", response.cancel_reason or "no reason given")
            return "cancelled"
        for event in response.events:
            deleted = event.type == _DELETE
            self._tracker.note(event.kv.key.decode("utf-8", "replace"), event.kv.mod_revision, deleted)
        if response.events:
            self._next_revision = max(e.kv.mod_revision for e in response.events) + 1
        elif response.created and self._next_revision is None:
            self._next_revision = response.header.revision + 1
        elif not response.created:
            self._next_revision = max(self._next_revision or 0, response.header.revision + 1)
        return "ok"
