"""Where the operator CLI finds the cluster: config file, --dcs/--scope/--namespace, --url, REST credentials."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import click

from appliance.config import ConfigError, LocalLayers, build_local, load_local
from appliance.config.schema import LocalConfig
from appliance.dcs.etcd_transport import EtcdTls
from appliance.dcs.factory import etcd_tls

DEFAULT_CONFIG = "/etc/pgappliance/appliance.yml"
DEFAULT_NAMESPACE = "/service/"
NO_CONFIG = "no configuration: pass --config, set APPLIANCE_CONFIG, or use --dcs"
# The CLI's own variables: not settings, so they must not reach the configuration's env layer.
CLI_ENV = ("APPLIANCE_DCS", "APPLIANCE_API_")

F = TypeVar("F", bound=Callable[..., Any])


class CtlError(click.ClickException):
    """A one-line operator error (exit code 1, no traceback)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


@dataclass(frozen=True)
class Target:
    """The resolved connection settings of one CLI call."""

    etcd_hosts: tuple[str, ...] = ()
    scope: str | None = None
    namespace: str = DEFAULT_NAMESPACE
    url: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    etcd_username: str | None = None
    etcd_password: str | None = field(default=None, repr=False)
    etcd_tls: EtcdTls | None = None
    insecure: bool = False
    cafile: str | None = None
    config_path: str | None = None
    layers: LocalLayers | None = field(default=None, compare=False, repr=False)
    local: LocalConfig | None = field(default=None, compare=False, repr=False)

    @property
    def has_dcs(self) -> bool:
        return bool(self.etcd_hosts)

    def with_scope(self, scope: str) -> Target:
        return replace(self, scope=scope)


def config_env(env: Mapping[str, str]) -> dict[str, str]:
    """The environment for the configuration layers, without the CLI's own variables."""
    return {k: v for k, v in env.items() if not (k == CLI_ENV[0] or k.startswith(CLI_ENV[1]))}


def find_config(explicit: str | None, exists: Callable[[str], bool] = os.path.exists) -> str | None:
    """--config / APPLIANCE_CONFIG (click fills both into ``explicit``), else the appliance default if present."""
    if explicit:
        if not exists(explicit):
            raise CtlError(f"config file {explicit} does not exist: pass an existing --config, or unset "
                           "APPLIANCE_CONFIG")
        return explicit
    return DEFAULT_CONFIG if exists(DEFAULT_CONFIG) else None


def split_hosts(value: str | None) -> tuple[str, ...]:
    """``h1:2379,h2:2379`` (or etcd3://h1:2379, patronictl's -d form) as a tuple of host:port."""
    if not value:
        return ()
    hosts = []
    for item in value.split(","):
        item = item.strip()
        for scheme in ("etcd3://", "etcd://", "http://"):
            item = item.removeprefix(scheme)
        if item:
            hosts.append(item.rstrip("/"))
    return tuple(hosts)


def resolve(opts: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Target:
    """Build the Target from the connection options; raises CtlError with what to pass instead."""
    env = os.environ if env is None else env
    path = find_config(opts.get("config_path"))
    dcs = split_hosts(opts.get("dcs"))
    url = opts.get("url")
    if path is None and not dcs and not url:
        raise CtlError(NO_CONFIG)
    target = Target(config_path=path, insecure=bool(opts.get("insecure")))
    if path is not None:
        target = _from_config(target, path, env)
    if dcs:
        target = replace(target, etcd_hosts=dcs)
    if opts.get("scope"):
        target = replace(target, scope=opts["scope"])
    if opts.get("namespace"):
        target = replace(target, namespace=opts["namespace"])
    if url:
        target = replace(target, url=url.rstrip("/"))
    if opts.get("cacert"):
        target = replace(target, cafile=opts["cacert"])
    if opts.get("username") is not None:
        target = replace(target, username=opts["username"], password=opts.get("password") or "")
    elif opts.get("password") is not None:
        raise CtlError("--password (APPLIANCE_API_PASSWORD) needs --username (APPLIANCE_API_USERNAME) too")
    return target


def _from_config(target: Target, path: str, env: Mapping[str, str]) -> Target:
    try:
        layers = load_local(path, config_env(env))
        local = build_local(layers)
    except ConfigError as exc:
        raise CtlError(f"{path}: {exc}".replace("\n", " ")) from None
    auth = local.ctl.authentication or local.restapi.authentication
    try:
        tls = etcd_tls(local.etcd3)
    except ValueError as exc:
        raise CtlError(f"{path}: {exc}") from None
    return replace(
        target,
        etcd_hosts=tuple(local.etcd3.hosts),
        scope=local.scope,
        namespace=local.namespace,
        username=auth.username if auth else None,
        password=(auth.password or "") if auth else None,
        etcd_username=local.etcd3.username,
        etcd_password=local.etcd3.password,
        etcd_tls=tls,
        cafile=local.ctl.cacert,
        insecure=target.insecure or local.ctl.insecure,
        layers=layers,
        local=local,
    )


def take_cluster_name(target: Target, args: Sequence[str]) -> tuple[Target, list[str]]:
    """patronictl's optional leading CLUSTER argument: the scope when none is known, else skipped if equal."""
    rest = list(args)
    if target.scope is None:
        if not rest:
            raise CtlError("no cluster name: pass --scope (APPLIANCE_SCOPE), name the cluster, or use --config")
        return target.with_scope(rest[0]), rest[1:]
    if rest and rest[0] == target.scope:
        rest = rest[1:]
    return target, rest


def connection_options(func: F) -> F:
    """The options every operator command takes (zero flags inside an appliance)."""
    options = [
        click.option("--config", "-c", "config_path", envvar="APPLIANCE_CONFIG", type=click.Path(dir_okay=True),
                     help=f"Node config file (env APPLIANCE_CONFIG; default {DEFAULT_CONFIG} if present)."),
        click.option("--dcs", "-d", "dcs", envvar="APPLIANCE_DCS", metavar="HOST:PORT[,...]",
                     help="etcd endpoints, from outside an appliance (env APPLIANCE_DCS)."),
        click.option("--scope", envvar="APPLIANCE_SCOPE", help="Cluster name (env APPLIANCE_SCOPE)."),
        click.option("--namespace", envvar="APPLIANCE_NAMESPACE", help=f"DCS namespace [default {DEFAULT_NAMESPACE}]."),
        click.option("--url", envvar="APPLIANCE_API_URL", metavar="URL",
                     help="A node's REST API, e.g. http://10.0.0.1:8008 (env APPLIANCE_API_URL)."),
        click.option("--username", envvar="APPLIANCE_API_USERNAME", help="REST API Basic auth user."),
        click.option("--password", envvar="APPLIANCE_API_PASSWORD", help="REST API Basic auth password."),
        click.option("--cacert", envvar="APPLIANCE_API_CACERT", type=click.Path(dir_okay=False),
                     help="CA file of the REST API's certificate (env APPLIANCE_API_CACERT; default: ctl.cacert, "
                          "tls.ca_file)."),
        click.option("--insecure", "-k", is_flag=True, help="Do not verify the REST API's TLS certificate."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


CONNECTION_KEYS = ("config_path", "dcs", "scope", "namespace", "url", "username", "password", "cacert", "insecure")


def pop_target(kwargs: dict[str, Any]) -> Target:
    """Take the connection options out of a command's kwargs and resolve them."""
    opts = {key: kwargs.pop(key) for key in CONNECTION_KEYS}
    return resolve(opts)
