"""Turn etcd auth on, once per cluster: the root user, and an appliance user limited to its prefix.

Runs on every node beside the embedded etcd member (a supervised one-shot program); every step is
idempotent, so the three nodes may race. The appliance user (etcd3.username) gets read-write on
``/<namespace>/<scope>/`` only: a stolen appliance password cannot touch anything else in etcd,
and an anonymous client (or one with a certificate but no credentials) is refused once auth is on.
Until it is on, only clients with a certificate from the cluster CA get in (client-cert-auth).

``python -m appliance.runtime.etcd_auth --config FILE [--timeout S]`` (default: until it is done;
a cluster must never stay without auth because its members took long to reach quorum).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from pyetcd import etcdrpc
from pyetcd.utils import prefix_range_end

from appliance.config.errors import ConfigError
from appliance.config.schema import LocalConfig
from appliance.dcs.base import DCSError
from appliance.dcs.etcd_transport import EtcdTransport, Metadata
from appliance.dcs.factory import etcd_tls
from appliance.dcs.formats import cluster_prefix

log = logging.getLogger("appliance.etcd_auth")

ROOT = "root"
# etcd's answers to a step that another node (or an earlier run) already did.
_DONE = ("already exists", "already granted", "already has", "role name already", "user name already")


@dataclass(frozen=True)
class AuthPlan:
    """Who gets what: the root password, the appliance user and the key prefix it may use."""

    root_password: str
    user: str
    password: str
    prefix: str

    @classmethod
    def from_config(cls, local: LocalConfig) -> AuthPlan:
        if not local.etcd.root_password or not local.etcd3.username or not local.etcd3.password:
            raise ConfigError.one("etcd.root_password", "config", "etcd auth needs etcd.root_password and "
                                  "etcd3.username/password (or security.etcd_auth: false)")
        if local.etcd3.username == ROOT:
            raise ConfigError.one("etcd3.username", "config", "must not be root: the appliance user is limited "
                                  "to the cluster's prefix")
        return cls(local.etcd.root_password, local.etcd3.username, local.etcd3.password,
                   cluster_prefix(local.namespace, local.scope))


def _idempotent(transport: EtcdTransport, what: str, call: Callable[[Any, float, Metadata], Any]) -> None:
    try:
        transport.call(what, call)
    except DCSError as exc:
        if not any(marker in str(exc) for marker in _DONE):
            raise


def ensure_auth(transport: EtcdTransport, plan: AuthPlan) -> None:
    """The users, the role, then auth on. ``transport`` logs in as root (or goes anonymous while
    auth is still off: "authentication is not enabled")."""
    key = plan.prefix.encode()
    perm = etcdrpc.Permission(permType=etcdrpc.Permission.READWRITE, key=key, range_end=prefix_range_end(key))
    steps: list[tuple[str, Callable[[Any, float, Metadata], Any]]] = [
        ("add the root user", lambda ep, t, md: ep.auth.UserAdd(
            etcdrpc.AuthUserAddRequest(name=ROOT, password=plan.root_password), timeout=t, metadata=md)),
        ("grant root the root role", lambda ep, t, md: ep.auth.UserGrantRole(
            etcdrpc.AuthUserGrantRoleRequest(user=ROOT, role=ROOT), timeout=t, metadata=md)),
        (f"add the role {plan.user}", lambda ep, t, md: ep.auth.RoleAdd(
            etcdrpc.AuthRoleAddRequest(name=plan.user), timeout=t, metadata=md)),
        (f"grant {plan.user} read-write on {plan.prefix}", lambda ep, t, md: ep.auth.RoleGrantPermission(
            etcdrpc.AuthRoleGrantPermissionRequest(name=plan.user, perm=perm), timeout=t, metadata=md)),
        (f"add the user {plan.user}", lambda ep, t, md: ep.auth.UserAdd(
            etcdrpc.AuthUserAddRequest(name=plan.user, password=plan.password), timeout=t, metadata=md)),
        (f"grant {plan.user} its role", lambda ep, t, md: ep.auth.UserGrantRole(
            etcdrpc.AuthUserGrantRoleRequest(user=plan.user, role=plan.user), timeout=t, metadata=md)),
        ("enable auth", lambda ep, t, md: ep.auth.AuthEnable(etcdrpc.AuthEnableRequest(), timeout=t, metadata=md)),
    ]
    for what, call in steps:
        _idempotent(transport, what, call)
        log.info("etcd auth: %s: done", what)


def run(local: LocalConfig, timeout: float, sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic) -> int:
    """Retry until done (the other members may not be up yet) or ``timeout`` (0: no limit); 0 when
    auth is on. The wait between attempts grows to 30 s."""
    plan = AuthPlan.from_config(local)
    deadline = clock() + timeout if timeout > 0 else float("inf")
    pause = 2.0
    while True:
        transport = EtcdTransport(list(local.etcd3.hosts), 5.0, username=ROOT, password=plan.root_password,
                                  tls=etcd_tls(local.etcd3))
        try:
            ensure_auth(transport, plan)
            log.info("etcd auth is on: user %s limited to %s", plan.user, plan.prefix)
            return 0
        except (DCSError, grpc.RpcError) as exc:
            if clock() >= deadline:
                log.error("etcd auth could not be enabled within %.0f s: %s", timeout, exc)
                return 1
            log.info("etcd auth: not yet (%s); retrying", exc)
        finally:
            transport.close()
        sleep(pause)
        pause = min(30.0, pause * 1.5)


def main(argv: list[str] | None = None) -> int:
    from appliance.manager.settings import load_node_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--config", required=True)
    parser.add_argument("--timeout", type=float, default=0.0, help="seconds; 0: until done")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="etcd_auth: %(message)s", stream=sys.stderr)
    try:
        _, local = load_node_config(args.config)
        return run(local, args.timeout)
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
