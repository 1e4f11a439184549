"""Read the cluster for the CLI (the DCS, or a node's GET /cluster with --url only) and write its config key."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from appliance.cli.ctl.rest import api_base, get_json
from appliance.cli.ctl.target import CtlError, Target, take_cluster_name
from appliance.core.model import ClusterRole, ClusterView, HistoryEntry, Leader, Member, PgState, Role, SyncState
from appliance.core.tags import Tags
from appliance.core.wal import lsn_or_none
from appliance.dcs.base import DCSError
from appliance.dcs.etcd import EtcdDCS
from appliance.dcs.factory import open_etcd
from appliance.dcs.formats import cluster_prefix

CLI_MEMBER_NAME = "appliance-cli"  # never written: the CLI takes no lease and publishes no member key
DCS_BUDGET = 4.0
PROBE_TIMEOUT = 1.0


def scoped(target: Target, args: Sequence[str]) -> tuple[Target, list[str]]:
    """take_cluster_name, after asking the node for its scope when only --url is known."""
    if target.scope is None and not target.has_dcs and target.url:
        doc = get_json(target, f"{api_base(target.url)}/patroni")
        scope = ((doc or {}).get("patroni") or {}).get("scope") if isinstance(doc, dict) else None
        if isinstance(scope, str) and scope:
            target = target.with_scope(scope)
    return take_cluster_name(target, args)


def open_dcs(target: Target) -> EtcdDCS:
    if not target.scope:
        raise CtlError("no cluster name: pass --scope (APPLIANCE_SCOPE) or use --config")
    try:
        return open_etcd(target.etcd_hosts, scope=target.scope, namespace=target.namespace, name=CLI_MEMBER_NAME,
                         ttl=30, retry_timeout=DCS_BUDGET, username=target.etcd_username,
                         password=target.etcd_password, tls=target.etcd_tls)
    except ValueError as exc:
        raise CtlError(f"--dcs {','.join(target.etcd_hosts)}: {exc}") from None


def _endpoints(target: Target) -> str:
    return ", ".join(target.etcd_hosts)


def dcs_failure(target: Target, dcs: EtcdDCS, exc: DCSError) -> CtlError:
    """One line telling unreachable etcd from etcd without quorum (and auth problems, already one line)."""
    text = str(exc)
    if "authentication" in text or "rejected user" in text:
        return CtlError(text)
    if "permission denied" in text:
        return CtlError(f"etcd denied access to cluster {target.scope!r}: the etcd user {target.etcd_username!r} may "
                        "use its own cluster's keys only (is the cluster name right?)")
    alive = dcs.first_answering(PROBE_TIMEOUT)  # it is up, so the cluster lacks quorum
    if alive is not None:
        return CtlError(f"etcd has no quorum: {alive} answers but the cluster ({_endpoints(target)}) cannot serve "
                        "a consistent read; bring a majority of the etcd members back up")
    tls = "" if target.etcd_tls is not None else (
        "; an etcd with TLS (the appliance's default) needs a client certificate: use --config with "
        "etcd3.protocol/cacert/cert/key, e.g. the demo's client.yml")
    return CtlError(f"etcd unreachable at {_endpoints(target)} (no member answered within {DCS_BUDGET:g}s): "
                    f"check --dcs/etcd3.hosts and that etcd is running{tls}")


def read_view(target: Target) -> ClusterView:
    """The cluster, linearizably from the DCS; from a node's REST API when only --url is given."""
    if not target.has_dcs:
        if target.url:
            return view_from_rest(target, target.url)
        raise CtlError("no etcd endpoints: pass --dcs host:port[,...] or --config")
    dcs = open_dcs(target)
    try:
        view = dcs.read()
    except DCSError as exc:
        raise dcs_failure(target, dcs, exc) from None
    finally:
        dcs.close()
    if view.initialize is None and not view.members and view.config is None and view.leader is None:
        raise CtlError(f"no such cluster: nothing under {cluster_prefix(target.namespace, target.scope or '-')} in "
                       f"etcd at {_endpoints(target)}; check --scope and --namespace")
    return view


def write_config(target: Target, config: dict[str, Any], revision: int) -> None:
    """CAS write of the config key (as patronictl edit-config does); a concurrent edit is an error."""
    dcs = open_dcs(target)
    try:
        ok = dcs.write_config(config, revision)
    except DCSError as exc:
        raise dcs_failure(target, dcs, exc) from None
    finally:
        dcs.close()
    if not ok:
        raise CtlError("the config key changed since it was read (another edit?): nothing written; run the "
                       "command again")


def view_from_rest(target: Target, url: str) -> ClusterView:
    """Best-effort ClusterView from GET /cluster, /config, /history and /patroni of one node."""
    base = api_base(url)
    doc = get_json(target, f"{base}/cluster") or {}
    members, leader, sync = [], None, []
    for item in doc.get("members") or []:
        role = str(item.get("role") or "")
        name = str(item.get("name"))
        if role in (ClusterRole.LEADER, ClusterRole.STANDBY_LEADER):
            leader = name
        if role in (ClusterRole.SYNC_STANDBY, ClusterRole.QUORUM_STANDBY):
            sync.append(name)
        members.append(Member(
            name=name, conn_url=f"postgres://{item.get('host')}:{item.get('port') or 5432}/postgres",
            api_url=str(item.get("api_url") or ""), state=str(item.get("state") or PgState.UNKNOWN),
            role=Role.PRIMARY if role == ClusterRole.LEADER else Role.REPLICA, timeline=item.get("timeline"),
            xlog_location=lsn_or_none(item.get("lsn")), receive_lsn=lsn_or_none(item.get("receive_lsn")),
            replay_lsn=lsn_or_none(item.get("replay_lsn")), tags=Tags.from_json(item.get("tags")),
            pending_restart=bool(item.get("pending_restart")),
        ))
    config = _optional_json(target, f"{base}/config")
    history = _optional_json(target, f"{base}/history") or []
    patroni = _optional_json(target, f"{base}/patroni") or {}
    return ClusterView(
        initialize=patroni.get("database_system_identifier") if isinstance(patroni, dict) else None,
        config=config if isinstance(config, dict) else None,
        leader=Leader(leader) if leader else None,
        members=tuple(members),
        sync=SyncState(leader=leader, sync_standby=tuple(sync)) if sync else None,
        history=tuple(HistoryEntry(int(h[0]), int(h[1]), str(h[2]), *(h[3:5])) for h in history
                      if isinstance(h, list) and len(h) >= 3),
    )


def _optional_json(target: Target, url: str) -> Any:
    try:
        return get_json(target, url)
    except CtlError:
        return None
