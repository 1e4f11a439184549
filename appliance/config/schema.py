"""Typed settings: the local (Patroni-shaped) file, our own sections, and the dynamic (DCS) config."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    StrictInt,
    field_validator,
    model_validator,
)

from appliance.config.fields import Host, HostPort, Lag, Name, Port, Token, check_host, check_host_port, check_name

# PostgreSQL parameters that must be equal (or larger on replicas) cluster-wide: dynamic only.
CLUSTER_WIDE_PARAMETERS: dict[str, Any] = {
    "max_connections": 100,
    "max_locks_per_transaction": 64,
    "max_worker_processes": 8,
    "max_prepared_transactions": 0,
    "wal_level": "replica",
    "wal_log_hints": "on",
    "track_commit_timestamp": "off",
    "max_wal_senders": 10,
    "max_replication_slots": 10,
    "wal_keep_size": "128MB",
}
# Minimums Patroni enforces for some of them.
CLUSTER_WIDE_MINIMUMS: dict[str, int] = {
    "max_connections": 25,
    "max_locks_per_transaction": 32,
    "max_worker_processes": 2,
}
DEFAULT_ETCD_USER = "appliance"
MAX_LAG = 2**53  # bytes: the largest integer a JSON reader keeps exact
# Top-level dynamic keys that only the DCS may set (a local value only seeds bootstrap.dcs).
DYNAMIC_ONLY_KEYS = ("ttl", "loop_wait", "retry_timeout")

_DURATION_RE = re.compile(r"^\s*(\d{1,9})\s*(s|sec|min|m|h|d)?\s*$")
_DURATION_UNITS = {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def _duration(value: Any) -> Any:
    """Seconds as an integer, or a string with a unit as Patroni writes them ("30min", "2h")."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string such as 30min")
    if isinstance(value, str):
        match = _DURATION_RE.match(value)
        if not match:
            raise ValueError(f"{value!r} is not a duration (seconds, or a number with s, min, h or d)")
        return int(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if not isinstance(value, int):
        raise ValueError("a duration is a number of seconds or a string such as 30min")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]


class UserAuth(_Strict):
    """A database role (Patroni's postgresql.authentication.*), with libpq's TLS options for its
    network connections (replication, clone, rewind)."""

    username: str
    password: str | None = None
    sslmode: SslMode | None = None
    sslrootcert: str | None = None
    sslcert: str | None = None
    sslkey: str | None = None
    sslcrl: str | None = None
    channel_binding: Literal["disable", "prefer", "require"] | None = None


class RestAuth(_Strict):
    """Basic auth for the REST API's unsafe methods (restapi.authentication, ctl.authentication)."""

    username: str = "appliance"
    password: str | None = None

    @model_validator(mode="after")
    def _password_set(self) -> RestAuth:
        if not self.password:
            raise ValueError(
                "password is empty: set restapi.authentication.password (or "
                "APPLIANCE_RESTAPI__AUTHENTICATION__PASSWORD_FILE), or remove restapi.authentication"
            )
        return self


class Authentication(_Strict):
    superuser: UserAuth = UserAuth(username="postgres")
    replication: UserAuth = UserAuth(username="replicator")
    rewind: UserAuth | None = None


class DynamicPostgresql(_Strict):
    parameters: dict[str, Any] = Field(default_factory=lambda: dict(CLUSTER_WIDE_PARAMETERS))
    use_pg_rewind: StrictBool = True
    use_slots: StrictBool = True
    pg_hba: list[str] | None = None


def _sync_mode(value: Any) -> bool | str:
    if isinstance(value, bool):
        return value
    if value == "quorum":
        return "quorum"
    raise ValueError(f'must be true, false or "quorum" (got {value!r})')


SyncMode = Annotated[bool | str, PlainValidator(_sync_mode, json_schema_input_type=bool | Literal["quorum"])]


