"""How this node's etcd member starts: static bootstrap, restart from its data, or rejoin after a wipe.

A member whose data dir is gone cannot come back as itself (etcd: "member has already been
bootstrapped"). While the other members have quorum it is replaced (conventions §4.2): remove the
old member, add a new one with the same peer URL, and start with ``existing`` and the member list
that ``member add`` returned. Without quorum nothing is removed: the start is refused, saying why.
Everything goes through etcd's v3 JSON gateway (``/v3/cluster/member/*``, ``/v3/maintenance/status``).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from appliance.config.schema import LocalConfig
from appliance.net.http import Client
from appliance.runtime.etcd import ClusterState


class JoinRefused(RuntimeError):
    """This member must not start now; the message says why and what to do."""


class GatewayError(RuntimeError):
    """One etcd endpoint did not answer or answered with an error."""


@dataclass(frozen=True)
class EtcdMember:
    id: str
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]

    @property
    def started(self) -> bool:
        # A member publishes its name and client URLs through raft once it has joined the quorum.
        return bool(self.client_urls)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> EtcdMember:
        return cls(
            id=str(doc.get("ID", "")),
            name=str(doc.get("name", "")),
            peer_urls=tuple(doc.get("peerURLs") or ()),
            client_urls=tuple(doc.get("clientURLs") or ()),
        )


@dataclass(frozen=True)
class EtcdPlan:
    """What to pass to etcd: ``--initial-cluster-state`` and, for a rejoin, ``--initial-cluster``."""

    state: ClusterState
    cluster: str | None
    reason: str


class Gateway(Protocol):
    """The v3 cluster API of the running members (the real one speaks HTTP; tests use a fake)."""

    def member_list(self, url: str) -> list[EtcdMember]: ...
    def has_leader(self, url: str) -> bool: ...
    def member_remove(self, url: str, member_id: str) -> None: ...
    def member_add(self, url: str, peer_urls: Sequence[str]) -> list[EtcdMember]: ...


class HttpGateway:
    """etcd's gRPC-JSON gateway (HTTPS with a client certificate, or plain HTTP), with user/password
    auth: member changes need the root user once etcd auth is on."""

    def __init__(self, timeout: float = 3.0, username: str | None = None, password: str | None = None,
                 client: Client | None = None) -> None:
        self.timeout = timeout
        self.username = username
        self.password = password
        self.client = client

    def _post(self, url: str, path: str, body: dict[str, Any], token: str | None = None) -> dict[str, Any]:
        request = urllib.request.Request(
            url.rstrip("/") + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        if token:
            request.add_header("Authorization", token)
        context = (self.client or Client()).context() if url.startswith("https://") else None
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=context) as response:
                doc = json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            raise GatewayError(f"{url}{path}: HTTP {exc.code}: {detail}") from None
        except (OSError, ValueError) as exc:
            raise GatewayError(f"{url}{path}: {exc}") from None
        if isinstance(doc, dict) and doc.get("error"):
            raise GatewayError(f"{url}{path}: {doc.get('error')}")
        return doc if isinstance(doc, dict) else {}

    def _call(self, url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        token = None
        if self.username:
            try:
                login = {"name": self.username, "password": self.password or ""}
                token = str(self._post(url, "/v3/auth/authenticate", login).get("token", ""))
            except GatewayError as exc:
                if "authentication is not enabled" not in str(exc):
                    raise
        return self._post(url, path, body, token)

    def member_list(self, url: str) -> list[EtcdMember]:
        return [EtcdMember.from_json(m) for m in self._call(url, "/v3/cluster/member/list", {}).get("members", [])]

    def has_leader(self, url: str) -> bool:
        return str(self._call(url, "/v3/maintenance/status", {}).get("leader", "0")) not in ("", "0")

    def member_remove(self, url: str, member_id: str) -> None:
        self._call(url, "/v3/cluster/member/remove", {"ID": member_id})

    def member_add(self, url: str, peer_urls: Sequence[str]) -> list[EtcdMember]:
        doc = self._call(url, "/v3/cluster/member/add", {"peerURLs": list(peer_urls)})
        return [EtcdMember.from_json(m) for m in doc.get("members", [])]


def gateway_for(config: LocalConfig) -> HttpGateway:
    """The entrypoint's gateway to the other members: TLS with this node's certificate, as root."""
    tls = config.tls
    client = Client(cafile=tls.ca_file, certfile=tls.cert_file, keyfile=tls.key_file)
    if config.etcd.root_password:
        return HttpGateway(username="root", password=config.etcd.root_password, client=client)
    return HttpGateway(username=config.etcd3.username, password=config.etcd3.password, client=client)


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
    # The gateway shows IDs in decimal; etcdctl and etcd's logs in hex.
    return format(int(member_id), "x") if member_id.isdigit() else member_id


def _checked(call: Callable[[], Any], what: str) -> Any:
    try:
        return call()
    except GatewayError as exc:
        raise JoinRefused(f"etcd {what} failed: {exc}; this node retries when restarted") from None
