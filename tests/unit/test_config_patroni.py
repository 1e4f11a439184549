"""A Patroni patroni.yml is a valid start; the shipped config/appliance.yml documents the defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import bootstrap_dynamic, build_local, load_local, resolve
from appliance.config.schema import DynamicConfig, LocalConfig

REPO = Path(__file__).resolve().parents[2]

# Shaped like Patroni's postgres0.yml plus the settings operators commonly add.
PATRONI_YML = """\
scope: batman
namespace: /service/
name: postgresql0

log:
  level: INFO
  dir: /var/log/patroni

restapi:
  listen: 0.0.0.0:8008
  connect_address: 10.0.0.11:8008
  certfile: /etc/ssl/certs/ssl-cert-snakeoil.pem
  keyfile: /etc/ssl/private/ssl-cert-snakeoil.key
  allowlist: [10.0.0.0/24]
  authentication:
    username: admin
    password: admin-pass

ctl:
  insecure: false

etcd3:
  hosts: 10.0.0.11:2379,10.0.0.12:2379,10.0.0.13:2379
  protocol: http
  cacert: /etc/etcd/ca.crt

bootstrap:
  dcs:
    ttl: 30
    loop_wait: 10
    retry_timeout: 10
    maximum_lag_on_failover: 1048576
    synchronous_mode: false
    postgresql:
      use_pg_rewind: true
      use_slots: true
      pg_hba:
        - host replication replicator 10.0.0.0/24 scram-sha-256
        - host all all 0.0.0.0/0 scram-sha-256
      parameters:
        max_connections: 200
        wal_level: replica
        hot_standby: "on"
        wal_keep_size: 256MB
        archive_mode: "on"
        archive_command: /bin/true
      recovery_conf:
        restore_command: cp ../wal_archive/%f %p
  initdb:
    - encoding: UTF8
    - data-checksums
  post_init: /usr/local/bin/setup_cluster.sh

postgresql:
  listen: 0.0.0.0:5432
  connect_address: 10.0.0.11:5432
  data_dir: /var/lib/postgresql/15/main
  bin_dir: /usr/lib/postgresql/15/bin
  pgpass: /tmp/pgpass0
  authentication:
    replication:
      username: replicator
      password: rep-pass
    superuser:
      username: postgres
      password: zalando
      sslmode: prefer
    rewind:
      username: rewind_user
      password: rewind_password
  parameters:
    unix_socket_directories: /var/run/postgresql
    shared_buffers: 256MB
  callbacks:
    on_role_change: /usr/local/bin/on_role_change.sh
  create_replica_methods:
    - basebackup
  basebackup:
    max-rate: 100M
    checkpoint: fast
  remove_data_directory_on_rewind_failure: true

watchdog:
  mode: automatic
  device: /dev/watchdog
  safety_margin: 5

tags:
  nofailover: false
  noloadbalance: false
  clonefrom: false
  nosync: false
