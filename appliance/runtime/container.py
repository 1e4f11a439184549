"""The container's settings: node identity and peers from env/hostname, derived defaults, secrets.

The image renders one local YAML for its programs: container defaults derived here (names,
advertised addresses, the etcd member list, from ``APPLIANCE_PEERS`` and the hostname), below the
image's and the operator's YAML files. The environment stays the top layer: every program applies
it itself, exactly as documented in docs/configuration.md.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from appliance.config.classify import keeps_string
from appliance.config.envvars import env_layer
from appliance.config.errors import ConfigError
from appliance.config.schema import LocalConfig, split_listen
from appliance.config.tree import Tree, merge, set_path
from appliance.config.yamlfile import expand_paths, read_files
from appliance.core.flags import parse_bool
from appliance.net.address import split_host_port
from appliance.proxy.haproxy import ProxyNode
from appliance.runtime.container_identity import derive_secret

CONFIG_DIR = "/etc/pgappliance"
# The image's defaults, then the operator's drop-ins (merged in name order, last wins).
DEFAULT_INPUTS = (f"{CONFIG_DIR}/appliance.yml", f"{CONFIG_DIR}/conf.d")
RENDERED_NAME = "appliance.yml"
PEERS_ENV = "APPLIANCE_PEERS"
DEMO_ENV = "APPLIANCE_DEMO_INSECURE"
DEMO_PASSWORD = "postgres"
# Names of the environment that are not settings of the config layers: consumed here only.
NOT_FOR_PROGRAMS = (PEERS_ENV, DEMO_ENV)
_SECRET_SUFFIXES = ("PASSWORD", "SECRET", "TOKEN")
_FIXED_TWINS = ("POSTGRES_PASSWORD", "POSTGRES_USER", "POSTGRES_DB", "APPLIANCE_REPLICATION_PASSWORD")
_SPLIT = re.compile(r"[\s,]+")


class EntrypointError(RuntimeError):
    """The container cannot start as configured; the message says what to change."""


def twin_bases(env: Mapping[str, str]) -> list[str]:
    """Variables that may come from a file (``VAR_FILE``), as the config layer defines them."""
    bases = set(_FIXED_TWINS)
    for name in env:
        base = name.removesuffix("_FILE")
        if base.startswith("APPLIANCE_") and base.endswith(_SECRET_SUFFIXES) and not base.startswith("APPLIANCE_DEMO_"):
            bases.add(base)
    return sorted(bases)


def resolve_file_twins(env: Mapping[str, str]) -> dict[str, str]:
    """docker-library's ``file_env``, done once by root: ``VAR_FILE`` becomes ``VAR`` (so a secret
    readable by root only works), both set is an error, the file's trailing newlines are dropped."""
    out = dict(env)
    for base in twin_bases(env):
        file_var = f"{base}_FILE"
        plain, path = env.get(base, ""), env.get(file_var, "")
        if plain and path:
            raise EntrypointError(f"both {base} and {file_var} are set (but are exclusive): unset one of them")
        out.pop(file_var, None)
        if not path:
            continue
        try:
            out[base] = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise EntrypointError(f"{file_var}: cannot read {path}: {reason}: mount the secret file there") from None
    return out


def parse_peers(raw: str) -> list[str]:
    """``node1,node2,node3`` (commas or spaces) or a JSON list; duplicates dropped, order kept."""
    raw = raw.strip()
    if raw.startswith("["):
        try:
            items = [str(item) for item in json.loads(raw)]
        except (ValueError, TypeError):
            raise EntrypointError(f"{PEERS_ENV}={raw!r} is not a JSON list of host names") from None
    else:
        items = [item for item in _SPLIT.split(raw) if item]
    peers: list[str] = []
    for item in items:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]*", item):
            raise EntrypointError(f"{PEERS_ENV}: {item!r} is not a host name (use the nodes' DNS names, "
                                  "e.g. APPLIANCE_PEERS=node1,node2,node3)")
        if item not in peers:
            peers.append(item)
    return peers


@dataclass(frozen=True)
class Identity:
    """Who this node is on the network: ``host`` is how the others reach it; ``members`` every node
    (this one included) by host name, empty for a single-node cluster."""

    host: str
    members: tuple[str, ...]

    @property
    def others(self) -> tuple[str, ...]:
        return tuple(m for m in self.members if m != self.host)

    @property
    def single(self) -> bool:
        return len(self.members) <= 1


