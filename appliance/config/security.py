"""Secure by default: derive each channel's TLS settings from the ``tls`` section, name what is insecure.

Every channel (REST API, etcd client/peer, PostgreSQL clients and replication) is authenticated and
encrypted unless ``security.<channel>: false`` turns it off on purpose. The Patroni keys the programs
read (restapi.certfile, etcd3.cacert, postgresql.authentication.replication.sslmode, ...) take
their value from the cluster identity in ``tls`` when they are not set explicitly, so an operator
names each file once. A channel that ends up unprotected without its opt-out is a start-up error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from appliance.config.errors import Problem
from appliance.config.schema import LocalConfig, UserAuth
from appliance.config.tree import Tree, source_of

CHANNELS: tuple[str, ...] = ("restapi_tls", "restapi_auth", "etcd_tls", "etcd_auth", "postgresql_tls")
DERIVED = "derived from tls"
_WHAT = {
    "restapi_tls": ("the REST API serves plain HTTP", "set tls.cert_file/key_file (or restapi.certfile/keyfile)"),
    "restapi_auth": ("anyone who reaches the REST API can switch over, restart and change the configuration",
                     "set restapi.authentication.password (APPLIANCE_RESTAPI__AUTHENTICATION__PASSWORD_FILE)"),
    "etcd_tls": ("etcd (client and peer traffic) runs without TLS and client certificates",
                 "set tls.ca_file and tls.cert_file/key_file (or etcd3.protocol: https with cacert/cert/key)"),
    "etcd_auth": ("etcd accepts requests without credentials",
                  "set etcd3.password (APPLIANCE_ETCD3__PASSWORD_FILE) and, for the embedded etcd, "
                  "etcd.root_password"),
    "postgresql_tls": ("PostgreSQL accepts and makes unencrypted network connections",
                       "set tls.ca_file and tls.cert_file/key_file"),
}
# Keys naming files that must be readable when the programs start.
FILE_KEYS: tuple[tuple[str, ...], ...] = (
    ("tls", "ca_file"), ("tls", "cert_file"), ("tls", "key_file"),
    ("restapi", "certfile"), ("restapi", "keyfile"), ("restapi", "cafile"),
    ("etcd3", "cacert"), ("etcd3", "cert"), ("etcd3", "key"),
    ("ctl", "cacert"), ("ctl", "certfile"), ("ctl", "keyfile"),
)


def _raw(data: Tree, *path: str) -> Any:
    node: Any = data
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def _ssl_update(user: UserAuth | None, ca_file: str, raw: Any) -> dict[str, Any]:
    """libpq verify-full against the cluster CA, unless the user's own sslmode/sslrootcert are set."""
    if user is None:
        return {}
    given = raw if isinstance(raw, Mapping) else {}
    defaults = {"sslmode": "verify-full", "sslrootcert": ca_file}
    return {key: value for key, value in defaults.items() if key not in given}


def derive(local: LocalConfig, data: Tree) -> tuple[LocalConfig, dict[str, str]]:
    """``local`` with the unset TLS keys of each enabled channel taken from ``tls``; ``data`` is the
    raw local layer (to tell an explicit value from a default). Returns the config and the
    provenance of every derived key."""
    tls, sec = local.tls, local.security
    derived: dict[str, str] = {}
    updates: dict[str, dict[str, Any]] = {}

    def put(section: str, key: str, value: Any, source: str) -> None:
        if value is None or _raw(data, section, key) is not None:
            return
        updates.setdefault(section, {})[key] = value
        derived[f"{section}.{key}"] = f"{DERIVED} ({source})"

    if sec.restapi_tls and tls.cert_file:
        put("restapi", "certfile", tls.cert_file, "tls.cert_file")
        put("restapi", "keyfile", tls.key_file, "tls.key_file")
    put("ctl", "cacert", tls.ca_file, "tls.ca_file")
    if sec.etcd_tls and tls.ca_file:
        put("etcd3", "protocol", "https", "tls.ca_file")
        put("etcd3", "cacert", tls.ca_file, "tls.ca_file")
        put("etcd3", "cert", tls.cert_file, "tls.cert_file")
        put("etcd3", "key", tls.key_file, "tls.key_file")
    config = local.model_copy(update={k: getattr(local, k).model_copy(update=v) for k, v in updates.items()})
    if sec.postgresql_tls and tls.ca_file:
        config = _derive_libpq(config, tls.ca_file, data, derived)
    return config, derived


