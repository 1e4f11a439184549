"""The cluster CA, node certificates, their checks and private key files (appliance.tls.pki)."""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
import stat
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from appliance.tls import pki

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
DNS = ["node1.example.internal", "node1", "localhost"]
IPS = ["127.0.0.1", "10.0.0.1", "::1"]


@pytest.fixture(scope="module")
def ca() -> pki.Issued:
    return pki.generate_ca("pgappliance cluster CA", now=NOW)


@pytest.fixture(scope="module")
def node(ca: pki.Issued) -> pki.Issued:
    return pki.issue_node_certificate(ca, "node1", dns_names=DNS, ip_addresses=IPS, now=NOW)


E = TypeVar("E", bound=x509.ExtensionType)


def ext(cert: x509.Certificate, kind: type[E]) -> x509.Extension[E]:
    return cert.extensions.get_extension_for_class(kind)


def test_ca_properties(ca: pki.Issued) -> None:
    cert = pki.load_certificate(ca.cert_pem)
    assert cert.subject == cert.issuer
    cert.verify_directly_issued_by(cert)  # self-signed
    bc = ext(cert, x509.BasicConstraints)
    assert bc.critical and bc.value == x509.BasicConstraints(ca=True, path_length=0)
    ku = ext(cert, x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign and not ku.value.digital_signature
    assert ext(cert, x509.SubjectKeyIdentifier).value.digest
    assert cert.not_valid_before_utc == NOW - pki.CLOCK_SKEW
    assert cert.not_valid_after_utc == NOW + timedelta(days=3650)
    assert b"BEGIN PRIVATE KEY" in ca.key_pem  # PKCS8, unencrypted
    assert "key_pem" not in repr(ca) and "PRIVATE" not in repr(ca)


def test_node_certificate_chains_to_ca_and_serves_both_ends(ca: pki.Issued, node: pki.Issued) -> None:
    cert, ca_cert = pki.load_certificate(node.cert_pem), pki.load_certificate(ca.cert_pem)
    cert.verify_directly_issued_by(ca_cert)
    assert ext(cert, x509.BasicConstraints).value.ca is False
    eku = ext(cert, x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    ku = ext(cert, x509.KeyUsage).value
    assert ku.digital_signature and ku.key_agreement and not ku.key_encipherment and not ku.key_cert_sign
    aki = ext(cert, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ext(ca_cert, x509.SubjectKeyIdentifier).value.digest
    assert cert.not_valid_before_utc == NOW - pki.CLOCK_SKEW
    assert cert.not_valid_after_utc == NOW + timedelta(days=825)


def test_sans_are_exact_deduplicated_and_ordered(ca: pki.Issued) -> None:
    issued = pki.issue_node_certificate(
        ca, "n2", dns_names=["B.example", "a.example", "b.example"], ip_addresses=["10.0.0.2", "10.0.0.2", "::1"],
        now=NOW,
    )
    san = ext(pki.load_certificate(issued.cert_pem), x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["b.example", "a.example"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.2"), ipaddress.ip_address("::1")]


def test_serials_are_random(ca: pki.Issued) -> None:
    serials = {
        pki.load_certificate(pki.issue_node_certificate(ca, "n", dns_names=["n"], ip_addresses=[], now=NOW).cert_pem)
        .serial_number
        for _ in range(3)
    }
    assert len(serials) == 3


def test_leaf_never_outlives_its_ca() -> None:
    short_ca = pki.generate_ca("short", days=10, now=NOW)
    issued = pki.issue_node_certificate(short_ca, "n", dns_names=["n"], ip_addresses=[], now=NOW)
    assert pki.expires_in(issued.cert_pem, NOW) == timedelta(days=10)
    with pytest.raises(pki.PkiError, match="expired"):
        pki.issue_node_certificate(short_ca, "n", dns_names=["n"], ip_addresses=[], now=NOW + timedelta(days=11))


@pytest.mark.parametrize(
    ("dns_names", "ip_addresses", "message"),
    [
        ([], ["10.0.0.300"], "'10.0.0.300' is not a valid"),
        ([], ["node1"], "'node1' is not a valid"),
        ([], ["10.0.0.0/24"], "'10.0.0.0/24'"),
        (["bad_name"], [], "'bad_name' is not a valid host name"),
        (["-lead.example"], [], "'-lead.example'"),
        (["trailing.dot."], [], "'trailing.dot.'"),
        (["two..dots"], [], "'two..dots'"),
        (["new\nline"], [], "new\\\\nline"),
        (["x" * 64 + ".example"], [], "is not a valid host name"),
        (["*.example"], [], "'\\*.example'"),
        (["10.0.0.1"], [], "looks like an IP address; pass it in ip_addresses"),
        ([], [], "at least one DNS name or IP address"),
        ("node1", [], "not a string"),
    ],
)
def test_invalid_names_raise_naming_the_value(
    ca: pki.Issued, dns_names: list[str], ip_addresses: list[str], message: str
) -> None:
    with pytest.raises(pki.PkiError, match=message) as info:
        pki.issue_node_certificate(ca, "n", dns_names=dns_names, ip_addresses=ip_addresses, now=NOW)
    assert isinstance(info.value, ValueError)


def test_bad_inputs_raise_pki_error(ca: pki.Issued, node: pki.Issued) -> None:
    with pytest.raises(pki.PkiError, match="timezone-aware"):
        pki.generate_ca("ca", now=datetime(2030, 1, 1))  # naive: the point of the test
    with pytest.raises(pki.PkiError, match="1 to 64"):
        pki.generate_ca("x" * 65, now=NOW)
    with pytest.raises(pki.PkiError, match="days must be at least 1"):
        pki.issue_node_certificate(ca, "n", dns_names=["n"], ip_addresses=[], days=0, now=NOW)
    with pytest.raises(pki.PkiError, match="is not a CA certificate"):
        pki.issue_node_certificate(node, "n", dns_names=["n"], ip_addresses=[], now=NOW)
    other = pki.generate_ca("other", now=NOW)
    with pytest.raises(pki.PkiError, match="CA private key does not match"):
        pki.issue_node_certificate(pki.Issued(ca.cert_pem, other.key_pem), "n", dns_names=["n"], ip_addresses=[])
    with pytest.raises(pki.PkiError, match="not a parseable PEM certificate"):
        pki.expires_in(b"garbage", NOW)


def test_check_certificate_accepts_a_good_certificate(ca: pki.Issued, node: pki.Issued) -> None:
    names = ["node1", "NODE1.example.internal", "localhost", "127.0.0.1", "0:0:0:0:0:0:0:1"]
    assert pki.check_certificate(node.cert_pem, ca_pem=ca.cert_pem, key_pem=node.key_pem, names=names, now=NOW) == []


def test_default_now_is_the_current_time() -> None:
    fresh_ca = pki.generate_ca("fresh")
    fresh = pki.issue_node_certificate(fresh_ca, "n", dns_names=["n"], ip_addresses=[])
    assert pki.check_certificate(fresh.cert_pem, ca_pem=fresh_ca.cert_pem, key_pem=fresh.key_pem) == []
    assert timedelta(days=824) < pki.expires_in(fresh.cert_pem) <= timedelta(days=825)


Case = Callable[[pki.Issued, pki.Issued], dict[str, object]]


def _foreign(ca: pki.Issued, node: pki.Issued) -> dict[str, object]:
    other = pki.generate_ca("some other CA", now=NOW)
    issued = pki.issue_node_certificate(other, "n", dns_names=["n"], ip_addresses=[], now=NOW)
    return {"cert_pem": issued.cert_pem, "key_pem": issued.key_pem}


def _same_name_foreign(ca: pki.Issued, node: pki.Issued) -> dict[str, object]:
    # Same subject as the cluster CA, different key: only the signature check can tell.
    impostor = pki.generate_ca("pgappliance cluster CA", now=NOW)
    issued = pki.issue_node_certificate(impostor, "n", dns_names=["n"], ip_addresses=[], now=NOW)
    return {"cert_pem": issued.cert_pem, "key_pem": issued.key_pem}


def _future(ca: pki.Issued, node: pki.Issued) -> dict[str, object]:
    later = NOW + timedelta(days=1)
    issued = pki.issue_node_certificate(ca, "n", dns_names=["n"], ip_addresses=[], now=later)
    return {"cert_pem": issued.cert_pem, "key_pem": issued.key_pem}


def _other_key(ca: pki.Issued, node: pki.Issued) -> dict[str, object]:
    return {"key_pem": pki.issue_node_certificate(ca, "n2", dns_names=["n2"], ip_addresses=[], now=NOW).key_pem}


CHECK_CASES: list[tuple[str, Case, str]] = [
    ("expired", lambda ca, node: {"now": NOW + timedelta(days=900)}, "certificate expired on 2032-04-05 12:00 UTC"),
    ("not yet valid", _future, "certificate is not valid before 2030-01-02 11:55 UTC (check the clock)"),
    ("foreign CA", _foreign, "issued by some other CA, not by the cluster CA pgappliance cluster CA"),
    ("impostor CA", _same_name_foreign, "issued by another CA named pgappliance cluster CA, not by the cluster CA"),
    ("key mismatch", _other_key, "the private key does not match the certificate"),
    ("garbage key", lambda ca, node: {"key_pem": b"nope"}, "private key: not a parseable"),
    ("missing name", lambda ca, node: {"names": ["node2"]}, "does not cover 'node2' (its names: node1.example"),
    ("missing ip", lambda ca, node: {"names": ["10.0.0.9"]}, "does not cover '10.0.0.9'"),
    ("dns is not an ip", lambda ca, node: {"names": ["10.0.0.1.example"]}, "does not cover '10.0.0.1.example'"),
    ("garbage PEM", lambda ca, node: {"cert_pem": b"-----BEGIN CERTIFICATE-----\nxx\n"}, "certificate: not a parse"),
    ("garbage CA", lambda ca, node: {"ca_pem": b""}, "CA certificate: not a parseable PEM"),
]


@pytest.mark.parametrize(("case", "message"), [(c[1], c[2]) for c in CHECK_CASES], ids=[c[0] for c in CHECK_CASES])
def test_check_certificate_names_the_problem(ca: pki.Issued, node: pki.Issued, case: Case, message: str) -> None:
    args: dict[str, object] = {"cert_pem": node.cert_pem, "ca_pem": ca.cert_pem, "key_pem": node.key_pem, "now": NOW}
    args.update(case(ca, node))
    problems = pki.check_certificate(**args)  # type: ignore[arg-type]
    assert len(problems) == 1, problems
    assert problems[0].startswith(message) or message in problems[0], problems


def test_check_certificate_reports_every_problem_and_an_expired_ca(ca: pki.Issued) -> None:
    other = pki.generate_ca("other", now=NOW)
    foreign = pki.issue_node_certificate(other, "n", dns_names=["n"], ip_addresses=[], now=NOW)
    problems = pki.check_certificate(
        foreign.cert_pem, ca_pem=ca.cert_pem, key_pem=other.key_pem, names=["x"], now=NOW + timedelta(days=4000)
    )
    assert len(problems) == 5, problems
    assert problems[1].startswith("the cluster CA pgappliance cluster CA expired on")


@pytest.mark.parametrize(
    ("name", "covered"),
    [
        ("db.svc.example", True),
        ("DB.svc.example", True),
        ("db.svc.example.", True),
        ("svc.example", False),  # the wildcard needs a label
        ("a.db.svc.example", False),  # one label only
        (".svc.example", False),
        ("svc.example.db", False),
    ],
)
def test_wildcard_san_matches_one_label(ca: pki.Issued, name: str, covered: bool) -> None:
    # Our own issuer refuses wildcards, but an operator-supplied certificate may carry one.
    cert = _wildcard_cert(ca)
    problems = pki.check_certificate(cert, ca_pem=ca.cert_pem, names=[name], now=NOW)
    assert (problems == []) is covered, problems


def _wildcard_cert(ca: pki.Issued) -> bytes:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    ca_cert = pki.load_certificate(ca.cert_pem)
    ca_key = pki.load_private_key(ca.key_pem)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name.from_rfc4514_string("CN=wild"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("*.svc.example")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def test_expires_in(node: pki.Issued) -> None:
    assert pki.expires_in(node.cert_pem, NOW + timedelta(days=800)) == timedelta(days=25)
    assert pki.expires_in(node.cert_pem, NOW + timedelta(days=826)) == timedelta(days=-1)


def test_ensure_private_file_is_private_atomic_and_idempotent(tmp_path: Path) -> None:
    path = str(tmp_path / "node.key")
    assert pki.ensure_private_file(path, b"one", uid=None, gid=None) is True
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    inode = os.stat(path).st_ino
    assert pki.ensure_private_file(path, b"two", uid=os.getuid(), gid=os.getgid()) is True
    assert Path(path).read_bytes() == b"two"
    assert os.stat(path).st_ino != inode  # a new file renamed over the old one, never rewritten in place
    assert [p.name for p in tmp_path.iterdir()] == ["node.key"]  # no temp file left behind
    os.chmod(path, 0o644)
    assert pki.ensure_private_file(path, b"two", uid=None, gid=None) is False
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # unchanged content, mode still fixed
    assert pki.ensure_private_file(path, b"two", uid=None, gid=None, mode=0o640) is False
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640


def test_ensure_private_file_replaces_a_symlink_instead_of_following_it(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(b"precious")
    link = tmp_path / "node.key"
    link.symlink_to(target)
    assert pki.ensure_private_file(str(link), b"precious", uid=None, gid=None) is True
    assert not link.is_symlink() and link.read_bytes() == b"precious"
    assert target.read_bytes() == b"precious"


def test_read_file_names_the_path(tmp_path: Path) -> None:
    (tmp_path / "ok").write_bytes(b"data")
    assert pki.read_file(str(tmp_path / "ok")) == b"data"
    missing = str(tmp_path / "missing.pem")
    with pytest.raises(pki.PkiError, match=f"{missing} does not exist"):
        pki.read_file(missing)
    with pytest.raises(pki.PkiError, match=f"cannot read {tmp_path}"):
        pki.read_file(str(tmp_path))  # a directory


@pytest.fixture(scope="module")
def live() -> tuple[pki.Issued, pki.Issued]:
    """A CA and node pair valid right now: OpenSSL verifies against the real clock."""
    live_ca = pki.generate_ca("live CA")
    return live_ca, pki.issue_node_certificate(live_ca, "node1", dns_names=DNS, ip_addresses=IPS)


def _handshake(pair: tuple[pki.Issued, pki.Issued], tmp_path: Path, server_hostname: str) -> None:
    """A real TLS handshake over a socketpair: the node's pair as server, the cluster CA as client trust."""
    ca, node = pair
    cert_file, key_file, ca_file = tmp_path / "node.crt", tmp_path / "node.key", tmp_path / "ca.crt"
    cert_file.write_bytes(node.cert_pem)
    key_file.write_bytes(node.key_pem)
    ca_file.write_bytes(ca.cert_pem)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(str(cert_file), str(key_file))
    client_ctx = ssl.create_default_context(cafile=str(ca_file))
    client_ctx.verify_flags |= ssl.VERIFY_X509_STRICT  # the default from Python 3.13 on
    server_sock, client_sock = socket.socketpair()
    server_sock.settimeout(5)
    client_sock.settimeout(5)

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(server_sock, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError):
            pass  # the client rejected us; the client side's error is what the test checks

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with client_ctx.wrap_socket(client_sock, server_hostname=server_hostname) as tls:
            assert tls.getpeercert() is not None
            tls.sendall(b"x")
    finally:
        client_sock.close()
        thread.join(5)


@pytest.mark.parametrize("server_hostname", ["node1.example.internal", "localhost", "127.0.0.1", "::1"])
def test_python_ssl_accepts_the_pair_for_a_san(
    live: tuple[pki.Issued, pki.Issued], tmp_path: Path, server_hostname: str
) -> None:
    _handshake(live, tmp_path, server_hostname)


@pytest.mark.parametrize("server_hostname", ["node2.example.internal", "10.0.0.9"])
def test_python_ssl_rejects_a_name_not_in_the_sans(
    live: tuple[pki.Issued, pki.Issued], tmp_path: Path, server_hostname: str
) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        _handshake(live, tmp_path, server_hostname)