def identity(peers: Sequence[str], hostname: str, aliases: Sequence[str] = ()) -> Identity:
    """This node among ``peers``: the entry equal to its hostname (or an alias: FQDN, member
    name). A list without it gets the hostname added, so that the list may name the others only."""
    if not peers:
        return Identity(hostname, ())
    names = [hostname, *aliases]
    host = next((p for p in peers if p in names), None)
    members = list(peers)
    if host is None:
        host = hostname
        members.append(hostname)
    return Identity(host, tuple(sorted(members)))


def _port(address: str, default: int) -> int:
    return split_host_port(address, default)[1]


def derived_defaults(base: LocalConfig, ident: Identity, explicit: Tree, env: Mapping[str, str]) -> Tree:
    """Container defaults, below every YAML file and the env: names, advertised addresses, etcd."""
    pg_port = split_listen(base.postgresql.listen)[1]
    api_port = _port(base.restapi.listen, 8008)
    client_port = _port(base.etcd.listen_client, 2379)
    peer_port = _port(base.etcd.listen_peer, 2380)
    name = base.name if "name" in explicit else ident.host
    peer_scheme = "https" if base.security.etcd_tls else "http"
    tree: Tree = {
        "name": name,
        "restapi": {"connect_address": f"{ident.host}:{api_port}"},
        "postgresql": {"connect_address": f"{ident.host}:{pg_port}"},
        "etcd": {"initial_cluster_token": f"pgappliance-{base.scope}"},
    }
    if env.get("PGDATA"):
        tree["postgresql"]["data_dir"] = env["PGDATA"]
    if ident.single:
        # Loopback for the lone member: its peer URL stays valid if the container's name changes.
        tree["etcd3"] = {"hosts": [f"127.0.0.1:{client_port}"]}
        tree["etcd"].update({"name": "etcd", "advertise_client": f"127.0.0.1:{client_port}",
                             "advertise_peer": f"127.0.0.1:{peer_port}", "initial_cluster": ""})
        return tree
    tree["etcd3"] = {"hosts": [f"{m}:{client_port}" for m in ident.members]}
    tree["etcd"].update({
        "name": ident.host,
        "advertise_client": f"{ident.host}:{client_port}",
        "advertise_peer": f"{ident.host}:{peer_port}",
        "initial_cluster": ",".join(f"{m}={peer_scheme}://{m}:{peer_port}" for m in ident.members),
    })
    tree["appliance"] = {"peers": list(ident.others)}
    return tree


def input_paths(env: Mapping[str, str], rendered: str) -> list[str]:
    """The YAML inputs: ``APPLIANCE_CONFIG`` when it names another file than the rendered one
    (an operator's own file), else the image's file and its conf.d drop-ins."""
    chosen = env.get("APPLIANCE_CONFIG", "")
    if chosen and os.path.abspath(chosen) != os.path.abspath(rendered):
        return [chosen]
    return [path for path in DEFAULT_INPUTS if os.path.exists(path)]


def merged_inputs(paths: Sequence[str]) -> tuple[Tree, list[str]]:
    """The input files merged (raw, before defaults), and the files read; raises ConfigError."""
    files, problems = expand_paths(list(paths))
    tree, _prov, read_problems = read_files(files)
    if problems or read_problems:
        raise ConfigError(problems + read_problems)
    return tree, files


def render_tree(derived: Tree, inputs: Tree) -> Tree:
    tree = copy.deepcopy(derived)
    merge(tree, {}, inputs, {})
    return tree


def proxy_nodes(config: LocalConfig, ident: Identity) -> tuple[list[ProxyNode], bool]:
    """HAProxy's servers, and whether they are names to re-resolve at run time."""
    pg_port = split_listen(config.postgresql.listen)[1]
    api_port = _port(config.restapi.listen, 8008)
    if ident.single:
        return [ProxyNode(config.name, "127.0.0.1", pg_port, "127.0.0.1", api_port)], False
    return [ProxyNode(m, m, pg_port, m, api_port) for m in ident.members], True


def derive_replication_password(superuser_password: str, scope: str) -> str:
    """One secret for the operator to manage: the replication password follows from the superuser's
    (HMAC-SHA256), the same on every node, unless APPLIANCE_REPLICATION_PASSWORD is set."""
    return derive_secret(superuser_password, scope, "replication")