"""


@pytest.fixture
def patroni_yml(tmp_path: Path) -> str:
    path = tmp_path / "patroni.yml"
    path.write_text(PATRONI_YML)
    return str(path)


def test_patroni_yml_is_accepted(patroni_yml: str) -> None:
    layers = load_local(patroni_yml, {})
    config = build_local(layers)
    assert (config.scope, config.name) == ("batman", "postgresql0")
    assert config.etcd3.hosts == ["10.0.0.11:2379", "10.0.0.12:2379", "10.0.0.13:2379"]
    assert config.postgresql.authentication.rewind is not None
    assert config.postgresql.authentication.superuser.password == "zalando"
    assert config.postgresql.parameters == {"unix_socket_directories": "/var/run/postgresql",
                                            "shared_buffers": "256MB"}
    assert config.bootstrap.initdb == [{"encoding": "UTF8"}, "data-checksums"]
    assert config.tags["nofailover"] is False
    # Implemented Patroni keys: etcd3 TLS, libpq TLS options of a user, the ctl section.
    assert config.etcd3.cacert == "/etc/etcd/ca.crt"
    assert config.postgresql.authentication.superuser.sslmode == "prefer"
    assert config.ctl.insecure is False
    assert (config.watchdog.mode, config.watchdog.device, config.watchdog.safety_margin) == (
        "automatic", "/dev/watchdog", 5)


def test_unimplemented_patroni_keys_warn(patroni_yml: str) -> None:
    warnings = load_local(patroni_yml, {}).warnings
    ignored = {w.split(" ", 1)[0] for w in warnings}
    assert ignored == {
        "log",
        "bootstrap.dcs.postgresql.recovery_conf", "bootstrap.post_init", "postgresql.pgpass",
        "postgresql.callbacks",
        "postgresql.create_replica_methods", "postgresql.basebackup",
        "postgresql.remove_data_directory_on_rewind_failure",
    }
    assert all("accepted but ignored" in w for w in warnings)
    log_key = next(w for w in warnings if w.startswith("log "))
    assert ":" in log_key.split("(", 1)[1]  # file:line


def test_patroni_bootstrap_dcs_seeds_the_dynamic_config(patroni_yml: str) -> None:
    doc = bootstrap_dynamic(load_local(patroni_yml, {}))
    assert (doc["ttl"], doc["loop_wait"], doc["retry_timeout"]) == (30, 10, 10)
    params = doc["postgresql"]["parameters"]
    assert params["max_connections"] == 200
    assert params["archive_mode"] == "on"
    assert params["max_locks_per_transaction"] == 64  # defaults fill the cluster-wide ones
    assert "recovery_conf" not in doc["postgresql"]
    assert doc["postgresql"]["pg_hba"][0].startswith("host replication")


def test_patroni_yml_resolves_against_its_own_dcs_config(patroni_yml: str) -> None:
    layers = load_local(patroni_yml, {})
    effective = resolve(layers, bootstrap_dynamic(layers))
    assert effective.not_applied == ()
    assert effective.postgresql_parameters["shared_buffers"] == "256MB"
    assert effective.postgresql_parameters["max_connections"] == 200
    assert effective.pg_hba == ["host replication replicator 10.0.0.0/24 scram-sha-256",
                                "host all all 0.0.0.0/0 scram-sha-256"]


def test_etcd_v2_section_is_ignored_with_a_pointer_to_etcd3(tmp_path: Path) -> None:
    path = tmp_path / "p.yml"
    path.write_text("etcd:\n  host: 127.0.0.1:2379\netcd3:\n  host: 10.0.0.1:2379\n")
    layers = load_local(str(path), {})
    assert build_local(layers).etcd3.hosts == ["10.0.0.1:2379"]
    (warning,) = layers.warnings
    assert warning.startswith("etcd.host") and "etcd3.hosts" in warning


def test_custom_bootstrap_method_section_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "p.yml"
    path.write_text("bootstrap:\n  method: clone\n  clone:\n    command: /bin/clone.sh\n")
    layers = load_local(str(path), {})
    assert {w.split(" ", 1)[0] for w in layers.warnings} == {"bootstrap.method", "bootstrap.clone"}


def test_reference_config_documents_the_defaults() -> None:
    layers = load_local(str(REPO / "config" / "appliance.yml"), {})
    assert layers.warnings == ()
    config = build_local(layers).model_dump()
    config["bootstrap"]["dcs"] = {}
    assert config == LocalConfig().model_dump()
    assert bootstrap_dynamic(layers) == bootstrap_dynamic(load_local(None, {}))


def test_reference_config_mentions_every_key() -> None:
    text = (REPO / "config" / "appliance.yml").read_text()
    for key in LocalConfig().model_dump(mode="json"):
        assert f"\n{key}:" in f"\n{text}"
    for key in DynamicConfig.model_fields:
        assert f"    {key}:" in text
