"""gRPC access to every etcd member (timeouts, failover, auth, DCSError) and its few membership calls."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from pyetcd import etcdrpc

from appliance.dcs.base import DCSError
from appliance.dcs.kv import LeaseNotFound

log = logging.getLogger(__name__)

T = TypeVar("T")
Metadata = tuple[tuple[str, str], ...]

MIN_REQUEST_TIMEOUT = 0.5
_ROUND_PAUSE = 0.1  # after every endpoint failed once in a row: do not spin on refused connections
# Reconnect quickly to a member that comes back; the gRPC default backoff grows to 120 s.
# Keepalive pings (etcd tolerates one every 5 s) detect a frozen member under a long watch.
_CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 10000),
    ("grpc.keepalive_timeout_ms", 5000),
)
# Answers that another member would give just the same: do not fail over, report.
_FINAL_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.NOT_FOUND,
    }
)
# etcd's answers when a request carries no token or a stale one.
_AUTH_NEEDED = ("invalid auth token", "user name is empty", "revision of auth store is old")
# ... and when auth was enabled after we found it off: with a client certificate and no token, etcd
# takes the certificate's CN as the user name, which is none of its users.
_AUTH_ENABLED_SINCE = ("user name not found", "permission denied")


@dataclass(frozen=True)
class EtcdTls:
    """TLS material of the etcd client (PEM bytes): the members' CA and our client certificate."""

    ca: bytes | None = None
    cert: bytes | None = field(default=None, repr=False)
    key: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_files(cls, ca: str | None, cert: str | None, key: str | None) -> EtcdTls:
        def read(what: str, path: str | None) -> bytes | None:
            if not path:
                return None
            try:
                with open(path, "rb") as handle:
                    return handle.read()
            except OSError as exc:
                raise ValueError(f"etcd3.{what}: cannot read {path}: {exc.strerror or exc}") from None

        return cls(read("cacert", ca), read("cert", cert), read("key", key))

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(root_certificates=self.ca, private_key=self.key,
                                            certificate_chain=self.cert)


@dataclass(frozen=True)
class EtcdMember:
    """One member of the etcd cluster (IDs in decimal, as etcd's JSON gateway shows them)."""

    id: str
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]

    @property
    def started(self) -> bool:
        # A member publishes its name and client URLs through raft once it has joined the quorum.
        return bool(self.client_urls)

    @classmethod
    def from_pb(cls, member: Any) -> EtcdMember:
        return cls(str(member.ID), str(member.name), tuple(member.peerURLs), tuple(member.clientURLs))


def parse_host(host: str, tls: bool = False) -> str:
    """``host``, ``host:port`` or ``http(s)://host:port`` → gRPC target ``host:port`` (default port 2379)."""
    target = host.strip()
    if target.startswith("https://") and not tls:
        raise ValueError(f"etcd host {host!r} is https:// but etcd3.protocol is http: set etcd3.protocol: https")
    if target.startswith("http://") and tls:
        raise ValueError(f"etcd host {host!r} is http:// but etcd3.protocol is https")
    target = target.removeprefix("http://").removeprefix("https://").rstrip("/")
    if not target or "/" in target:
        raise ValueError(f"etcd host {host!r} is not host[:port]")
    if target.startswith("["):
        return target if "]:" in target else f"{target}:2379"
    if target.count(":") > 1:
        return f"[{target}]:2379"
    if ":" in target:
        port = target.rsplit(":", 1)[1]
        if not port.isdigit():
            raise ValueError(f"etcd host {host!r}: port {port!r} is not a number")
        return target
    return f"{target}:2379"


class Endpoint:
    """One etcd member: a lazily opened channel and its stubs."""

    def __init__(self, target: str, tls: EtcdTls | None = None) -> None:
        self.target = target
        self.tls = tls
        self._lock = threading.Lock()
        self._channel: grpc.Channel | None = None
        self._stubs: dict[str, Any] = {}
        self._closed = False

    def _stub(self, name: str, factory: Callable[[grpc.Channel], Any]) -> Any:
        with self._lock:
            if self._closed:
                raise DCSError(f"the connection to etcd {self.target} has been closed")
            if self._channel is None:
                if self.tls is None:
                    self._channel = grpc.insecure_channel(self.target, options=_CHANNEL_OPTIONS)
                else:
                    self._channel = grpc.secure_channel(self.target, self.tls.credentials(), options=_CHANNEL_OPTIONS)
            stub = self._stubs.get(name)
            if stub is None:
                stub = self._stubs[name] = factory(self._channel)
            return stub

    @property
    def kv(self) -> Any:
        return self._stub("kv", etcdrpc.KVStub)

    @property
    def lease(self) -> Any:
        return self._stub("lease", etcdrpc.LeaseStub)

    @property
    def watch(self) -> Any:
        return self._stub("watch", etcdrpc.WatchStub)

    @property
    def auth(self) -> Any:
        return self._stub("auth", etcdrpc.AuthStub)

    @property
    def cluster(self) -> Any:
        return self._stub("cluster", etcdrpc.ClusterStub)

    @property
    def maintenance(self) -> Any:
        return self._stub("maintenance", etcdrpc.MaintenanceStub)

    def close(self) -> None:
        with self._lock:
            channel, self._channel = self._channel, None
            self._stubs.clear()
            self._closed = True
        if channel is not None:
            channel.close()


