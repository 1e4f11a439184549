"""The cluster identity on disk: generated once (CA, passwords), the node certificate issued at start.

A secrets directory holds one file per secret (0600), the form compose secrets, VM env files and
``*_FILE`` variables all read: the cluster CA (``ca.crt``/``ca.key``) and the passwords of the
superuser, the replication user, the REST API and etcd (root and appliance users). Each node's
certificate is issued from the CA at every start (entrypoint, demo), with SANs for the names and
addresses it has then, so a renamed or re-addressed node needs nothing done by hand.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from appliance.tls import pki

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
NODE_CERT = "node.crt"
NODE_KEY = "node.key"
# name -> what it is (docs/security.md lists the same)
PASSWORDS: dict[str, str] = {
    "postgres_password": "PostgreSQL superuser (POSTGRES_PASSWORD_FILE)",
    "replication_password": "PostgreSQL replication user (APPLIANCE_REPLICATION_PASSWORD_FILE)",
    "restapi_password": "REST API user 'appliance' (APPLIANCE_RESTAPI__AUTHENTICATION__PASSWORD_FILE)",
    "etcd_password": "etcd user 'appliance' (APPLIANCE_ETCD3__PASSWORD_FILE)",
    "etcd_root_password": "etcd root user (APPLIANCE_ETCD__ROOT_PASSWORD_FILE)",
}
RENEW_BEFORE = timedelta(days=30)


@dataclass(frozen=True)
class NodeTls:
    """Where one node's TLS material is: the CA it trusts and its own certificate and key."""

    ca_file: str
    cert_file: str
    key_file: str


def new_password() -> str:
    return secrets.token_urlsafe(24)


def init_secrets(directory: str | Path, *, scope: str = "pgappliance", uid: int | None = None,
                 gid: int | None = None, now: datetime | None = None) -> list[str]:
    """Create the missing secrets of a cluster in ``directory`` (0700); existing ones are kept.
    Returns the names created."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    if uid is not None or gid is not None:
        os.chown(path, -1 if uid is None else uid, -1 if gid is None else gid)
    created = []
    for name in PASSWORDS:
        target = path / name
        if not target.exists() or not target.read_text().strip():
            pki.ensure_private_file(str(target), new_password().encode(), uid=uid, gid=gid)
            created.append(name)
    return created + init_ca(path, scope=scope, uid=uid, gid=gid, now=now)


def init_ca(directory: str | Path, *, scope: str = "pgappliance", uid: int | None = None, gid: int | None = None,
            now: datetime | None = None) -> list[str]:
    """The cluster CA in ``directory`` (created 0700 if needed), unless it is there already."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    if uid is not None or gid is not None:
        os.chown(path, -1 if uid is None else uid, -1 if gid is None else gid)
    if (path / CA_CERT).exists() and (path / CA_KEY).exists():
        return []
    ca = pki.generate_ca(f"pgappliance {scope} CA", now=now)
    pki.ensure_private_file(str(path / CA_KEY), ca.key_pem, uid=uid, gid=gid)
    # The CA certificate is public: everyone who talks to the cluster needs it.
    pki.ensure_private_file(str(path / CA_CERT), ca.cert_pem, uid=uid, gid=gid, mode=0o644)
    return [CA_CERT, CA_KEY]


def _current(tls: NodeTls, ca_pem: bytes, names: Sequence[str], now: datetime | None) -> bool:
    """Is the certificate there, valid for every name, from this CA, and far from expiring?"""
    try:
        cert, key = pki.read_file(tls.cert_file), pki.read_file(tls.key_file)
    except pki.PkiError:
        return False
    if pki.check_certificate(cert, ca_pem=ca_pem, key_pem=key, names=names, now=now):
        return False
    return pki.expires_in(cert, now) > RENEW_BEFORE


def issue_node(ca_file: str, ca_key_file: str, out_dir: str | Path, *,
               dns_names: Sequence[str], ip_addresses: Sequence[str], uid: int | None = None,
               gid: int | None = None, now: datetime | None = None) -> tuple[NodeTls, bool]:
    """This node's certificate in ``out_dir`` (with a copy of the CA), issued again only when the
    one there does not cover the names, comes from another CA or expires within 30 days.
    Returns the files and whether a new certificate was issued. Raises PkiError."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    if uid is not None or gid is not None:
        os.chown(out, -1 if uid is None else uid, -1 if gid is None else gid)
    ca_pem = pki.read_file(ca_file)
    tls = NodeTls(str(out / CA_CERT), str(out / NODE_CERT), str(out / NODE_KEY))
    pki.ensure_private_file(tls.ca_file, ca_pem, uid=uid, gid=gid, mode=0o644)
    names = [*dns_names, *ip_addresses]
    if _current(tls, ca_pem, names, now):
        return tls, False
    # No CN in the subject (see pki.issue_node_certificate): the SANs name the node.
    issued = pki.issue_node_certificate(pki.Issued(ca_pem, pki.read_file(ca_key_file)),
                                        dns_names=dns_names, ip_addresses=ip_addresses, now=now)
    # Key first: a reader that sees the new certificate must find its key.
    pki.ensure_private_file(tls.key_file, issued.key_pem, uid=uid, gid=gid)
    pki.ensure_private_file(tls.cert_file, issued.cert_pem, uid=uid, gid=gid, mode=0o644)
    return tls, True


def check_node(tls: NodeTls, names: Sequence[str] = (), now: datetime | None = None) -> list[str]:
    """Problems of a node certificate the operator brought (expired, foreign CA, wrong key, names)."""
    try:
        cert, key, ca = (pki.read_file(p) for p in (tls.cert_file, tls.key_file, tls.ca_file))
    except pki.PkiError as exc:
        return [str(exc)]
    return pki.check_certificate(cert, ca_pem=ca, key_pem=key, names=names, now=now)
