"""Secure by default: TLS keys derived from the tls section, unprotected channels refused unless opted out."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import build_local, load_local, resolve
from appliance.config.security import CHANNELS, insecure_channels, security_problems, security_warnings
from appliance.tls import identity


@pytest.fixture
def tls(tmp_path: Path) -> identity.NodeTls:
    identity.init_ca(tmp_path / "ca")
    issued, _ = identity.issue_node(str(tmp_path / "ca" / "ca.crt"), str(tmp_path / "ca" / "ca.key"),
                                    tmp_path / "tls", dns_names=["node1"], ip_addresses=["127.0.0.1"])
    return issued


def secure_env(tls: identity.NodeTls) -> dict[str, str]:
    return {"APPLIANCE_TLS__CA_FILE": tls.ca_file, "APPLIANCE_TLS__CERT_FILE": tls.cert_file,
            "APPLIANCE_TLS__KEY_FILE": tls.key_file, "APPLIANCE_RESTAPI__AUTHENTICATION__PASSWORD": "a",
            "APPLIANCE_ETCD3__PASSWORD": "e", "APPLIANCE_ETCD__ROOT_PASSWORD": "r"}


def test_every_channel_is_derived_from_the_tls_section(tls: identity.NodeTls) -> None:
    layers = load_local(None, secure_env(tls))
    local = build_local(layers)
    assert insecure_channels(local) == () and security_problems(local, layers.provenance) == []
    assert (local.restapi.certfile, local.restapi.keyfile) == (tls.cert_file, tls.key_file)
    assert (local.etcd3.protocol, local.etcd3.cacert, local.etcd3.cert) == ("https", tls.ca_file, tls.cert_file)
    assert local.etcd3.username == "appliance" and local.ctl.cacert == tls.ca_file
    replication = local.postgresql.authentication.replication
    assert (replication.sslmode, replication.sslrootcert) == ("verify-full", tls.ca_file)
    provenance = resolve(layers, None).provenance
    assert provenance["restapi.certfile"] == "derived from tls (tls.cert_file)"


def test_an_explicit_patroni_key_wins_over_the_derived_one(tls: identity.NodeTls) -> None:
    env = {**secure_env(tls), "APPLIANCE_POSTGRESQL__AUTHENTICATION__REPLICATION__SSLMODE": "verify-ca"}
    local = build_local(load_local(None, env))
    assert local.postgresql.authentication.replication.sslmode == "verify-ca"


def test_an_unprotected_channel_without_its_opt_out_is_a_start_up_error() -> None:
    layers = load_local(None, {})
    problems = security_problems(build_local(layers), layers.provenance)
    assert sorted(p.key for p in problems) == sorted(f"security.{c}" for c in CHANNELS)
    assert all("security." in p.reason and ": false" in p.reason for p in problems)


def test_opted_out_channels_are_warned_about_not_refused() -> None:
    env = {f"APPLIANCE_SECURITY__{c.upper()}": "false" for c in CHANNELS}
    local = build_local(load_local(None, env))
    assert security_problems(local) == []
    assert len(security_warnings(local)) == len(CHANNELS)


def test_a_tls_file_that_cannot_be_read_names_its_key(tls: identity.NodeTls) -> None:
    env = {**secure_env(tls), "APPLIANCE_ETCD3__CACERT": "/nonexistent/ca.crt"}
    layers = load_local(None, env)
    problems = security_problems(build_local(layers), layers.provenance)
    assert [(p.key, p.source) for p in problems] == [("etcd3.cacert", "env APPLIANCE_ETCD3__CACERT")]
    assert "cannot read /nonexistent/ca.crt" in problems[0].reason