def _derive_libpq(local: LocalConfig, ca_file: str, data: Tree, derived: dict[str, str]) -> LocalConfig:
    auth = local.postgresql.authentication
    users: dict[str, Any] = {}
    for role in ("superuser", "replication", "rewind"):
        user = getattr(auth, role)
        update = _ssl_update(user, ca_file, _raw(data, "postgresql", "authentication", role))
        if update:
            users[role] = user.model_copy(update=update)
            derived.update({f"postgresql.authentication.{role}.{k}": f"{DERIVED} (tls.ca_file)" for k in update})
    if not users:
        return local
    postgresql = local.postgresql.model_copy(update={"authentication": auth.model_copy(update=users)})
    return local.model_copy(update={"postgresql": postgresql})


def postgresql_tls_files(local: LocalConfig) -> tuple[str, str, str | None] | None:
    """(cert, key, ca) PostgreSQL serves with: explicit ssl_* parameters win, else ``tls``; None: no TLS."""
    params = {k.lower(): v for k, v in local.postgresql.parameters.items()}
    if str(params.get("ssl", "")).lower() in ("off", "false", "0", "no"):
        return None
    cert, key = params.get("ssl_cert_file"), params.get("ssl_key_file")
    if cert and key:
        ca = params.get("ssl_ca_file")
        return str(cert), str(key), str(ca) if ca else None
    if not local.security.postgresql_tls or not local.tls.cert_file or not local.tls.key_file:
        return None
    return local.tls.cert_file, local.tls.key_file, local.tls.ca_file


def insecure_channels(local: LocalConfig) -> tuple[str, ...]:
    """The channels that run unprotected with this configuration (whether on purpose or not)."""
    found = []
    if not local.restapi.certfile:
        found.append("restapi_tls")
    if local.restapi.authentication is None:
        found.append("restapi_auth")
    etcd_tls = local.etcd3.protocol == "https" and (not local.etcd.enabled or bool(local.tls.cert_file))
    if not etcd_tls:
        found.append("etcd_tls")
    if local.etcd3.username is None or (local.etcd.enabled and not local.etcd.root_password):
        found.append("etcd_auth")
    if postgresql_tls_files(local) is None:
        found.append("postgresql_tls")
    return tuple(found)


def security_problems(local: LocalConfig, provenance: Mapping[str, str] | None = None) -> list[Problem]:
    """Start-up errors: a channel left unprotected without its opt-out, a TLS file that cannot be read."""
    prov = provenance or {}
    problems = []
    for channel in insecure_channels(local):
        if getattr(local.security, channel):
            what, fix = _WHAT[channel]
            problems.append(Problem(f"security.{channel}", source_of(dict(prov), f"security.{channel}"),
                                    f"{what}: {fix}, or set security.{channel}: false to run it so on purpose"))
    for path in FILE_KEYS:
        value = getattr(getattr(local, path[0]), path[1])
        if value and not os.access(value, os.R_OK):
            key = ".".join(path)
            problems.append(Problem(key, source_of(dict(prov), key),
                                    f"cannot read {value}: give a readable PEM file (owned by this user)"))
    return problems


def security_warnings(local: LocalConfig) -> list[str]:
    """One line per protection turned off on purpose, for the log of every start."""
    out = []
    for channel in insecure_channels(local):
        if not getattr(local.security, channel):
            out.append(f"INSECURE (security.{channel}: false): {_WHAT[channel][0]}")
    return out
