"""PgConfig, ConnInfo and the small naming/formatting helpers of the PostgreSQL adapter."""

from __future__ import annotations

import pytest

from appliance.config.schema import LocalConfig
from appliance.postgres import (
    ConnInfo,
    PgConfig,
    UserCredentials,
    conn_url,
    format_sync_names,
    parse_conn_url,
    slot_name_for,
    split_host_port,
    strict_sync_names,
)
from appliance.postgres.settings import initdb_options, pg_config_from_settings


def test_slot_names_follow_patroni_sanitising() -> None:
    assert slot_name_for("Node-1.example") == "node_1_example"
    assert slot_name_for("pg_2") == "pg_2"


def test_dsn_quotes_every_value() -> None:
    info = ConnInfo("db host", 5433, "rep", "p'a\\ss word", application_name="n1", connect_timeout=3)
    assert info.dsn() == (
        "host='db host' port='5433' user='rep' dbname='postgres' password='p\\'a\\\\ss word' "
        "application_name='n1' connect_timeout='3'"
    )
    assert "password" not in info.dsn(with_password=False)
    assert "p'a" not in repr(info)
    assert info.conn_url == "postgres://db host:5433/postgres"


def test_conn_url_roundtrip_and_ipv6() -> None:
    assert conn_url("::1", 5432) == "postgres://[::1]:5432/postgres"
    assert parse_conn_url("postgres://[::1]:5432/postgres") == ("::1", 5432)
    assert parse_conn_url("postgresql://node2/postgres") == ("node2", 5432)
    with pytest.raises(ValueError, match="postgres://host:port"):
        parse_conn_url("http://node2:5432")


def test_split_host_port() -> None:
    assert split_host_port("0.0.0.0:5433") == ("0.0.0.0", 5433)
    assert split_host_port("[::]:5432") == ("::", 5432)
    assert split_host_port("node1", 6000) == ("node1", 6000)


def test_sync_names() -> None:
    assert format_sync_names([]) == ""
    assert format_sync_names(["b-2", "a"], count=1) == 'FIRST 1 ("a","b_2")'
    assert format_sync_names(["a"], count=3) == 'FIRST 1 ("a")'
    assert strict_sync_names() == 'FIRST 1 ("__patroni_strict_sync_replica_placeholder__")'


def test_pg_config_defaults() -> None:
    cfg = PgConfig(name="Node-1", data_dir="/var/lib/postgresql/data", run_as=None)
    assert cfg.slot_name == cfg.application_name == "node_1"
    assert cfg.log_file == "/var/lib/postgresql/postgresql.log"
    assert cfg.rewinder == cfg.superuser
    assert cfg.hba_lines == (
        "local all all trust",
        "local replication all trust",
        "host replication replicator all scram-sha-256",
        "host all all all scram-sha-256",
    )
    assert cfg.initdb_options == ("--data-checksums", "--encoding=UTF8")
    assert cfg.local_conninfo().host == "/var/run/postgresql"
    rep = cfg.replication_conninfo("n2", 5432)
    assert (rep.user, rep.application_name) == ("replicator", "node_1")


def test_pg_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="absolute"):
        PgConfig(name="n", data_dir="data")
    with pytest.raises(ValueError, match="name"):
        PgConfig(name="", data_dir="/d")


def test_credentials_repr_hides_password() -> None:
    assert "hunter2" not in repr(UserCredentials("u", "hunter2"))


def test_from_settings() -> None:
    local = LocalConfig.model_validate(
        {
            "name": "node2",
            "postgresql": {
                "listen": "0.0.0.0:5433",
                "connect_address": "node2:5433",
                "data_dir": "/pg/data",
                "authentication": {
                    "superuser": {"username": "postgres", "password": "s"},
                    "replication": {"username": "rep", "password": "r"},
                },
                "parameters": {"work_mem": "8MB"},
            },
            "bootstrap": {"initdb": ["data-checksums", {"encoding": "UTF8"}, {"locale": "C.UTF-8"}]},
        }
    )
    cfg = pg_config_from_settings(local, socket_dir="/run/pg")
    assert (cfg.listen_host, cfg.listen_port, cfg.connect_host, cfg.connect_port) == ("0.0.0.0", 5433, "node2", 5433)
    assert cfg.replication == UserCredentials("rep", "r") and cfg.rewind_user is None
    assert cfg.parameters == {"work_mem": "8MB"} and cfg.pg_hba is None
    assert cfg.initdb_options == ("--data-checksums", "--encoding=UTF8", "--locale=C.UTF-8")
    assert cfg.conn_url == "postgres://node2:5433/postgres"
    with pytest.raises(ValueError, match=r"bootstrap\.initdb"):
        initdb_options([3])
