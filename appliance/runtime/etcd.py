"""The embedded etcd member's command line and environment, from LocalConfig.etcd (conventions §4)."""

from __future__ import annotations

import platform
import shutil
from dataclasses import dataclass, field
from itertools import chain
from typing import Literal

from appliance.config.schema import LocalConfig

ClusterState = Literal["new", "existing"]
DEFAULT_ETCD_BIN = "/usr/bin/etcd"


@dataclass(frozen=True)
class EtcdCommand:
    """What supervisord runs for the etcd program."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


def _url(address: str, protocol: str = "http") -> str:
    if "://" in address:
        return address
    return f"{protocol}://{address}"


def member_name(config: LocalConfig) -> str:
    return config.etcd.name or config.name


def initial_cluster(config: LocalConfig) -> str:
    """``name=peer_url,...``; an empty setting means a cluster of just this member."""
    if config.etcd.initial_cluster:
        return config.etcd.initial_cluster
    return f"{member_name(config)}={_url(config.etcd.advertise_peer)}"


def _check_member_listed(name: str, cluster: str, peer_url: str) -> None:
    entries = dict(item.split("=", 1) for item in cluster.split(",") if "=" in item)
    if name not in entries:
        raise ValueError(
            f"etcd.initial_cluster does not list this member {name!r} ({cluster!r}): "
            f"add {name}={peer_url} or set etcd.name"
        )
    if entries[name] != peer_url:
        raise ValueError(
            f"etcd.initial_cluster lists {name}={entries[name]} but etcd.advertise_peer is {peer_url}: "
            "they must be equal"
        )


def etcd_command(
    config: LocalConfig,
    state: ClusterState = "new",
    *,
    cluster: str | None = None,
    etcd_bin: str | None = None,
    machine: str | None = None,
) -> EtcdCommand:
    """The etcd member of this node.

    ``state``/``cluster`` exist for the wiped-member rejoin (member remove + add, then start with
    ``existing`` and the list ``member add`` printed); a normal start uses the configured list.
    """
    etcd = config.etcd
    name = member_name(config)
    peer_url = _url(etcd.advertise_peer)
    members = cluster if cluster is not None else initial_cluster(config)
    _check_member_listed(name, members, peer_url)
    flags = {
        "--name": name,
        "--data-dir": etcd.data_dir,
        "--listen-client-urls": _url(etcd.listen_client),
        "--advertise-client-urls": _url(etcd.advertise_client),
        "--listen-peer-urls": _url(etcd.listen_peer),
        "--initial-advertise-peer-urls": peer_url,
        "--initial-cluster": members,
        "--initial-cluster-token": etcd.initial_cluster_token,
        "--initial-cluster-state": state,
        "--heartbeat-interval": str(etcd.heartbeat_interval_ms),
        "--election-timeout": str(etcd.election_timeout_ms),
    }
    argv = [etcd_bin or shutil.which("etcd") or DEFAULT_ETCD_BIN, *chain.from_iterable(flags.items())]
    env = {
        # Without compaction the keyspace history grows until "mvcc: database space exceeded".
        "ETCD_AUTO_COMPACTION_RETENTION": "1",
        "ETCD_LOGGER": "zap",
        "ETCD_LOG_OUTPUTS": "stderr",
    }
    if (machine or platform.machine()) in ("aarch64", "arm64"):
        env["ETCD_UNSUPPORTED_ARCH"] = "arm64"  # etcd 3.4 exits on arm64 without it
    return EtcdCommand(argv=argv, env=env)


def client_urls(config: LocalConfig) -> list[str]:
    """Every member's client URL, as the manager and etcdctl see them."""
    return [_url(host, config.etcd3.protocol) for host in config.etcd3.hosts]
