"""How this node's etcd member starts: static bootstrap, restart from its data, or rejoin after a wipe.

A member whose data dir is gone cannot come back as itself (etcd: "member has already been
bootstrapped"). While the other members have quorum it is replaced (conventions §4.2): remove the
old member, add a new one with the same peer URL, and start with ``existing`` and the member list
that ``member add`` returned. Without quorum nothing is removed: the start is refused, saying why.
Everything goes through the etcd client of the DCS (EtcdTransport: the Cluster and Maintenance services).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TypeVar

from appliance.config.schema import LocalConfig
from appliance.dcs.base import DCSError
from appliance.dcs.etcd_transport import EtcdMember, EtcdTls, EtcdTransport
from appliance.runtime.etcd_server import ClusterState

T = TypeVar("T")


class JoinRefused(RuntimeError):
    """This member must not start now; the message says why and what to do."""


class GatewayError(RuntimeError):
    """One etcd endpoint did not answer or answered with an error."""


@dataclass(frozen=True)
class EtcdPlan:
    """What to pass to etcd: ``--initial-cluster-state`` and, for a rejoin, ``--initial-cluster``."""

    state: ClusterState
    cluster: str | None
    reason: str


class Gateway(Protocol):
    """The v3 cluster API of the running members (the real one speaks gRPC; tests use a fake)."""

    def member_list(self, url: str) -> list[EtcdMember]: ...
    def has_leader(self, url: str) -> bool: ...
    def member_remove(self, url: str, member_id: str) -> None: ...
    def member_add(self, url: str, peer_urls: Sequence[str]) -> list[EtcdMember]: ...


class EtcdGateway:
    """The other members' cluster API over gRPC, one member at a time (EtcdTransport: TLS with this node's
    certificate, user/password auth: member changes need the root user once etcd auth is on)."""

    def __init__(self, timeout: float = 3.0, username: str | None = None, password: str | None = None,
                 tls_files: tuple[str | None, str | None, str | None] | None = None,
                 probe_timeout: float = 1.0) -> None:
        self.timeout = timeout  # the budget of a member change
        # ... and of a look (member list, status): a member not up yet refuses at once, but the transport
        # retries within its budget, and a new cluster's members all look at each other before bootstrapping.
        self.probe_timeout = probe_timeout
        self.username = username
        self.password = password
        self.tls_files = tls_files  # (CA, certificate, key) paths, read when a member is asked

    def _ask(self, url: str, what: str, call: Callable[[EtcdTransport], T], budget: float) -> T:
        try:
            tls = EtcdTls.from_files(*self.tls_files) if self.tls_files and url.startswith("https://") else None
            transport = EtcdTransport([url], budget, username=self.username,
                                      password=(self.password or "") if self.username else None, tls=tls)
        except ValueError as exc:
            raise GatewayError(f"{url}: {exc}") from None
        try:
            return call(transport)
        except DCSError as exc:
            raise GatewayError(f"{url} {what}: {exc}") from None
        finally:
            transport.close()

    def member_list(self, url: str) -> list[EtcdMember]:
        return self._ask(url, "member list", lambda t: t.member_list(), self.probe_timeout)

    def has_leader(self, url: str) -> bool:
        return self._ask(url, "status", lambda t: t.has_leader(), self.probe_timeout)

    def member_remove(self, url: str, member_id: str) -> None:
        self._ask(url, "member remove", lambda t: t.member_remove(member_id), self.timeout)

    def member_add(self, url: str, peer_urls: Sequence[str]) -> list[EtcdMember]:
        return self._ask(url, "member add", lambda t: t.member_add(list(peer_urls)), self.timeout)


def gateway_for(config: LocalConfig) -> EtcdGateway:
    """The entrypoint's gateway to the other members: TLS with this node's certificate, as root."""
    tls = config.tls
    files = (tls.ca_file, tls.cert_file, tls.key_file)
    if config.etcd.root_password:
        return EtcdGateway(username="root", password=config.etcd.root_password, tls_files=files)
    return EtcdGateway(username=config.etcd3.username, password=config.etcd3.password, tls_files=files)


@dataclass(frozen=True)
class Probe:
    url: str
    members: list[EtcdMember]
    has_leader: bool


def probe(gateway: Gateway, urls: Sequence[str]) -> Probe | None:
    """The first peer that answers: its member list and whether the cluster has a leader."""
    for url in urls:
        try:
            members = gateway.member_list(url)
            leader = gateway.has_leader(url)
        except GatewayError:
            continue
        return Probe(url, members, leader)
    return None


def cluster_string(members: Sequence[EtcdMember], name: str, peer_url: str) -> str:
    """``--initial-cluster`` from a member list; the unstarted member with our peer URL is us."""
    entries: list[str] = []
    for member in members:
        label = name if peer_url in member.peer_urls else member.name
        if not label:
            raise JoinRefused(f"etcd member {member.id} ({', '.join(member.peer_urls)}) has no name yet: another "
                              "member is joining; start this node again when it has joined")
        entries.extend(f"{label}={url}" for url in member.peer_urls)
    return ",".join(entries)


def data_dir_empty(data_dir: str | Path) -> bool:
    return not (Path(data_dir) / "member").is_dir()


@dataclass(frozen=True)
class JoinRequest:
    """This member and where to find the others."""

    name: str
    peer_url: str
    data_dir: str
    peer_client_urls: tuple[str, ...]  # the other members' client URLs
    pgdata_initialised: bool  # a node with data was a member before: never bootstrap anew


def plan_start(
    req: JoinRequest,
    gateway: Gateway,
    *,
    wait: float = 30.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] = print,
) -> EtcdPlan:
    """Decide how etcd starts; may remove and add this member. Raises JoinRefused."""
    if not data_dir_empty(req.data_dir):
        return EtcdPlan("new", None, f"restarting from the data in {req.data_dir}")
    if not req.peer_client_urls:
        return EtcdPlan("new", None, "a single-member cluster")
    deadline = clock() + wait
    while True:
        found = probe(gateway, req.peer_client_urls)
        if found is None and not req.pgdata_initialised:
            # Every member of a new cluster starts empty and waits for the others: nobody answers yet.
            return EtcdPlan("new", None, "no other member answers: bootstrapping the cluster with its peers")
        if found is not None and (found.has_leader or not any(m.started for m in found.members)):
            break
        if clock() >= deadline:
            raise JoinRefused(_no_quorum_message(req, found))
        sleep(2.0)
    assert found is not None
    if not found.has_leader:
        return EtcdPlan("new", None, "the cluster is still forming: joining its static bootstrap")
    return _rejoin(req, gateway, found, log)


def _no_quorum_message(req: JoinRequest, found: Probe | None) -> str:
    where = ", ".join(req.peer_client_urls)
    if found is None:
        return (f"the etcd data dir {req.data_dir} is empty but this node's PostgreSQL data exists, so it was a "
                f"member of a cluster, and no other member answers ({where}). Rejoining needs a quorum of the "
                "others: start them first; this node retries when restarted")
    return (f"the etcd data dir {req.data_dir} is empty and the cluster at {found.url} has no leader (no quorum). "
            "A wiped member is replaced only while the others have quorum: bring the other members back first; "
            "this node retries when restarted")


def _rejoin(req: JoinRequest, gateway: Gateway, found: Probe, log: Callable[[str], None]) -> EtcdPlan:
    mine = [m for m in found.members if req.peer_url in m.peer_urls]
    if mine and not mine[0].started:
        # Added (or statically listed) but never started: no data was ever lost, join as is.
        members = found.members
        reason = f"joining the existing cluster as the unstarted member {mine[0].id}"
    else:
        stale = mine or [m for m in found.members if m.name == req.name]
        for member in stale:
            log(f"etcd: this member's data is gone: removing the old member {member.name or '?'} ({_hex(member.id)})")
            _checked(partial(gateway.member_remove, found.url, member.id), "member remove")
        log(f"etcd: adding this member again ({req.peer_url})")
        members = _checked(partial(gateway.member_add, found.url, [req.peer_url]), "member add")
        reason = "replaced the wiped member (member remove + member add): joining with state existing"
    return EtcdPlan("existing", cluster_string(members, req.name, req.peer_url), reason)


def _hex(member_id: str) -> str:
    # EtcdMember IDs are decimal; etcdctl and etcd's logs show them in hex.
    return format(int(member_id), "x") if member_id.isdigit() else member_id


def _checked(call: Callable[[], Any], what: str) -> Any:
    try:
        return call()
    except GatewayError as exc:
        raise JoinRefused(f"etcd {what} failed: {exc}; this node retries when restarted") from None
