"""X.509 for the appliance: one cluster CA, per-node certificates, checks and private key files.

Pure functions over PEM bytes (time is a parameter) plus two small file helpers. One node
certificate serves every channel (etcd peer and client, PostgreSQL, the REST API as server and
as client), so it carries both serverAuth and clientAuth and SANs for all the node's names.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import tempfile
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes, PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Nodes' clocks disagree a little; a certificate minted on one must already be valid on the others.
CLOCK_SKEW = timedelta(minutes=5)
_LABEL_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")  # used with fullmatch: "$" would let "\n" in
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class PkiError(ValueError):
    """Bad TLS material or input; the message names the culprit and says what is wrong."""


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, both PEM (key: unencrypted PKCS8)."""

    cert_pem: bytes
    key_pem: bytes = field(repr=False)  # a repr must never put a private key into a log


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None or now.utcoffset() is None:
        raise PkiError("now must be a timezone-aware datetime")
    return now.astimezone(UTC)


def load_certificate(cert_pem: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise PkiError(f"not a parseable PEM certificate: {exc}") from None


def load_private_key(key_pem: bytes) -> PrivateKeyTypes:
    try:
        return serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:  # TypeError: the key is encrypted
        raise PkiError(f"not a parseable unencrypted PEM private key: {exc}") from None


def _common_name(cert: x509.Certificate | x509.Name) -> str:
    name = cert.subject if isinstance(cert, x509.Certificate) else cert
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else name.rfc4514_string()


def _name(common_name: str) -> x509.Name:
    if not 1 <= len(common_name) <= 64:  # the X.509 upper bound for a CN
        raise PkiError(f"common name {common_name!r} must be 1 to 64 characters")
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issued(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Issued:
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return Issued(cert.public_bytes(serialization.Encoding.PEM), key_pem)


def _builder(subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, not_before: datetime,
             not_after: datetime) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after))


def _key_usage(**flags: bool) -> x509.KeyUsage:
    names = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
             "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
    return x509.KeyUsage(**{name: flags.get(name, False) for name in names})


