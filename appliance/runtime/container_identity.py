"""The container's share of the cluster identity: its TLS certificate and the passwords, at every start.

Run by the root entrypoint before it drops to postgres. Whatever the operator gives wins (env,
``*_FILE`` secrets, YAML); what is missing is made here, so that a fresh cluster is secure with
nothing done by hand:

- the node certificate is issued from the cluster CA (``tls.ca_file`` + ``tls.ca_key_file``,
  which ``scripts/up`` generates into .secrets/) with SANs for the names and addresses the node has
  now; a certificate the operator brings is checked (expiry, CA, key) instead. A lone node with no
  CA makes its own, once, on its volume;
- the REST API and etcd passwords: a lone node generates them once on its volume; the nodes of a
  cluster derive them from the superuser password (HMAC, like the replication password) so that they
  agree without another secret to distribute.

Everything lands in files owned by postgres (0600) and in the rendered YAML, never in the programs'
environment: etcd, HAProxy and the postmaster see no secret at all.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from appliance.config.schema import LocalConfig
from appliance.config.tree import Tree
from appliance.tls import identity, pki
from appliance.tls.identity import NodeTls

OWN_CA_DIR = "pgappliance-ca"  # beside PGDATA, on the volume: a lone node's own CA
OWN_SECRETS_DIR = "pgappliance-secrets"


class IdentityError(RuntimeError):
    """The node cannot be given its identity; the message says what to set."""


@dataclass
class Identity:
    """Config keys to render (TLS files, passwords) and notes for the start-up log (no secret)."""

    tree: Tree = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def derive_secret(superuser_password: str, scope: str, label: str) -> str:
    """A cluster-wide secret that follows from the superuser password (HMAC-SHA256, per label)."""
    digest = hmac.new(superuser_password.encode(), f"pgappliance {label} {scope}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()).decode().rstrip("=")


def local_addresses(hostname: str) -> list[str]:
    """The node's IP addresses (what its name resolves to), loopback included."""
    found: list[str] = []
    try:
        infos = socket.getaddrinfo(hostname, None, proto=socket.IPPROTO_TCP)
    except OSError:
        infos = []
    for info in infos:
        address = str(info[4][0]).split("%", 1)[0]
        if address not in found:
            found.append(address)
    return [*found, *(a for a in ("127.0.0.1",) if a not in found)]


def _needs_tls(config: LocalConfig) -> bool:
    sec = config.security
    return sec.restapi_tls or sec.etcd_tls or sec.postgresql_tls


def _copy_private(source: str, target: Path, owner: tuple[int, int] | None, mode: int) -> str:
    uid, gid = owner if owner else (None, None)
    pki.ensure_private_file(str(target), pki.read_file(source), uid=uid, gid=gid, mode=mode)
    return str(target)


def _brought(config: LocalConfig, names: list[str], out: Path, owner: tuple[int, int] | None) -> NodeTls:
    """The operator's own certificate: checked, then copied where postgres may read it."""
    tls = config.tls
    assert tls.cert_file and tls.key_file and tls.ca_file
    problems = identity.check_node(NodeTls(tls.ca_file, tls.cert_file, tls.key_file), names)
    if problems:
        raise IdentityError(f"tls.cert_file {tls.cert_file}: " + "; ".join(problems) +
                            ": renew it from the cluster CA, or give tls.ca_key_file to let the node issue its own")
    out.mkdir(parents=True, exist_ok=True)
    return NodeTls(_copy_private(tls.ca_file, out / identity.CA_CERT, owner, 0o644),
                   _copy_private(tls.cert_file, out / identity.NODE_CERT, owner, 0o644),
                   _copy_private(tls.key_file, out / identity.NODE_KEY, owner, 0o600))


