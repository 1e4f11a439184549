"""Settings of one PostgreSQL member (PgConfig) and libpq connection strings (ConnInfo)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from appliance.net.address import conn_url
from appliance.postgres.hba import compose

DEFAULT_BIN_DIR = "/usr/lib/postgresql/15/bin"
DEFAULT_SOCKET_DIR = "/var/run/postgresql"
DEFAULT_INITDB_OPTIONS = ("--data-checksums", "--encoding=UTF8")
# Patroni's value: with no sync candidate, strict mode makes commits wait instead of going async.
STRICT_SYNC_PLACEHOLDER = "__patroni_strict_sync_replica_placeholder__"

_NAME_RE = re.compile(r"[^a-z0-9_]")


def slot_name_for(member_name: str) -> str:
    """The physical slot (and application_name) of a member: Patroni's sanitising rule."""
    return _NAME_RE.sub("_", member_name.lower())


def _default_run_as() -> str | None:
    return "postgres" if os.geteuid() == 0 else None


Options = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class UserCredentials:
    """A database role and its password (None: no password, only local trust works), with the libpq
    options of its network connections (sslmode, sslrootcert, ...)."""

    username: str
    password: str | None = None
    options: Options = ()

    def __repr__(self) -> str:  # never print a password in logs or tracebacks
        return f"UserCredentials(username={self.username!r}, password={'***' if self.password else None})"


@dataclass(frozen=True)
class ServerTls:
    """The files PostgreSQL serves TLS with (``ssl = on``)."""

    cert_file: str
    key_file: str
    ca_file: str | None = None


