"""The demo's on-disk layout: node addresses, per-node config YAML, secrets, rendered conf files."""

from __future__ import annotations

import os
import pwd
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from appliance.config.schema import DEFAULT_ETCD_USER, LocalConfig
from appliance.proxy.haproxy import ProxyNode, ProxySettings, haproxy_command, render_haproxy_cfg
from appliance.runtime.node import load_local_config, node_supervisor_spec
from appliance.runtime.supervisor import (
    PRIORITIES,
    LogTarget,
    Program,
    SupervisorSpec,
    package_root,
    render_supervisord_conf,
)
from appliance.tls import identity, pki
from appliance.tls.identity import NodeTls

PG_PORT, API_PORT, ETCD_CLIENT_PORT, ETCD_PEER_PORT = 5432, 8008, 2379, 2380
SCOPE = "demo"
PROXY = "proxy"
DEFAULT_DIR = "/var/tmp/pgappliance-demo"
# AF_UNIX paths are limited to 108 bytes; PostgreSQL's socket lives in the run dir.
_MAX_SOCKET_PATH = 100


def check_net(net: str) -> str:
    """``127.A.B``: node N gets ``127.A.B.N`` (Linux routes all of 127/8 to lo)."""
    parts = net.split(".")
    if len(parts) != 3 or parts[0] != "127" or not all(p.isdigit() and int(p) <= 255 for p in parts):
        raise ValueError(f"--net must look like 127.A.B (three octets under 127/8), got {net!r}")
    return net


API_USER = "appliance"


@dataclass(frozen=True)
class Secrets:
    """The demo cluster's identity: passwords (files in ``dir``) and the CA."""

    superuser_password: str = field(repr=False)
    replication_password: str = field(repr=False)
    restapi_password: str = field(repr=False, default="")
    etcd_password: str = field(repr=False, default="")
    etcd_root_password: str = field(repr=False, default="")
    dir: Path = Path(".")

    @property
    def ca_file(self) -> str:
        return str(self.dir / identity.CA_CERT)

    @property
    def ca_key_file(self) -> str:
        return str(self.dir / identity.CA_KEY)


@dataclass(frozen=True)
class DemoLayout:
    """Where everything of one demo cluster lives, and on which addresses it listens."""

    dir: Path
    net: str = "127.0.2"
    proxy_address: str = "127.0.0.1"
    proxy_ports: tuple[int, int, int] = (5000, 5001, 7000)
    size: int = 3
    programs: tuple[str, ...] | None = None
    token: str = ""
    # False only for measuring what the protections cost (bench/security_cost.py): every channel
    # plaintext and unauthenticated, on purpose (security.* opt-outs, logged at every start).
    secure: bool = True

    @property
    def scheme(self) -> str:
        return "https" if self.secure else "http"

    @property
    def nodes(self) -> list[str]:
        return [f"node{i}" for i in range(1, self.size + 1)]

    def check_node(self, node: str) -> str:
        name = f"node{node}" if node.isdigit() else node
        if name not in self.nodes:
            raise ValueError(f"unknown node {node!r}: choose among {', '.join(self.nodes)}")
        return name

    def host(self, node: str) -> str:
        return f"{self.net}.{self.nodes.index(node) + 1}"

    def node_dir(self, node: str) -> Path:
        return self.dir / node

    def config_path(self, node: str) -> Path:
        return self.node_dir(node) / "config.yml"

    def data_dir(self, node: str) -> Path:
        return self.node_dir(node) / "pgdata"

    def run_dir(self, node: str) -> Path:
        return self.node_dir(node) / "run"

    def log_dir(self, node: str) -> Path:
        return self.node_dir(node) / "log"

    def supervisord_conf(self, node: str) -> Path:
        return self.node_dir(node) / "supervisord.conf"

    @property
    def secrets_path(self) -> Path:
        return self.dir / "secrets"

    def tls_dir(self, node: str) -> Path:
        return self.node_dir(node) / "tls"

    @property
    def client_dir(self) -> Path:
        """The operator's certificate (etcd needs a client certificate from its CA)."""
        return self.dir / "client"

    @property
    def client_config_path(self) -> Path:
        """An operator config for ``appliance -c`` and patronictl: etcd, REST API, CA, credentials."""
        return self.dir / "client.yml"

    @property
    def layout_path(self) -> Path:
        return self.dir / "demo.yml"

    def etcd_hosts(self) -> list[str]:
        return [f"{self.host(n)}:{ETCD_CLIENT_PORT}" for n in self.nodes]

    def initial_cluster(self) -> str:
        return ",".join(f"{n}={self.scheme}://{self.host(n)}:{ETCD_PEER_PORT}" for n in self.nodes)


def save_layout(layout: DemoLayout) -> None:
    data = {
        "net": layout.net,
        "proxy_address": layout.proxy_address,
        "proxy_ports": list(layout.proxy_ports),
        "size": layout.size,
        "programs": list(layout.programs) if layout.programs is not None else None,
        "token": layout.token,
        "secure": layout.secure,
    }
    layout.layout_path.write_text(yaml.safe_dump(data, sort_keys=False))


