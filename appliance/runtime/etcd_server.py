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


@dataclass(frozen=True)
class MemberTls:
    """The embedded member's TLS files: one node certificate for its client and peer ports."""

    cert: str
    key: str
    ca: str


def member_tls(config: LocalConfig) -> MemberTls | None:
    """TLS for the embedded member unless security.etcd_tls is off (then plain http, on purpose)."""
    tls = config.tls
    if not config.security.etcd_tls or not (tls.cert_file and tls.key_file and tls.ca_file):
        return None
    return MemberTls(tls.cert_file, tls.key_file, tls.ca_file)


def scheme(config: LocalConfig) -> str:
    return "https" if member_tls(config) is not None else "http"


def peer_url(config: LocalConfig) -> str:
    return _url(config.etcd.advertise_peer, scheme(config))


def initial_cluster(config: LocalConfig) -> str:
    """``name=peer_url,...``; an empty setting means a cluster of just this member."""
    if config.etcd.initial_cluster:
        return config.etcd.initial_cluster
    return f"{member_name(config)}={peer_url(config)}"


def _check_schemes(members: str, wanted: str) -> None:
    for entry in members.split(","):
        url = entry.split("=", 1)[-1]
        if "://" in url and not url.startswith(f"{wanted}://"):
            raise ValueError(f"etcd.initial_cluster entry {entry!r} is not {wanted}:// although the member runs "
                             f"{'with' if wanted == 'https' else 'without'} TLS: write every peer URL as {wanted}://")


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
    tls = member_tls(config)
    proto = scheme(config)
    own_peer = peer_url(config)
    members = cluster if cluster is not None else initial_cluster(config)
    _check_schemes(members, proto)
    _check_member_listed(name, members, own_peer)
    flags = {
        "--name": name,
        "--data-dir": etcd.data_dir,
        "--listen-client-urls": _url(etcd.listen_client, proto),
        "--advertise-client-urls": _url(etcd.advertise_client, proto),
        "--listen-peer-urls": _url(etcd.listen_peer, proto),
        "--initial-advertise-peer-urls": own_peer,
        "--initial-cluster": members,
        "--initial-cluster-token": etcd.initial_cluster_token,
        "--initial-cluster-state": state,
        "--heartbeat-interval": str(etcd.heartbeat_interval_ms),
        "--election-timeout": str(etcd.election_timeout_ms),
    }
    if tls is not None:
        # One CA for both ports; a client or peer without a certificate it signed is refused.
        flags.update({
            "--cert-file": tls.cert, "--key-file": tls.key, "--trusted-ca-file": tls.ca,
            "--client-cert-auth": "true",
            "--peer-cert-file": tls.cert, "--peer-key-file": tls.key, "--peer-trusted-ca-file": tls.ca,
            "--peer-client-cert-auth": "true",
        })
    # Boolean flags take their value only in the --flag=value form.
    argv = [etcd_bin or shutil.which("etcd") or DEFAULT_ETCD_BIN,
            *chain.from_iterable((f"{k}={v}",) if v == "true" else (k, v) for k, v in flags.items())]
    env = {
        # Without compaction the keyspace history grows until "mvcc: database space exceeded".
        "ETCD_AUTO_COMPACTION_RETENTION": "1",
        "ETCD_LOGGER": "zap",
        "ETCD_LOG_OUTPUTS": "stderr",
    }
    if (machine or platform.machine()) in ("aarch64", "arm64"):
        env["ETCD_UNSUPPORTED_ARCH"] = "arm64"  # etcd 3.4 exits on arm64 without it (3.5 ignores it)
    return EtcdCommand(argv=argv, env=env)


def client_urls(config: LocalConfig) -> list[str]:
    """Every member's client URL, as the manager and etcdctl see them."""
    return [_url(host, config.etcd3.protocol) for host in config.etcd3.hosts]


def own_client_url(config: LocalConfig) -> str:
    return _url(config.etcd.advertise_client, scheme(config))