def _quote_value(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


@dataclass(frozen=True)
class ConnInfo:
    """Where and as whom to connect; renders a libpq key/value string with every value quoted."""

    host: str
    port: int
    user: str
    password: str | None = None
    dbname: str = "postgres"
    application_name: str | None = None
    connect_timeout: int | None = None
    # libpq options (sslmode, sslrootcert, ...) and a passfile: with one, the password never
    # appears in the connection string (PostgreSQL logs primary_conninfo).
    options: Options = ()
    passfile: str | None = None

    def dsn(self, *, with_password: bool = True) -> str:
        parts: list[tuple[str, Any]] = [
            ("host", self.host),
            ("port", self.port),
            ("user", self.user),
            ("dbname", self.dbname),
        ]
        if self.passfile:
            parts.append(("passfile", self.passfile))
        elif with_password and self.password:
            parts.append(("password", self.password))
        parts += list(self.options)
        if self.application_name:
            parts.append(("application_name", self.application_name))
        if self.connect_timeout is not None:
            parts.append(("connect_timeout", self.connect_timeout))
        return " ".join(f"{k}={_quote_value(str(v))}" for k, v in parts)

    @property
    def conn_url(self) -> str:
        return conn_url(self.host, self.port)

    def __repr__(self) -> str:
        return f"ConnInfo({self.dsn(with_password=False)!r})"


def format_sync_names(names: Iterable[str], count: int = 1) -> str:
    """``FIRST n ("a","b")`` for synchronous_standby_names; empty names give '' (async)."""
    quoted = [f'"{slot_name_for(n)}"' for n in sorted(set(names))]
    if not quoted:
        return ""
    return f"FIRST {max(1, min(count, len(quoted)))} ({','.join(quoted)})"


def strict_sync_names() -> str:
    """The value that blocks commits until a real sync standby is named (synchronous_mode_strict)."""
    return f'FIRST 1 ("{STRICT_SYNC_PLACEHOLDER}")'


def default_pg_hba(replication_user: str, ssl: bool = True) -> tuple[str, ...]:
    # Local trust is safe only because the socket is reserved to PostgreSQL's OS user and group
    # (unix_socket_permissions 0770, see files.SERVER_DEFAULTS); network clients use SCRAM, over TLS
    # only (hostssl) unless TLS is off on purpose. Replication is for the replication user alone.
    host = "hostssl" if ssl else "host"
    return (
        "local all all trust",
        "local replication all trust",
        f"{host} replication {replication_user} all scram-sha-256",
        f"{host} all all all scram-sha-256",
    )


@dataclass(frozen=True)
class PgConfig:
    """Everything the adapter needs to run one member's PostgreSQL; immutable."""

    name: str
    data_dir: str
    bin_dir: str = DEFAULT_BIN_DIR
    listen_host: str = "0.0.0.0"
    listen_port: int = 5432
    connect_host: str = "127.0.0.1"
    connect_port: int = 5432
    superuser: UserCredentials = UserCredentials("postgres")
    replication: UserCredentials = UserCredentials("replicator")
    rewind_user: UserCredentials | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)
    pg_hba: tuple[str, ...] | None = None
    initdb_options: tuple[str, ...] = DEFAULT_INITDB_OPTIONS
    socket_dir: str = DEFAULT_SOCKET_DIR
    run_as: str | None = field(default_factory=_default_run_as)
    # "" (default): <parent of data_dir>/postgresql.log. None: the postmaster inherits our stderr,
    # which is lost (or blocks PostgreSQL on a full pipe) once the process that started it is gone.
    log_file: str | None = ""
    server_tls: ServerTls | None = None
    # The pgpass file of replication/rewind connections (0600, beside the socket); None: passwords
    # go into the connection strings (tests of the adapter alone).
    passfile: str | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("PgConfig.name (the member name) must not be empty")
        if not os.path.isabs(self.data_dir):
            raise ValueError(f"PgConfig.data_dir must be an absolute path, got {self.data_dir!r}")
        if self.log_file == "":
            parent = os.path.dirname(os.path.normpath(self.data_dir))
            object.__setattr__(self, "log_file", os.path.join(parent, "postgresql.log"))

    @property
    def slot_name(self) -> str:
        return slot_name_for(self.name)

    @property
    def application_name(self) -> str:
        return slot_name_for(self.name)

    @property
    def rewinder(self) -> UserCredentials:
        return self.rewind_user or self.superuser

    @property
    def hba_lines(self) -> tuple[str, ...]:
        """The operator's pg_hba lines (or the default ones) behind the lines the appliance keeps."""
        ssl = self.server_tls is not None
        return compose(self.pg_hba, self.replication.username, ssl, default_pg_hba(self.replication.username, ssl))

    @property
    def conn_url(self) -> str:
        return conn_url(self.connect_host, self.connect_port)

    def binary(self, name: str) -> str:
        return os.path.join(self.bin_dir, name)

    def local_conninfo(self, dbname: str = "postgres") -> ConnInfo:
        """The superuser over the unix socket: what status() and admin SQL use."""
        return ConnInfo(
            host=self.socket_dir,
            port=self.listen_port,
            user=self.superuser.username,
            password=self.superuser.password,
            dbname=dbname,
            application_name="pgappliance",
            connect_timeout=2,
        )

    def replication_conninfo(self, host: str, port: int) -> ConnInfo:
        """How this member streams from (or clones) a primary at host:port."""
        return ConnInfo(
            host=host,
            port=port,
            user=self.replication.username,
            password=self.replication.password,
            application_name=self.application_name,
            options=self.replication.options,
            passfile=self.passfile,
        )

    def rewind_conninfo(self, host: str, port: int) -> ConnInfo:
        """How pg_rewind reaches the new primary at host:port."""
        return ConnInfo(
            host=host,
            port=port,
            user=self.rewinder.username,
            password=self.rewinder.password,
            application_name=f"{self.application_name}_rewind",
            options=self.rewinder.options,
            passfile=self.passfile,
        )

    def network_users(self) -> tuple[UserCredentials, ...]:
        """The roles that connect to other members (what the passfile holds)."""
        users = [self.replication, self.rewinder]
        return tuple(u for i, u in enumerate(users) if u.username not in {v.username for v in users[:i]})
