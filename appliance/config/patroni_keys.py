"""Patroni settings that pgappliance accepts but ignores, so that a patroni.yml is a valid start."""

from __future__ import annotations

from typing import Any

NOT_IMPLEMENTED = "Patroni setting not implemented by pgappliance"

# libpq options of postgresql.authentication.* that we do not pass on (the others are UserAuth fields).
_SSL_CLIENT = frozenset({"sslpassword", "sslcrldir", "gssencmode"})
# Patroni's etcd (API v2) / etcd3 client keys. Our `etcd` section is the embedded member instead.
ETCD_CLIENT_KEYS = frozenset({
    "host", "hosts", "url", "proxy", "srv", "srv_suffix", "protocol", "username", "password",
    "cacert", "cert", "key", "use_proxies",
})
# Of those, the ones the etcd3 section does not implement (discovery through DNS SRV or proxies).
ETCD3_IGNORED = frozenset({"url", "proxy", "srv", "srv_suffix", "use_proxies"})
# Top-level dynamic keys Patroni knows and we do not act on. In a DCS document they are kept
# (other Patroni tools may read them); in the local file they are dropped with a warning.
DYNAMIC_TOP_NOT_IMPLEMENTED = frozenset({
    "standby_cluster", "slots", "ignore_slots", "master_start_timeout",
    "master_stop_timeout",
})
# Keys of the dynamic `postgresql` section that we drop: not implemented, or local-only (Patroni
# strips those from the DCS too).
DYNAMIC_POSTGRESQL_IGNORED = frozenset({
    "recovery_conf", "pg_ident", "listen", "connect_address", "proxy_address", "data_dir",
    "config_dir", "bin_dir", "bin_name", "pgpass", "authentication", "callbacks",
    "remove_data_directory_on_rewind_failure", "remove_data_directory_on_diverged_timelines",
})

LOCAL_IGNORED: dict[tuple[str, ...], frozenset[str]] = {
    (): frozenset({
        "log", "kubernetes", "consul", "zookeeper", "exhibitor", "raft", "citus",
    }) | DYNAMIC_TOP_NOT_IMPLEMENTED,
    ("restapi",): frozenset({
        "keyfile_password", "ciphers",
        "http_extra_headers", "https_extra_headers", "server_tokens",
        "request_queue_size", "thread_pool_size",
    }),
    ("etcd3",): ETCD3_IGNORED,
    ("ctl",): frozenset({"keyfile_password"}),
    ("etcd",): ETCD_CLIENT_KEYS,
    ("bootstrap",): frozenset({"method", "users", "post_bootstrap", "post_init"}),
    ("postgresql",): frozenset({
        "callbacks", "proxy_address", "create_replica_methods", "config_dir", "bin_name", "pgpass",
        "use_unix_socket", "use_unix_socket_repl", "recovery_conf", "custom_conf", "pg_ident",
        "pg_ctl_timeout", "remove_data_directory_on_rewind_failure",
        "remove_data_directory_on_diverged_timelines", "replica_method", "pre_promote", "before_stop",
        "krbsrvname", "basebackup",
    }),
    ("postgresql", "authentication", "superuser"): _SSL_CLIENT,
    ("postgresql", "authentication", "replication"): _SSL_CLIENT,
    ("postgresql", "authentication", "rewind"): _SSL_CLIENT,
}

_WHY: dict[tuple[str, ...], str] = {
    ("etcd",): "Patroni's etcd (API v2) client section; pgappliance speaks etcd v3 only: set etcd3.hosts "
               "(the `etcd` section configures the embedded etcd member)",
    ("bootstrap",): "pgappliance bootstraps with initdb and creates its users itself",
}


def ignored_keys(path: tuple[str, ...], node: dict[str, Any]) -> frozenset[str]:
    """Patroni keys accepted but ignored at ``path``; custom method sections named in ``node`` too."""
    keys = LOCAL_IGNORED.get(path, frozenset())
    # A key that is also one of our fields (bootstrap.initdb) is matched as the field first.
    if path == ("bootstrap",) and isinstance(node.get("method"), str):
        keys |= {node["method"]}
    if path == ("postgresql",) and isinstance(node.get("create_replica_methods"), list):
        keys |= {m for m in node["create_replica_methods"] if isinstance(m, str)}
    return keys


def why_ignored(path: tuple[str, ...]) -> str:
    return _WHY.get(path, NOT_IMPLEMENTED)