def load_layout(directory: Path) -> DemoLayout | None:
    path = directory / "demo.yml"
    if not path.exists():
        return None
    data = yaml.safe_load(path.read_text()) or {}
    programs = data.get("programs")
    return DemoLayout(
        dir=directory,
        net=check_net(str(data["net"])),
        proxy_address=str(data["proxy_address"]),
        proxy_ports=tuple(int(p) for p in data["proxy_ports"]),  # type: ignore[arg-type]
        size=int(data.get("size", 3)),
        programs=tuple(programs) if programs is not None else None,
        token=str(data["token"]),
        secure=bool(data.get("secure", True)),
    )


def load_or_create_secrets(path: Path) -> Secrets:
    """The demo's secrets directory (passwords and CA, 0600), created once and reused by every ``up``."""
    identity.init_secrets(path, scope=SCOPE)

    def read(name: str) -> str:
        return (path / name).read_text().strip()

    return Secrets(read("postgres_password"), read("replication_password"), read("restapi_password"),
                   read("etcd_password"), read("etcd_root_password"), path)


def node_tls(layout: DemoLayout, node: str, creds: Secrets, user: str | None) -> NodeTls:
    """The node's certificate (SANs: its name, its address, localhost), issued from the demo CA."""
    uid, gid = _ids(user)
    tls, _ = identity.issue_node(creds.ca_file, creds.ca_key_file, layout.tls_dir(node),
                                 dns_names=[node, "localhost"], ip_addresses=[layout.host(node), "127.0.0.1"],
                                 uid=uid, gid=gid)
    return tls


def client_tls(layout: DemoLayout, creds: Secrets) -> NodeTls:
    tls, _ = identity.issue_node(creds.ca_file, creds.ca_key_file, layout.client_dir,
                                 dns_names=["localhost"], ip_addresses=[])
    return tls


def _ids(user: str | None) -> tuple[int | None, int | None]:
    if user is None:
        return None, None
    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def node_config(layout: DemoLayout, node: str, creds: Secrets, tls: NodeTls | None = None) -> dict[str, Any]:
    """The node's YAML (Patroni key names); validated against LocalConfig before it is written."""
    host = layout.host(node)
    run_dir = str(layout.run_dir(node))
    tls = tls or NodeTls(*(str(layout.tls_dir(node) / n) for n in (identity.CA_CERT, identity.NODE_CERT,
                                                                       identity.NODE_KEY)))
    config: dict[str, Any] = {
        "scope": SCOPE,
        "name": node,
        "restapi": {"listen": f"{host}:{API_PORT}", "connect_address": f"{host}:{API_PORT}",
                    "authentication": {"username": API_USER, "password": creds.restapi_password}},
        "etcd3": {"hosts": layout.etcd_hosts(), "username": DEFAULT_ETCD_USER, "password": creds.etcd_password},
        "tls": {"ca_file": tls.ca_file, "cert_file": tls.cert_file, "key_file": tls.key_file},
        "postgresql": {
            "listen": f"{host}:{PG_PORT}",
            "connect_address": f"{host}:{PG_PORT}",
            "data_dir": str(layout.data_dir(node)),
            "authentication": {
                "superuser": {"username": "postgres", "password": creds.superuser_password},
                "replication": {"username": "replicator", "password": creds.replication_password},
            },
        },
        "etcd": {
            "name": node,
            "data_dir": str(layout.node_dir(node) / "etcd"),
            "listen_client": f"{host}:{ETCD_CLIENT_PORT}",
            "listen_peer": f"{host}:{ETCD_PEER_PORT}",
            "advertise_client": f"{host}:{ETCD_CLIENT_PORT}",
            "advertise_peer": f"{host}:{ETCD_PEER_PORT}",
            "initial_cluster": layout.initial_cluster(),
            "initial_cluster_token": layout.token,
            "root_password": creds.etcd_root_password,
        },
        "haproxy": {"enabled": False},  # the demo runs one shared HAProxy (the proxy node)
        "appliance": {"run_dir": run_dir, "peers": [layout.host(n) for n in layout.nodes if n != node]},
    }
    if not layout.secure:
        _strip_security(config)
    LocalConfig.model_validate(config)
    return config


INSECURE = {c: False for c in ("restapi_tls", "restapi_auth", "etcd_tls", "etcd_auth", "postgresql_tls")}


def _strip_security(config: dict[str, Any]) -> None:
    config.pop("tls")
    config["restapi"].pop("authentication")
    for key in ("username", "password"):
        config["etcd3"].pop(key)
    config["etcd"].pop("root_password")
    config["security"] = dict(INSECURE)


def prepare_dirs(paths: list[Path], user: str | None) -> None:
    for path in paths:
        path.mkdir(parents=True, exist_ok=True)
        chown(path, user)