class NoAnswer(Exception):
    """A stream ended without the answer we asked for: try the next member."""


class EtcdTransport:
    """Runs each request against the current member and fails over to the next one within a budget.

    The budget of one request is ``retry_timeout``; each attempt gets ``retry_timeout / len(hosts)``
    (at least MIN_REQUEST_TIMEOUT), so a frozen member cannot eat the whole budget.
    """

    def __init__(
        self,
        hosts: list[str],
        retry_timeout: float,
        clock: Callable[[], float] = time.monotonic,
        username: str | None = None,
        password: str | None = None,
        tls: EtcdTls | None = None,
    ) -> None:
        if not hosts:
            raise ValueError("etcd3.hosts is empty: list every etcd member's client address")
        if (username is None) != (password is None):
            raise ValueError("etcd3.username and etcd3.password must be set together")
        self.endpoints = [Endpoint(parse_host(h, tls is not None), tls) for h in hosts]
        self.retry_timeout = float(retry_timeout)
        self.request_timeout = max(MIN_REQUEST_TIMEOUT, self.retry_timeout / len(self.endpoints))
        self._clock = clock
        self._username = username
        self._password = password
        self._token: str | None = None if username else ""
        self._lock = threading.Lock()
        self._current = 0
        self._failed_at = [float("-inf")] * len(self.endpoints)
        self._closed = False
        self._listeners: list[Callable[[int], None]] = []

    def set_retry_timeout(self, seconds: float) -> None:
        """A new budget for the next requests (the dynamic retry_timeout changed)."""
        with self._lock:
            self.retry_timeout = float(seconds)
            self.request_timeout = max(MIN_REQUEST_TIMEOUT, self.retry_timeout / len(self.endpoints))

    @property
    def targets(self) -> list[str]:
        return [ep.target for ep in self.endpoints]

    def current(self) -> tuple[int, Endpoint]:
        with self._lock:
            return self._current, self.endpoints[self._current]

    def add_failure_listener(self, listener: Callable[[int], None]) -> None:
        self._listeners.append(listener)

    def mark_failed(self, index: int) -> None:
        """Move on from member ``index`` (if it is still the current one) and tell the listeners."""
        count = len(self.endpoints)
        with self._lock:
            self._failed_at[index] = self._clock()
            if self._current == index and count > 1:
                # Prefer the member that failed longest ago (or never): do not go back to a frozen one.
                others = [(index + k) % count for k in range(1, count)]
                self._current = min(others, key=lambda i: self._failed_at[i])
        for listener in self._listeners:
            listener(index)

    def call(self, what: str, fn: Callable[[Endpoint, float, Metadata], T]) -> tuple[T, float]:
        """Run ``fn(endpoint, timeout, metadata)``; returns its result and when the good attempt was sent."""
        if self._closed:
            raise DCSError(f"cannot {what}: this etcd client has been closed")
        deadline = self._clock() + self.retry_timeout
        count = len(self.endpoints)
        max_attempts = count * (int(self.retry_timeout / _ROUND_PAUSE) + 2)
        last_error = "no attempt made"
        for attempt in range(1, max_attempts + 1):
            index, endpoint = self.current()
            timeout = max(0.05, min(self.request_timeout, deadline - self._clock()))
            sent = self._clock()
            try:
                return fn(endpoint, timeout, self._metadata(endpoint, timeout)), sent
            except grpc.RpcError as exc:
                last_error = self._handle_rpc_error(what, index, exc)
            except NoAnswer as exc:
                last_error = f"{endpoint.target}: {exc}"
                self.mark_failed(index)
            remaining = deadline - self._clock()
            if remaining <= 0:
                break
            if attempt % count == 0:
                time.sleep(min(_ROUND_PAUSE, remaining))
        raise DCSError(
            f"etcd did not answer {what} within {self.retry_timeout:g}s from any of {', '.join(self.targets)} "
            f"(last error: {last_error}); check that a majority of the etcd members is up and reachable"
        )

    def _handle_rpc_error(self, what: str, index: int, exc: grpc.RpcError) -> str:
        code = _code(exc)
        code_name = code.name if code is not None else "UNKNOWN"
        details = _details(exc)
        target = self.endpoints[index].target
        if code == grpc.StatusCode.NOT_FOUND and "lease not found" in details:
            raise LeaseNotFound(f"etcd {target} refused {what}: {details}")
        with self._lock:
            tokenless = self._token == ""
        if (code == grpc.StatusCode.UNAUTHENTICATED or any(m in details for m in _AUTH_NEEDED)
                or (tokenless and self._username and any(m in details for m in _AUTH_ENABLED_SINCE))):
            if not self._username:
                raise DCSError(
                    f"etcd {target} requires authentication ({details}); set etcd3.username and etcd3.password"
                )
            with self._lock:
                self._token = None  # expired, or auth was enabled after we started: log in again
        elif code in _FINAL_CODES:
            raise DCSError(f"etcd {target} refused {what}: {details} ({code_name})")
        else:
            self.mark_failed(index)
        return f"{target}: {code_name} {details}"

    def _metadata(self, endpoint: Endpoint, timeout: float) -> Metadata:
        with self._lock:
            token = self._token
        if token is None:
            token = self._authenticate(endpoint, timeout)
        return (("token", token),) if token else ()

    def _authenticate(self, endpoint: Endpoint, timeout: float) -> str:
        request = etcdrpc.AuthenticateRequest(name=self._username, password=self._password)
        try:
            token = str(endpoint.auth.Authenticate(request, timeout=timeout).token)
        except grpc.RpcError as exc:
            details = _details(exc)
            if "authentication is not enabled" in details:
                token = ""
            elif _code(exc) in _FINAL_CODES:
                raise DCSError(
                    f"etcd {endpoint.target} rejected user {self._username!r}: {details}; "
                    "check etcd3.username and etcd3.password"
                ) from None
            else:
                raise
        with self._lock:
            self._token = token
        return token

    def stream_metadata(self) -> tuple[int, Endpoint, Metadata]:
        """Endpoint and metadata for a long-lived stream (authenticating first if needed)."""
        metadata, _ = self.call("authenticate", lambda ep, timeout, md: md)
        index, endpoint = self.current()
        return index, endpoint, metadata

    def member_list(self) -> list[EtcdMember]:
        response, _ = self.call("member list", lambda ep, t, md: ep.cluster.MemberList(
            etcdrpc.MemberListRequest(), timeout=t, metadata=md))
        return [EtcdMember.from_pb(m) for m in response.members]

    def member_add(self, peer_urls: list[str]) -> list[EtcdMember]:
        """Add an (unstarted) member; the member list etcd answers, the new one included."""
        response, _ = self.call("member add", lambda ep, t, md: ep.cluster.MemberAdd(
            etcdrpc.MemberAddRequest(peerURLs=list(peer_urls)), timeout=t, metadata=md))
        return [EtcdMember.from_pb(m) for m in response.members]

    def member_remove(self, member_id: str) -> None:
        self.call("member remove", lambda ep, t, md: ep.cluster.MemberRemove(
            etcdrpc.MemberRemoveRequest(ID=int(member_id)), timeout=t, metadata=md))

    def has_leader(self) -> bool:
        """Whether the member asked knows a raft leader (no leader: the cluster has no quorum)."""
        response, _ = self.call("status", lambda ep, t, md: ep.maintenance.Status(
            etcdrpc.StatusRequest(), timeout=t, metadata=md))
        return int(response.leader) != 0

    def first_answering(self, timeout: float) -> str | None:
        """The first member that answers a serializable (local) read, asked one by one without failover:
        it is up even when the cluster has no quorum (an auth refusal is an answer too)."""
        request = etcdrpc.RangeRequest(key=b"\0", serializable=True, limit=1)
        for endpoint in self.endpoints:
            try:
                endpoint.kv.Range(request, timeout=timeout)
                return endpoint.target
            except grpc.RpcError as exc:
                if "auth" in str(exc).lower() or "token" in str(exc).lower():
                    return endpoint.target
            except DCSError:
                continue
        return None

    def close(self) -> None:
        self._closed = True
        for endpoint in self.endpoints:
            endpoint.close()


def describe(exc: BaseException) -> str:
    """A one-line account of a gRPC failure (the default repr spans several lines)."""
    if isinstance(exc, grpc.RpcError):
        code = _code(exc)
        return f"{code.name if code is not None else 'UNKNOWN'} {_details(exc)}"
    return str(exc)


def _code(exc: grpc.RpcError) -> grpc.StatusCode | None:
    code = getattr(exc, "code", None)
    return code() if callable(code) else None


def _details(exc: grpc.RpcError) -> str:
    details = getattr(exc, "details", None)
    text = details() if callable(details) else None
    return str(text or exc)