def node_tls(config: LocalConfig, *, single: bool, names: list[str], addresses: list[str], out: Path,
             state_dir: Path, owner: tuple[int, int] | None) -> tuple[NodeTls | None, list[str]]:
    """This node's TLS files under ``out`` (None when every TLS channel is off on purpose)."""
    if not _needs_tls(config):
        return None, []
    tls = config.tls
    uid, gid = owner if owner else (None, None)
    if tls.cert_file:
        return _brought(config, [*names, *addresses], out, owner), ["TLS: using the node certificate given "
                                                                     f"in tls.cert_file ({tls.cert_file})"]
    notes = []
    ca_file, ca_key = tls.ca_file, tls.ca_key_file
    if not (ca_file and ca_key):
        if not single:
            raise IdentityError(
                "a cluster of several nodes needs one CA: set APPLIANCE_TLS__CA_FILE and APPLIANCE_TLS__CA_KEY_FILE "
                "(scripts/up generates .secrets/ca.crt and ca.key; `appliance secrets init DIR` does too), or bring "
                "each node's certificate with APPLIANCE_TLS__CERT_FILE/KEY_FILE and APPLIANCE_TLS__CA_FILE")
        own = state_dir / OWN_CA_DIR
        created = identity.init_ca(own, uid=uid, gid=gid)
        ca_file, ca_key = str(own / identity.CA_CERT), str(own / identity.CA_KEY)
        if created:
            notes.append(f"TLS: no CA given: created this node's own CA in {own} (clients trust {ca_file})")
    try:
        issued, fresh = identity.issue_node(ca_file, ca_key, out, dns_names=names, ip_addresses=addresses,
                                            uid=uid, gid=gid)
    except pki.PkiError as exc:
        raise IdentityError(f"cannot issue this node's certificate from tls.ca_file/ca_key_file: {exc}") from None
    if fresh:
        notes.append(f"TLS: issued this node's certificate for {', '.join([*names, *addresses])}")
    return issued, notes


def _persisted(state_dir: Path, name: str, owner: tuple[int, int] | None) -> str:
    """A secret generated once on the volume of a lone node."""
    directory = state_dir / OWN_SECRETS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    if owner:
        os.chown(directory, *owner)
    path = directory / name
    if not path.exists():
        uid, gid = owner if owner else (None, None)
        pki.ensure_private_file(str(path), identity.new_password().encode(), uid=uid, gid=gid)
    return path.read_text().strip()


def passwords(config: LocalConfig, *, single: bool, state_dir: Path, owner: tuple[int, int] | None
              ) -> tuple[Tree, list[str]]:
    """The REST API and etcd passwords that are not given: generated once (lone node) or derived."""
    superuser = config.postgresql.authentication.superuser.password
    wanted: list[tuple[tuple[str, ...], str]] = []
    sec = config.security
    if sec.restapi_auth and config.restapi.authentication is None:
        wanted.append((("restapi", "authentication", "password"), "restapi_password"))
    if sec.etcd_auth and config.etcd.enabled and config.etcd3.password is None:
        wanted.append((("etcd3", "password"), "etcd_password"))
    if sec.etcd_auth and config.etcd.enabled and not config.etcd.root_password:
        wanted.append((("etcd", "root_password"), "etcd_root_password"))
    tree: Tree = {}
    notes = []
    for path, name in wanted:
        if single:
            value = _persisted(state_dir, name, owner)
            notes.append(f"{'.'.join(path)}: generated once, in {state_dir / OWN_SECRETS_DIR / name}")
        elif superuser:
            value = derive_secret(superuser, config.scope, name)
            notes.append(f"{'.'.join(path)}: derived from the superuser password (set it to choose your own)")
        else:
            raise IdentityError(f"{'.'.join(path)} is not set and there is no superuser password to derive it "
                                "from: set it (e.g. its APPLIANCE_..._PASSWORD_FILE), or POSTGRES_PASSWORD")
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return tree, notes


def materialise(config: LocalConfig, env: Mapping[str, str], *, single: bool, host: str, run_dir: str,
                state_dir: str, owner: tuple[int, int] | None) -> Identity:
    """TLS files and missing passwords for this node; raises IdentityError."""
    del env  # the passwords given come through ``config`` (env layer included)
    names = list(dict.fromkeys([config.name, host, socket.getfqdn(), "localhost"]))
    names = [n for n in names if n and not n.replace(".", "").isdigit()]
    out, state = Path(run_dir) / "tls", Path(state_dir)
    result = Identity()
    tls, notes = node_tls(config, single=single, names=names, addresses=local_addresses(host), out=out,
                          state_dir=state, owner=owner)
    result.notes += notes
    if tls is not None:
        result.tree["tls"] = {"ca_file": tls.ca_file, "cert_file": tls.cert_file, "key_file": tls.key_file,
                              "ca_key_file": None}
    tree, notes = passwords(config, single=single, state_dir=state, owner=owner)
    result.notes += notes
    for key, value in tree.items():
        result.tree.setdefault(key, {}).update(value)
    return result