class DynamicConfig(_Strict):
    """The DCS ``config`` key (Patroni names). Defaults are the appliance's shipped timings."""

    model_config = ConfigDict(extra="allow", frozen=True)

    # Bounds (docs/configuration.md): beyond them a value cannot be acted on (etcd refuses the
    # lease, a loop that sleeps for days is no HA) and is refused before anything is written.
    ttl: StrictInt = Field(default=5, ge=2, le=3600)
    loop_wait: StrictInt = Field(default=1, ge=1, le=600)
    retry_timeout: StrictInt = Field(default=2, ge=1, le=1800)
    maximum_lag_on_failover: StrictInt = Field(default=1048576, ge=0, le=MAX_LAG)
    maximum_lag_on_syncnode: StrictInt = Field(default=-1, ge=-1, le=MAX_LAG)
    primary_start_timeout: StrictInt = Field(default=30, ge=0, le=86400)
    primary_stop_timeout: StrictInt = Field(default=0, ge=0, le=86400)
    # true/false, or Patroni 4's "quorum": ANY n commit with the sync key's voters and quorum (core/quorum.py).
    synchronous_mode: SyncMode = False
    synchronous_mode_strict: StrictBool = False
    synchronous_node_count: StrictInt = Field(default=1, ge=1, le=32)
    check_timeline: StrictBool = False
    max_timelines_history: StrictInt = Field(default=0, ge=0, le=1_000_000)
    # Seconds (or Patroni's "30min", "2h", "1d") a vanished member's slot is kept: a replica that comes
    # back within it streams on from its slot.
    member_slots_ttl: Annotated[int, BeforeValidator(_duration), Field(ge=0, le=30 * 86400)] = 1800
    pause: StrictBool = False
    failsafe_mode: StrictBool = False
    postgresql: DynamicPostgresql = DynamicPostgresql()

    @model_validator(mode="after")
    def _timing_rule(self) -> DynamicConfig:
        if self.loop_wait + 2 * self.retry_timeout > self.ttl:
            raise ValueError(
                f"loop_wait + 2*retry_timeout must be <= ttl "
                f"(got {self.loop_wait} + 2*{self.retry_timeout} > {self.ttl})"
            )
        return self


class Bootstrap(_Strict):
    dcs: dict[str, Any] = Field(default_factory=dict)
    initdb: list[Any] = Field(default_factory=lambda: ["data-checksums", {"encoding": "UTF8"}])
    pg_hba: list[str] | None = None