def pgdata_initialised(data_dir: str) -> bool:
    return (Path(data_dir) / "PG_VERSION").is_file()


MISSING_PASSWORD = """\
Error: Database is uninitialized and superuser password is not specified.
       You must specify POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE) to a non-empty value for the
       superuser. For example, "-e POSTGRES_PASSWORD=password" on "docker run", or a secret file
       with POSTGRES_PASSWORD_FILE=/run/secrets/postgres_password.

       For a throw-away demo only, APPLIANCE_DEMO_INSECURE=1 uses the password "postgres".
       This is not recommended: anyone who can reach the ports can log in."""


def database_passwords(config: LocalConfig, env: Mapping[str, str], initialised: bool) -> Tree:
    """Config keys for the superuser password in demo mode and the derived replication password.
    Raises EntrypointError when an empty data dir has no superuser password."""
    tree: Tree = {}
    auth = config.postgresql.authentication
    password = auth.superuser.password
    if not password and parse_bool(env.get(DEMO_ENV, "")) is True:
        password = DEMO_PASSWORD
        set_path(tree, ("postgresql", "authentication", "superuser", "password"), password)
    if not password and not initialised:
        raise EntrypointError(MISSING_PASSWORD)
    if password and not auth.replication.password:
        set_path(tree, ("postgresql", "authentication", "replication", "password"),
                 derive_replication_password(password, config.scope))
    return tree


def is_secret_var(name: str) -> bool:
    """A variable holding a secret (or naming its file): it goes into the rendered YAML (0600), never
    into the environment of etcd, HAProxy, the postmaster or any other program."""
    base = name.removesuffix("_FILE")
    return base == "POSTGRES_PASSWORD" or (base.startswith("APPLIANCE_") and base.endswith(_SECRET_SUFFIXES)
                                           and not base.startswith("APPLIANCE_DEMO_"))


def secrets_tree(env: Mapping[str, str]) -> Tree:
    """The secret variables (their *_FILE twins already read) as config keys, for the rendered YAML."""
    secret = {k: v for k, v in env.items() if is_secret_var(k) and not k.endswith("_FILE")}
    tree, _prov, problems = env_layer(secret, keeps_string)
    if problems:
        raise ConfigError(problems)
    return tree


def program_environment(env: Mapping[str, str], home: str, user: str, rendered: str) -> dict[str, str]:
    """The supervisord's environment: the container's, minus what is not a setting, minus every
    secret (they are in the rendered YAML), minus etcd's own ETCD_* variables (they would conflict
    with the flags we pass)."""
    out = {k: v for k, v in config_env(env).items() if not k.startswith("ETCD_")}
    out.update({"HOME": home, "USER": user, "LOGNAME": user, "APPLIANCE_CONFIG": rendered,
                "PYTHONUNBUFFERED": "1"})
    return out


# The entrypoint turns these into the node's own files (run_dir/tls) and renders their paths.
TLS_ENV_PREFIX = "APPLIANCE_TLS__"


def config_env(env: Mapping[str, str]) -> dict[str, str]:
    """The environment as the programs' config layers see it: what is not a setting, the secrets and
    the TLS inputs (all rendered into the YAML) removed."""
    return {k: v for k, v in env.items()
            if k not in NOT_FOR_PROGRAMS and not is_secret_var(k) and not k.startswith(TLS_ENV_PREFIX)}


def peers_from(env: Mapping[str, str], base: LocalConfig) -> list[str]:
    raw = env.get(PEERS_ENV, "")
    return parse_peers(raw) if raw.strip() else list(base.appliance.peers)


def describe(config: LocalConfig, ident: Identity) -> str:
    if ident.single:
        return f"node {config.name} (scope {config.scope}): a single-node cluster"
    return (f"node {config.name} (scope {config.scope}) at {ident.host}, members {', '.join(ident.members)}")


def as_yaml_header(files: Sequence[str]) -> str:
    sources = ", ".join(files) if files else "no file"
    return ("# Rendered by the container entrypoint at every start: do not edit (it is overwritten).\n"
            f"# Container defaults (APPLIANCE_PEERS, hostname) < {sources}; APPLIANCE_*/POSTGRES_* env wins.\n")
