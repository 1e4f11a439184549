"""Build a PgConfig from the appliance settings (Patroni-shaped LocalConfig)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from appliance.config.schema import LocalConfig, UserAuth
from appliance.config.security import postgresql_tls_files
from appliance.net.address import split_host_port
from appliance.postgres.config import DEFAULT_SOCKET_DIR, PgConfig, ServerTls, UserCredentials

# UserAuth fields that are libpq connection options.
_LIBPQ_OPTIONS = ("sslmode", "sslrootcert", "sslcert", "sslkey", "sslcrl", "channel_binding")


def initdb_options(spec: Sequence[Any]) -> tuple[str, ...]:
    """Patroni's ``bootstrap.initdb`` list (``["data-checksums", {"encoding": "UTF8"}]``) -> argv."""
    options: list[str] = []
    for item in spec:
        if isinstance(item, str):
            options.append(item if item.startswith("--") else f"--{item}")
        elif isinstance(item, Mapping):
            for key, value in item.items():
                options.append(f"--{key}={value}")
        else:
            raise ValueError(f"bootstrap.initdb: {item!r} is neither an option name nor a {{name: value}} map")
    return tuple(options)


def _credentials(auth: UserAuth) -> UserCredentials:
    options = tuple((key, str(getattr(auth, key))) for key in _LIBPQ_OPTIONS if getattr(auth, key) is not None)
    return UserCredentials(auth.username, auth.password, options)


def pg_config_from_settings(
    local: LocalConfig,
    parameters: Mapping[str, Any] | None = None,
    *,
    socket_dir: str = DEFAULT_SOCKET_DIR,
    log_file: str | None = "",
    passfile: str | None = None,
) -> PgConfig:
    """`parameters`: the effective server parameters (dynamic merged with local); default: local's."""
    pg = local.postgresql
    listen_host, listen_port = split_host_port(pg.listen)
    connect_host, connect_port = split_host_port(pg.connect_address, listen_port)
    auth = pg.authentication
    tls = postgresql_tls_files(local)
    return PgConfig(
        name=local.name,
        data_dir=pg.data_dir,
        bin_dir=pg.bin_dir,
        listen_host=listen_host,
        listen_port=listen_port,
        connect_host=connect_host,
        connect_port=connect_port,
        superuser=_credentials(auth.superuser),
        replication=_credentials(auth.replication),
        rewind_user=_credentials(auth.rewind) if auth.rewind else None,
        parameters=dict(pg.parameters if parameters is None else parameters),
        pg_hba=tuple(pg.pg_hba or local.bootstrap.pg_hba or ()) or None,
        initdb_options=initdb_options(local.bootstrap.initdb),
        socket_dir=socket_dir,
        log_file=log_file,
        server_tls=ServerTls(*tls) if tls else None,
        passfile=passfile,
    )
