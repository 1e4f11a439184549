"""Patroni's access check for unsafe methods: allowlist (403), client certificate (403), Basic auth (401)."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hmac
import ipaddress
import json
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, request

from appliance.config.schema import RestApi

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
REALM = 'Basic realm="Patroni"'
Compare = Callable[[bytes, bytes], bool]
# The member URLs (api_url, conn_url) of the cluster, for allowlist_include_members.
MemberUrls = Callable[[], Iterable[str]]


@dataclass(frozen=True)
class AccessPolicy:
    """What guards unsafe methods; built from ``restapi`` of the local configuration."""

    username: str | None = None
    password: str | None = None
    allowlist: tuple[str, ...] = ()
    include_members: bool = False
    verify_client: str | None = None

    @classmethod
    def from_restapi(cls, restapi: RestApi) -> AccessPolicy:
        auth = restapi.authentication
        return cls(
            username=auth.username if auth else None,
            password=(auth.password or "") if auth else None,
            allowlist=tuple(restapi.allowlist),
            include_members=restapi.allowlist_include_members,
            verify_client=restapi.verify_client,
        )

    @property
    def restricted(self) -> bool:
        return bool(self.allowlist) or self.include_members


def basic_credentials_match(header: str | None, username: str, password: str,
                            compare: Compare = hmac.compare_digest) -> bool:
    """True when an ``Authorization: Basic`` header carries exactly these credentials.

    Both the user name and the password are always compared (constant time, no short cut), so
    the answer time does not tell which of the two was wrong.
    """
    given_user, given_password = b"", b""
    well_formed = False
    if header and header[:6].lower() == "basic ":
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True)
        except (binascii.Error, ValueError):
            decoded = b""
        if b":" in decoded:
            given_user, _, given_password = decoded.partition(b":")
            well_formed = True
    user_ok = compare(given_user, username.encode())
    password_ok = compare(given_password, password.encode())
    return well_formed and user_ok and password_ok


def _resolve(host: str) -> set[str]:
    try:
        return {str(info[4][0]) for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)}
    except (OSError, UnicodeError):
        return set()


def _matches(address: ipaddress.IPv4Address | ipaddress.IPv6Address, entry: str,
             resolve: Callable[[str], set[str]]) -> bool:
    try:
        return address in ipaddress.ip_network(entry, strict=False)
    except ValueError:
        pass
    for found in resolve(entry):
        try:
            if ipaddress.ip_address(found.split("%", 1)[0]) == address:
                return True
        except ValueError:
            continue
    return False


def client_allowed(remote_addr: str | None, allowlist: Iterable[str], member_urls: Iterable[str] = (),
                   resolve: Callable[[str], set[str]] = _resolve) -> bool:
    """Is the client address in the allowlist (IPs, CIDRs, host names) or one of the members' hosts?"""
    if not remote_addr:
        return False
    try:
        address = ipaddress.ip_address(remote_addr)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    hosts = list(allowlist)
    for url in member_urls:
        host = urlsplit(url if "://" in url else f"//{url}").hostname
        if host:
            hosts.append(host)
    return any(_matches(address, entry, resolve) for entry in hosts)


PEERCERT = "appliance.peercert"  # set by api/httpd.py under TLS: the verified client certificate


def has_client_certificate(environ: Mapping[str, Any]) -> bool:
    """True when the TLS peer presented a certificate the server verified."""
    return bool(environ.get(PEERCERT))


def access_problem(policy: AccessPolicy, remote_addr: str | None, environ: Mapping[str, Any],
                   authorization: str | None, member_urls: MemberUrls,
                   compare: Compare = hmac.compare_digest) -> Response | None:
    """The 403/401 answer for an unsafe request that fails the checks, in Patroni's order; else None."""
    if policy.restricted:
        members = list(member_urls()) if policy.include_members else []
        if not client_allowed(remote_addr, policy.allowlist, members):
            return _denied(403, "Access is denied")
    if policy.verify_client in ("optional", "required") and not has_client_certificate(environ):
        return _denied(403, "client certificate required")
    if policy.username is not None and not basic_credentials_match(
            authorization, policy.username, policy.password or "", compare):
        return _denied(401, "not authenticated: send HTTP Basic credentials (restapi.authentication)",
                       {"WWW-Authenticate": REALM})
    return None


def _denied(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps({"error": message, "field": None}), status=status, mimetype="application/json",
                    headers=headers)


PolicySource = Callable[[], AccessPolicy]


def install(app: Flask, policy: AccessPolicy | PolicySource, member_urls: MemberUrls) -> None:
    """Guard every unsafe method of ``app``; GET/HEAD/OPTIONS (health and status) stay open.
    ``policy`` may be a callable giving the current policy (credentials rotated in place)."""
    current: PolicySource = policy if callable(policy) else (lambda: policy)

    @app.before_request
    def _check_access() -> Response | None:
        if request.method not in UNSAFE_METHODS:
            return None
        policy = current()
        if request.path == "/failsafe":  # as in Patroni: the allowlist does not apply, credentials do
            policy = dataclasses.replace(policy, allowlist=(), include_members=False)
        return access_problem(policy, request.remote_addr, request.environ,
                              request.headers.get("Authorization"), member_urls)