class RestApi(_Strict):
    listen: HostPort = "0.0.0.0:8008"
    connect_address: HostPort = "127.0.0.1:8008"
    authentication: RestAuth | None = None
    # HTTPS: certfile (PEM, may hold the key too), keyfile, and cafile to verify client certificates.
    certfile: str | None = None
    keyfile: str | None = None
    cafile: str | None = None
    verify_client: Literal["none", "optional", "required"] | None = None
    # Who may call unsafe methods (POST/PUT/PATCH/DELETE): IPs, CIDRs or host names; empty = anyone.
    allowlist: list[str] = Field(default_factory=list)
    allowlist_include_members: bool = False

    @field_validator("allowlist", mode="before")
    @classmethod
    def _allowlist_entries(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        if isinstance(value, list):
            for item in value:
                _check_allowlist_entry(item)
        return value

    @model_validator(mode="after")
    def _tls_pairs(self) -> RestApi:
        if self.keyfile and not self.certfile:
            raise ValueError("restapi.keyfile is set without restapi.certfile: set both (or neither)")
        if self.verify_client in ("optional", "required") and not (self.certfile and self.cafile):
            raise ValueError(
                f"restapi.verify_client={self.verify_client} needs HTTPS with client-certificate checks: "
                "set restapi.certfile and restapi.cafile"
            )
        return self


def _check_allowlist_entry(item: Any) -> None:
    """An IP address, a CIDR network, or a host name (resolved when a request arrives)."""
    if not isinstance(item, str) or not item.strip():
        raise ValueError(f"allowlist entries must be non-empty strings (got {item!r})")
    try:
        ipaddress.ip_network(item, strict=False)
        return
    except ValueError:
        pass
    if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?", item) or item.replace(".", "").isdigit():
        raise ValueError(f"allowlist entry {item!r} is neither an IP address, a CIDR (10.0.0.0/24) nor a host name")


class Etcd3(_Strict):
    """The etcd client side (Patroni's ``etcd3`` section): every member's client address."""

    hosts: list[str] = Field(default_factory=lambda: ["127.0.0.1:2379"])
    protocol: Literal["http", "https"] = "http"
    username: str | None = None
    password: str | None = None
    # TLS (Patroni's names): the CA that signed the members' certificates, and our client certificate.
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_user(cls, data: Any) -> Any:
        # A password alone means the appliance's own etcd user.
        if isinstance(data, dict) and data.get("password") is not None and data.get("username") is None:
            return {**data, "username": DEFAULT_ETCD_USER}
        return data

    @model_validator(mode="after")
    def _pairs(self) -> Etcd3:
        if (self.username is None) != (self.password is None) or self.password == "":
            raise ValueError("etcd3.username and etcd3.password must be set together (a non-empty password)")
        if (self.cert is None) != (self.key is None):
            raise ValueError("etcd3.cert and etcd3.key must be set together (a client certificate and its key)")
        return self

    @field_validator("hosts", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        # Patroni accepts "h1:2379,h2:2379" as well as a YAML list.
        if isinstance(value, str):
            return [host.strip() for host in value.split(",") if host.strip()]
        return value

    @field_validator("hosts")
    @classmethod
    def _endpoints(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("list at least one etcd member (host:port)")
        for host in value:
            bare = host.removeprefix("https://").removeprefix("http://").rstrip("/")
            check_host_port(bare if ":" in bare.rsplit("]", 1)[-1] else f"{bare}:2379")
        return value


class Postgresql(_Strict):
    listen: str = "0.0.0.0:5432"
    connect_address: HostPort = "127.0.0.1:5432"
    data_dir: str = "/var/lib/postgresql/data"
    bin_dir: str = "/usr/lib/postgresql/15/bin"
    authentication: Authentication = Authentication()
    parameters: dict[str, Any] = Field(default_factory=dict)
    pg_hba: list[str] | None = None
    database: str = "postgres"

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        split_listen(value)
        return value


def split_listen(listen: str) -> tuple[str, int]:
    """Patroni's ``postgresql.listen`` ("0.0.0.0:5432", "10.0.0.1,127.0.0.1:5432", "[::]:5432")
    as (listen_addresses, port)."""
    hosts, sep, port = listen.rpartition(":")
    if not sep or not hosts or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host[,host...]:port, e.g. 0.0.0.0:5432 (got {listen!r})")
    for host in hosts.strip("[]").split(","):
        if host.strip() != "*":
            check_host(host.strip())
    if hosts.startswith("[") and hosts.endswith("]"):
        hosts = hosts[1:-1]
    return hosts, int(port)


class EtcdMember(_Strict):
    """Our own section: the embedded etcd member this appliance runs (see conventions §4)."""

    enabled: bool = True
    name: Name | None = None  # defaults to the node name
    data_dir: str = "/var/lib/postgresql/etcd"
    listen_client: HostPort = "0.0.0.0:2379"
    listen_peer: HostPort = "0.0.0.0:2380"
    advertise_client: HostPort = "127.0.0.1:2379"
    advertise_peer: HostPort = "127.0.0.1:2380"
    initial_cluster: str = ""  # name=http://host:2380,...; empty: just ourselves
    initial_cluster_token: Token = "pgappliance"

    @field_validator("initial_cluster")
    @classmethod
    def _members(cls, value: str) -> str:
        for entry in filter(None, value.split(",")):
            name, sep, url = entry.partition("=")
            scheme, _, address = url.partition("://")
            if not sep or scheme not in ("http", "https") or not address:
                raise ValueError(f"entry {entry!r} is not name=http(s)://host:port")
            check_name(name)
            check_host_port(address.rstrip("/"))
        return value
    heartbeat_interval_ms: int = Field(default=100, ge=10, le=5000)
    election_timeout_ms: int = Field(default=1000, ge=100, le=50000)
    # etcd's root user: creates the appliance user and role, and replaces a wiped member.
    root_password: str | None = None


class Tls(_Strict):
    """Our own section: the cluster's X.509 identity (PEM files). ``ca_file`` is the trust anchor of
    every channel; ``cert_file``/``key_file`` this node's certificate. With ``ca_key_file`` and no
    certificate, the container entrypoint (and the demo) issue this node's certificate at start."""

    ca_file: str | None = None
    ca_key_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    @model_validator(mode="after")
    def _pairs(self) -> Tls:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("tls.cert_file and tls.key_file must be set together")
        if self.cert_file and not self.ca_file:
            raise ValueError("tls.cert_file needs tls.ca_file (the CA that signed it, trusted by every node)")
        return self


class Security(_Strict):
    """Our own section: every protection is on by default; ``false`` turns one off on purpose (a
    warning at every start, ``pgappliance_insecure{channel}`` = 1)."""

    restapi_tls: bool = True  # HTTPS on the REST API
    restapi_auth: bool = True  # Basic auth for its unsafe methods
    etcd_tls: bool = True  # etcd client and peer TLS, client certificates required
    etcd_auth: bool = True  # etcd users: root and the appliance's own, limited to the cluster prefix
    postgresql_tls: bool = True  # ssl = on, hostssl-only pg_hba, replication verify-full
    # Parameters that run OS commands (archive_command, ...) from the DCS config: off (local only).
    commands_from_dcs: bool = False


class Ctl(_Strict):
    """Patroni's ``ctl`` section: how the operator CLI talks to the REST API."""

    insecure: bool = False
    cacert: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    authentication: RestAuth | None = None


class Haproxy(_Strict):
    """Our own section: the local HAProxy (5000 → primary, 5001 → replicas, 7000 → stats)."""

    enabled: bool = True
    bind_address: Host = "0.0.0.0"
    primary_port: Port = 5000
    replica_port: Port = 5001
    stats_port: Port = 7000
    replica_max_lag: Lag = "16MB"


class Watchdog(_Strict):
    """Patroni's ``watchdog`` section. The fencer (not the HA loop) opens the device while this node
    leads, and feeds it only while a reset would still come before the lease could expire elsewhere.
    ``automatic``: use it when it works; ``required``: a node whose watchdog cannot be used never
    takes the leader key; ``off``: never touch it."""

    mode: Literal["off", "automatic", "required"] = "automatic"
    device: str = "/dev/watchdog"
    safety_margin: StrictInt = Field(default=5, ge=-1, le=3600)
    driver: Literal["default"] = "default"

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare `off` as false (and `on` as true); Patroni takes both spellings.
        if value is False:
            return "off"
        if isinstance(value, str) and value.lower() in ("auto", "require"):
            return {"auto": "automatic", "require": "required"}[value.lower()]
        return value


class Appliance(_Strict):
    """Our own section: where the appliance keeps runtime state and how it logs."""

    run_dir: str = "/run/pgappliance"
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    peers: list[Host] = Field(default_factory=list)  # other nodes' hostnames (for the runtime renderer)


class LocalConfig(_Strict):
    """The local YAML file (Patroni's key names) plus our own sections."""

    scope: Name = "pgappliance"
    namespace: str = "/service/"
    name: Name = "node1"
    restapi: RestApi = RestApi()
    etcd3: Etcd3 = Etcd3()
    bootstrap: Bootstrap = Bootstrap()
    postgresql: Postgresql = Postgresql()
    tags: dict[str, Any] = Field(default_factory=dict)
    ctl: Ctl = Ctl()
    etcd: EtcdMember = EtcdMember()
    haproxy: Haproxy = Haproxy()
    tls: Tls = Tls()
    security: Security = Security()
    watchdog: Watchdog = Watchdog()
    appliance: Appliance = Appliance()
