"""Render haproxy.cfg: 5000 -> the primary, 5001 -> healthy replicas, 7000 -> stats and /metrics."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass

from appliance.config.schema import Haproxy

DEFAULT_HAPROXY_BIN = "/usr/sbin/haproxy"
_NAME = re.compile(r"^[A-Za-z0-9_.:-]+$")


@dataclass(frozen=True)
class ProxyNode:
    """One server line: where PostgreSQL listens and where its REST API answers health checks."""

    name: str
    pg_host: str
    pg_port: int
    api_host: str
    api_port: int


@dataclass(frozen=True)
class ProxySettings:
    bind_address: str = "0.0.0.0"
    primary_port: int = 5000
    replica_port: int = 5001
    stats_port: int = 7000
    replica_max_lag: str = "16MB"
    run_dir: str = "/run/pgappliance"
    primary_check_method: str = "OPTIONS"
    replica_check_method: str = "GET"
    maxconn: int = 1000
    server_maxconn: int = 100
    # Peers addressed by name (containers, VMs): re-resolve them at run time through the system's
    # resolv.conf, and start even while a peer's name does not resolve yet (it may start later).
    resolve_at_runtime: bool = False
    # The REST APIs serve HTTPS: check them over TLS, verifying their certificates against this CA.
    check_ca_file: str | None = None

    @classmethod
    def from_config(cls, haproxy: Haproxy, run_dir: str, check_ca_file: str | None = None) -> ProxySettings:
        return cls(
            bind_address=haproxy.bind_address,
            primary_port=haproxy.primary_port,
            replica_port=haproxy.replica_port,
            stats_port=haproxy.stats_port,
            replica_max_lag=haproxy.replica_max_lag,
            run_dir=run_dir,
            check_ca_file=check_ca_file,
        )

    @property
    def admin_socket(self) -> str:
        return os.path.join(self.run_dir, "haproxy.sock")


def _check(nodes: Sequence[ProxyNode]) -> None:
    if not nodes:
        raise ValueError("haproxy needs at least one node to route to")
    names = [node.name for node in nodes]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate node names for haproxy: {names}")
    for name in names:
        if not _NAME.match(name):
            raise ValueError(f"node name {name!r} cannot be a haproxy server name (use [A-Za-z0-9_.:-])")


def _bind(address: str, port: int) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"{host}:{port}"


RESOLVERS = "dns"


_PATH = re.compile(r"^/[A-Za-z0-9_./@+-]+$")


def _tls_check(ca_file: str | None) -> str:
    if ca_file is None:
        return ""
    if not _PATH.match(ca_file):
        raise ValueError(f"CA file path {ca_file!r} cannot go into haproxy.cfg (use an absolute path of "
                         "letters, digits and _./@+-)")
    return f" check-ssl verify required ca-file {ca_file}"


def _servers(nodes: Sequence[ProxyNode], maxconn: int, resolve: bool = False, ca_file: str | None = None) -> list[str]:
    lines = []
    for n in nodes:
        line = f"    server {n.name} {_bind(n.pg_host, n.pg_port)} maxconn {maxconn} check port {n.api_port}"
        line += _tls_check(ca_file)
        if resolve:
            # 'addr' is resolved once at start-up: leave it out when the checks go to the same host.
            if n.api_host != n.pg_host:
                line += f" addr {n.api_host}"
            line += f" resolvers {RESOLVERS} init-addr last,libc,none"
        else:
            line += f" addr {n.api_host}"
        lines.append(line)
    return lines


def _resolvers(settings: ProxySettings) -> list[str]:
    if not settings.resolve_at_runtime:
        return []
    # hold valid: a restarted container may come back with another address; keep it short.
    return [f"resolvers {RESOLVERS}", "    parse-resolv-conf", "    hold valid 2s", "    hold obsolete 5s", ""]


def render_haproxy_cfg(nodes: Sequence[ProxyNode], settings: ProxySettings) -> str:
    """The haproxy.cfg text.

    No pidfile (several instances share a host in the demo) and no log target: in the foreground
    (``-db``) haproxy prints its notices and server state changes to stderr, which supervisord keeps.
    """
    _check(nodes)
    s = settings
    lines = [
        "global",
        f"    maxconn {s.maxconn}",
        f"    stats socket {s.admin_socket} mode 660 level admin expose-fd listeners",
        "    stats timeout 30s",
        "",
        *_resolvers(s),
        "defaults",
        "    mode tcp",
        "    retries 2",
        "    timeout connect 4s",
        "    timeout client 30m",
        "    timeout server 30m",
        "    timeout check 2s",
        # shutdown-sessions: clients of a demoted primary must be cut, not left writing to a replica.
        "    default-server inter 1s fastinter 250ms downinter 250ms fall 3 rise 1 on-marked-down shutdown-sessions",
        # fall 3: a check waits at most min(timeout connect, inter) = 1 s for the TLS handshake, so three
        # failures span ~3.5 s: an API restarting behind its held socket (2-3 s) is not marked down.
        "",
        "listen stats",
        "    mode http",
        f"    bind {_bind(s.bind_address, s.stats_port)}",
        "    http-request use-service prometheus-exporter if { path /metrics }",
        "    stats enable",
        "    stats uri /",
        "    stats refresh 5s",
        "",
        "listen primary",
        f"    bind {_bind(s.bind_address, s.primary_port)}",
        # A demoted primary refuses connections before its checks fail: take it out at the first
        # refused client connection and fail that client at once (no 1 s retry turn-around), so a
        # planned switchover costs seconds of writes, not a retry storm.
        "    retries 0",
        "    default-server inter 1s fastinter 250ms downinter 250ms fall 3 rise 1 on-marked-down shutdown-sessions"
        " observe layer4 error-limit 1 on-error mark-down",
        "    option httpchk",
        f"    http-check send meth {s.primary_check_method} uri /primary",
        "    http-check expect status 200",
        *_servers(nodes, s.server_maxconn, s.resolve_at_runtime, s.check_ca_file),
        "",
        "listen replicas",
        f"    bind {_bind(s.bind_address, s.replica_port)}",
        "    balance roundrobin",
        "    option httpchk",
        f"    http-check send meth {s.replica_check_method} uri /replica?lag={s.replica_max_lag}",
        "    http-check expect status 200",
        *_servers(nodes, s.server_maxconn, s.resolve_at_runtime, s.check_ca_file),
    ]
    return "\n".join(lines) + "\n"


def haproxy_command(config_path: str, haproxy_bin: str | None = None) -> list[str]:
    """Master-worker in the foreground (``-W -db``): supervisord supervises it; SIGUSR2 reloads."""
    return [haproxy_bin or shutil.which("haproxy") or DEFAULT_HAPROXY_BIN, "-W", "-db", "-f", config_path]