def _spki(key: PrivateKeyTypes | x509.Certificate) -> bytes:
    public = key.public_key()
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def generate_ca(common_name: str, *, days: int = 3650, now: datetime | None = None) -> Issued:
    """A self-signed ECDSA P-256 CA that may sign leaf certificates only (path_length=0)."""
    if days < 1:
        raise PkiError(f"days must be at least 1, not {days}")
    start = _utc(now)
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    cert = (
        _builder(name, name, key, start - CLOCK_SKEW, start + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        # RFC 5280 lets a self-signed root omit the AKI; leaves carry it (OpenSSL's strict mode insists).
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _issued(cert, key)


def _dns_name(value: str) -> str:
    name = value.lower()
    labels = name.split(".")
    # Clients match an IP only against IP SANs, so a DNS SAN "10.0.0.1" would never match anything.
    if labels[-1].isdigit():
        raise PkiError(f"DNS name {value!r} looks like an IP address; pass it in ip_addresses")
    if len(name) > 253 or not all(_LABEL_RE.fullmatch(label) for label in labels):
        raise PkiError(f"DNS name {value!r} is not a valid host name (letters, digits, '-' and dots)")
    return name


def _ip(value: str) -> IPAddress:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise PkiError(f"IP address {value!r} is not a valid IPv4 or IPv6 address") from None


def _sans(dns_names: Sequence[str], ip_addresses: Sequence[str]) -> list[x509.GeneralName]:
    if isinstance(dns_names, str) or isinstance(ip_addresses, str):
        raise PkiError("dns_names and ip_addresses must be sequences of strings, not a string")
    # dict.fromkeys deduplicates (case-insensitively for DNS, by value for IPs) and keeps the order.
    dns = dict.fromkeys(_dns_name(n) for n in dns_names)
    ips = dict.fromkeys(_ip(a) for a in ip_addresses)
    if not dns and not ips:
        raise PkiError("a node certificate needs at least one DNS name or IP address")
    return [*(x509.DNSName(n) for n in dns), *(x509.IPAddress(a) for a in ips)]


def _signing_ca(ca: Issued) -> tuple[x509.Certificate, CertificateIssuerPrivateKeyTypes]:
    cert, key = load_certificate(ca.cert_pem), load_private_key(ca.key_pem)
    if not isinstance(key, typing.get_args(CertificateIssuerPrivateKeyTypes)):
        raise PkiError(f"the CA key type {type(key).__name__} cannot sign certificates")
    if _spki(key) != _spki(cert):
        raise PkiError("the CA private key does not match the CA certificate")
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise PkiError(f"{_common_name(cert)!r} is not a CA certificate (BasicConstraints ca=True missing)")
    return cert, key


def _authority_key_id(
    ca_cert: x509.Certificate, ca_key: CertificateIssuerPrivateKeyTypes,
) -> x509.AuthorityKeyIdentifier:
    try:
        # Reuse the CA's own SKI: verifiers pick the issuer by AKI == SKI, whatever method made the SKI.
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def issue_node_certificate(ca: Issued, common_name: str = "", *, dns_names: Sequence[str], ip_addresses: Sequence[str],
                           days: int = 825, now: datetime | None = None) -> Issued:
    """An ECDSA P-256 leaf signed by `ca`, good as TLS server and client for all the given names."""
    if days < 1:
        raise PkiError(f"days must be at least 1, not {days}")
    start = _utc(now)
    sans = _sans(dns_names, ip_addresses)
    ca_cert, ca_key = _signing_ca(ca)
    # A leaf that outlives its CA would fail anyway, and later and more confusingly; cap it.
    end = min(start + timedelta(days=days), ca_cert.not_valid_after_utc)
    if end <= start:
        raise PkiError(f"the cluster CA {_common_name(ca_cert)!r} expired on {ca_cert.not_valid_after_utc:%Y-%m-%d}")
    key = ec.generate_private_key(ec.SECP256R1())
    eku = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
    begin = max(start - CLOCK_SKEW, ca_cert.not_valid_before_utc)
    cert = (
        # No CN by default: names live in the SANs (RFC 6125), and etcd 3.4 refuses every request of its
        # JSON gateway (what Patroni speaks) from a client certificate that carries a CN.
        _builder(_name(common_name) if common_name else x509.Name([]), ca_cert.subject, key, begin, end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # ECDSA keys sign (ECDHE); keyEncipherment is RSA key transport, meaningless for EC.
        .add_extension(_key_usage(digital_signature=True, key_agreement=True), critical=True)
        .add_extension(eku, critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_authority_key_id(ca_cert, ca_key), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return _issued(cert, key)


def expires_in(cert_pem: bytes, now: datetime | None = None) -> timedelta:
    """Time left until notAfter; negative once expired."""
    return load_certificate(cert_pem).not_valid_after_utc - _utc(now)


def _validity_problems(cert: x509.Certificate, now: datetime, what: str) -> list[str]:
    if now > cert.not_valid_after_utc:
        ago = (now - cert.not_valid_after_utc).days
        return [f"{what} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC ({ago} days ago)"]
    if now < cert.not_valid_before_utc:
        return [f"{what} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC (check the clock)"]
    return []


def _issuer_problem(cert: x509.Certificate, ca_cert: x509.Certificate) -> str | None:
    try:
        cert.verify_directly_issued_by(ca_cert)
    except ValueError:  # the issuer name differs
        return f"issued by {_common_name(cert.issuer)}, not by the cluster CA {_common_name(ca_cert)}"
    except InvalidSignature:  # same issuer name, another key: a CA regenerated elsewhere, or an impostor
        return f"issued by another CA named {_common_name(cert.issuer)}, not by the cluster CA (signature mismatch)"
    except TypeError as exc:  # an algorithm cryptography cannot verify
        return f"cannot verify the signature against the cluster CA {_common_name(ca_cert)}: {exc}"
    return None


def _san_values(cert: x509.Certificate) -> tuple[list[str], list[IPAddress]]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    ips = [ip for ip in san.get_values_for_type(x509.IPAddress) if isinstance(ip, IPAddress)]  # not networks
    return [n.lower() for n in san.get_values_for_type(x509.DNSName)], ips


def _dns_covered(name: str, patterns: Sequence[str]) -> bool:
    host = name.lower().rstrip(".")
    if host in patterns:
        return True
    # A wildcard stands for exactly one whole, leftmost label (RFC 6125): *.x matches a.x, not x or a.b.x.
    first, _, rest = host.partition(".")
    return bool(first and rest) and f"*.{rest}" in patterns


def _name_problems(cert: x509.Certificate, names: Sequence[str]) -> list[str]:
    dns, ips = _san_values(cert)
    covers = ", ".join([*dns, *map(str, ips)]) or "nothing"
    problems = []
    for name in names:
        try:
            covered = ipaddress.ip_address(name) in ips
        except ValueError:
            covered = _dns_covered(name, dns)
        if not covered:
            problems.append(f"does not cover {name!r} (its names: {covers})")
    return problems


def check_certificate(cert_pem: bytes, *, ca_pem: bytes, key_pem: bytes | None = None, names: Sequence[str] = (),
                      now: datetime | None = None) -> list[str]:
    """Every problem with a node certificate in plain English; an empty list when it is fine."""
    at = _utc(now)
    try:
        cert = load_certificate(cert_pem)
    except PkiError as exc:
        return [f"certificate: {exc}"]
    try:
        ca_cert = load_certificate(ca_pem)
    except PkiError as exc:
        return [f"CA certificate: {exc}"]
    problems = _validity_problems(cert, at, "certificate")
    problems += _validity_problems(ca_cert, at, f"the cluster CA {_common_name(ca_cert)}")
    issuer = _issuer_problem(cert, ca_cert)
    problems += [issuer] if issuer else []
    if key_pem is not None:
        try:
            if _spki(load_private_key(key_pem)) != _spki(cert):
                problems.append("the private key does not match the certificate")
        except PkiError as exc:
            problems.append(f"private key: {exc}")
    return problems + _name_problems(cert, names)


def read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise PkiError(f"{path} does not exist") from None
    except OSError as exc:
        raise PkiError(f"cannot read {path}: {exc.strerror or exc}") from None


def _fix_owner_mode(fd: int, uid: int | None, gid: int | None, mode: int) -> None:
    if uid is not None or gid is not None:
        os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)  # -1 leaves that id alone
    os.fchmod(fd, mode)


def ensure_private_file(path: str, data: bytes, *, uid: int | None, gid: int | None, mode: int = 0o600) -> bool:
    """Make `path` hold `data` with `mode` and owner; False when the content was already right."""
    try:
        # O_NOFOLLOW: a symlink planted at a key's path is replaced below, never followed into its target.
        fd: int | None = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        fd = None
    if fd is not None:
        with os.fdopen(fd, "rb") as f:
            if f.read() == data:
                _fix_owner_mode(f.fileno(), uid, gid, mode)
                return False
    directory = os.path.dirname(os.path.abspath(path))
    tmp_fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.")  # created 0600
    try:
        with os.fdopen(tmp_fd, "wb") as f:
            _fix_owner_mode(f.fileno(), uid, gid, mode)  # before the data goes in: never readable by others
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename survives a crash only once the directory is synced
    finally:
        os.close(dir_fd)
    return True