def chown(path: Path, user: str | None) -> None:
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def check_reachable(directory: Path, user: str | None) -> None:
    """Every ancestor of ``directory`` must be traversable by ``user`` (postgres cannot enter /root)."""
    if user is None:
        return
    entry = pwd.getpwnam(user)
    for parent in [directory.resolve(), *directory.resolve().parents]:
        if not parent.exists():
            continue  # created later by us, with a traversable mode
        st = parent.stat()
        ok = st.st_mode & stat.S_IXOTH or (st.st_uid == entry.pw_uid and st.st_mode & stat.S_IXUSR)
        if not ok:
            raise ValueError(
                f"{directory} is not reachable by the {user} user ({parent} is mode "
                f"{stat.filemode(st.st_mode)}): use a directory under /var/tmp"
            )


def check_socket_paths(directory: Path) -> None:
    # The manager puts PostgreSQL's socket in <run_dir>/pgsocket: each node has its own.
    socket = str(directory.resolve() / "node1" / "run" / "pgsocket" / f".s.PGSQL.{PG_PORT}.lock")
    if len(socket) > _MAX_SOCKET_PATH:
        raise ValueError(f"demo dir {directory} is too long for unix socket paths ({socket}): use a shorter one")


def write_node_files(layout: DemoLayout, node: str, creds: Secrets, user: str | None) -> None:
    """config.yml once (later ``up`` runs keep it, edits included); the node certificate when it is
    missing or due; supervisord.conf every time."""
    prepare_dirs([layout.node_dir(node), layout.run_dir(node), layout.log_dir(node)], user)
    tls = node_tls(layout, node, creds, user)
    path = layout.config_path(node)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            yaml.safe_dump(node_config(layout, node, creds, tls), handle, sort_keys=False)
        chown(path, user)
    config = load_local_config(path)
    programs = None if layout.programs is None else [p for p in layout.programs if p != "haproxy"]
    spec = node_supervisor_spec(
        config,
        path,
        log=LogTarget.files(layout.log_dir(node)),
        user=user,
        nodaemon=False,
        programs=programs,
    )
    layout.supervisord_conf(node).write_text(render_supervisord_conf(spec))


def client_config(layout: DemoLayout, creds: Secrets, tls: NodeTls) -> dict[str, Any]:
    """The operator's view of the demo, valid for ``appliance -c`` and for patronictl alike."""
    if not layout.secure:
        return {"scope": SCOPE, "namespace": "/service/", "etcd3": {"hosts": layout.etcd_hosts()}}
    return {
        "scope": SCOPE,
        "namespace": "/service/",
        "etcd3": {"hosts": layout.etcd_hosts(), "protocol": "https", "cacert": tls.ca_file, "cert": tls.cert_file,
                  "key": tls.key_file, "username": DEFAULT_ETCD_USER, "password": creds.etcd_password},
        "restapi": {"authentication": {"username": API_USER, "password": creds.restapi_password}},
        "ctl": {"cacert": tls.ca_file, "certfile": tls.cert_file, "keyfile": tls.key_file},
    }


def write_client_files(layout: DemoLayout, creds: Secrets) -> None:
    tls = client_tls(layout, creds)
    fd = os.open(layout.client_config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump(client_config(layout, creds, tls), handle, sort_keys=False)


def proxy_ca(layout: DemoLayout) -> Path:
    return layout.dir / PROXY / identity.CA_CERT


def proxy_spec(layout: DemoLayout, user: str | None) -> tuple[str, SupervisorSpec]:
    """The proxy node: one HAProxy for the whole demo, supervised like the other programs."""
    directory = layout.dir / PROXY
    run_dir = directory / "run"
    nodes = [ProxyNode(n, layout.host(n), PG_PORT, layout.host(n), API_PORT) for n in layout.nodes]
    primary, replicas, stats = layout.proxy_ports
    settings = ProxySettings(
        bind_address=layout.proxy_address,
        primary_port=primary,
        replica_port=replicas,
        stats_port=stats,
        run_dir=str(run_dir),
        check_ca_file=str(proxy_ca(layout)) if layout.secure else None,
    )
    cfg_path = directory / "haproxy.cfg"
    program = Program("haproxy", haproxy_command(str(cfg_path)), PRIORITIES["haproxy"], startsecs=2, stopwaitsecs=10)
    spec = SupervisorSpec(
        run_dir=str(run_dir),
        programs=[program],
        log=LogTarget.files(directory / "log"),
        user=user,
        nodaemon=False,
        environment={"PYTHONPATH": package_root()},
    )
    return render_haproxy_cfg(nodes, settings), spec


def write_proxy_files(layout: DemoLayout, creds: Secrets, user: str | None) -> None:
    directory = layout.dir / PROXY
    prepare_dirs([directory, directory / "run", directory / "log"], user)
    uid, gid = _ids(user)
    pki.ensure_private_file(str(proxy_ca(layout)), Path(creds.ca_file).read_bytes(), uid=uid, gid=gid,
                                     mode=0o644)
    haproxy_cfg, spec = proxy_spec(layout, user)
    (directory / "haproxy.cfg").write_text(haproxy_cfg)
    (directory / "supervisord.conf").write_text(render_supervisord_conf(spec))
