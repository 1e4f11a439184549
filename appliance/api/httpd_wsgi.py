"""WSGI glue for appliance.api.httpd: the PEP 3333 environ of a buffered h11 request, running the app in
a worker thread (collecting its whole answer), and turning that answer into h11 events.

Nothing here touches a socket: the event loop in httpd.py owns the connection; this module is the part
that runs in the lanes' threads, plus the server's own small JSON error answers.
"""

from __future__ import annotations

import email.utils
import io
import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit
from wsgiref.types import WSGIApplication, WSGIEnvironment

import h11

# Framing is the server's business: the buffered body gets an exact Content-Length.
_FRAMING = frozenset({b"content-length", b"transfer-encoding"})
# Request headers the environ does not carry as HTTP_*: CONTENT_* have their own keys, and the body has
# been de-chunked already.
_NOT_HTTP = frozenset({"content-type", "content-length", "transfer-encoding"})
_NO_BODY_STATUSES = frozenset({204, 304})


@dataclass(frozen=True)
class Peer:
    """Both ends of a connection, and what TLS said about the client."""

    remote: tuple[str, int]
    local: tuple[str, int]
    tls: bool = False
    peercert: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Reply:
    """A complete answer: status, headers (bytes, as h11 takes them) and the whole body."""

    status: int
    reason: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes


class ResponseTooLarge(Exception):
    """The application's answer exceeds Limits.max_response_bytes."""


def split_target(target: bytes) -> tuple[str, str]:
    """PATH_INFO (percent-decoded, latin-1 as PEP 3333 says) and QUERY_STRING of a request target."""
    if target[:1] != b"/" and b"://" in target:
        parts = urlsplit(target)  # absolute-form (RFC 9112 3.2.2)
        path, query = parts.path or b"/", parts.query
    else:
        path, _, query = target.partition(b"?")
    return unquote_to_bytes(path).decode("latin-1"), query.decode("latin-1")


def build_environ(request: h11.Request, body: bytes, peer: Peer) -> WSGIEnvironment:
    """The PEP 3333 environ of a fully received request."""
    path, query = split_target(request.target)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": request.method.decode("ascii"),
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": peer.local[0],
        "SERVER_PORT": str(peer.local[1]),
        "SERVER_PROTOCOL": "HTTP/" + request.http_version.decode("ascii"),
        "REMOTE_ADDR": peer.remote[0],
        "REMOTE_PORT": str(peer.remote[1]),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "https" if peer.tls else "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.input_terminated": True,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if peer.tls:
        environ["appliance.peercert"] = dict(peer.peercert or {})
    _add_headers(environ, request.headers, body)
    return environ


def _add_headers(environ: dict[str, Any], headers: Iterable[tuple[bytes, bytes]], body: bytes) -> None:
    declared_length = False
    for raw_name, raw_value in headers:
        name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
        if "_" in name:
            # X_Forwarded_For and X-Forwarded-For would map to the same key: never let one spoof the other.
            continue
        if name == "content-type":
            environ["CONTENT_TYPE"] = value
        declared_length = declared_length or name == "content-length"
        if name in _NOT_HTTP:
            continue
        key = "HTTP_" + name.upper().replace("-", "_")
        environ[key] = f"{environ[key]}, {value}" if key in environ else value
    if body or declared_length:
        environ["CONTENT_LENGTH"] = str(len(body))


class _Body:
    """The answer's bytes, capped."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.chunks: list[bytes] = []

    def write(self, chunk: bytes) -> None:
        if not isinstance(chunk, bytes | bytearray):
            raise TypeError(f"WSGI body chunks must be bytes, got {type(chunk).__name__}")
        self.size += len(chunk)
        if self.size > self.limit:
            raise ResponseTooLarge(f"the answer exceeds {self.limit} bytes")
        self.chunks.append(bytes(chunk))


def run_app(app: WSGIApplication, environ: WSGIEnvironment, max_response_bytes: int) -> Reply:
    """Call the app and consume its iterable (in the calling worker thread); close() it per PEP 3333."""
    started: list[tuple[str, list[tuple[str, str]]]] = []
    body = _Body(max_response_bytes)

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if started and exc_info is None:
            raise RuntimeError("start_response called twice without exc_info")
        # Nothing has been sent before the iterable is exhausted, so a later call may always replace.
        started[:] = [(status, headers)]
        return body.write

    result = app(environ, start_response)
    try:
        for chunk in result:
            if chunk:
                body.write(chunk)
    finally:
        close = getattr(result, "close", None)
        if callable(close):
            close()
    if not started:
        raise RuntimeError("the application returned without calling start_response")
    status, headers = started[0]
    return make_reply(status, headers, b"".join(body.chunks))


def make_reply(status: str, headers: list[tuple[str, str]], body: bytes) -> Reply:
    """A Reply from a WSGI status line and header list (h11 validates names and values later)."""
    code, _, reason = status.partition(" ")
    if len(code) != 3 or not code.isdigit() or int(code) < 200:
        raise ValueError(f"invalid WSGI status {status!r}")
    encoded = tuple((name.encode("latin-1"), value.encode("latin-1")) for name, value in headers)
    return Reply(int(code), reason.encode("latin-1"), encoded, body)


def error_reply(status: int, message: str) -> Reply:
    """The server's own error answer: ``{"error": message, "field": null}``."""
    body = json.dumps({"error": message, "field": None}).encode()
    return Reply(status, HTTPStatus(status).phrase.encode(), ((b"content-type", b"application/json"),), body)


def response_events(reply: Reply, *, head: bool, close: bool) -> list[h11.Event]:
    """h11 events for a Reply: exact Content-Length, no body for HEAD/204/304, Date, Connection: close."""
    headers = [(n, v) for n, v in reply.headers if n.lower() not in _FRAMING]
    declared = [v for n, v in reply.headers if n.lower() == b"content-length"]
    send_body = not head and reply.status not in _NO_BODY_STATUSES
    if send_body:
        headers.append((b"content-length", str(len(reply.body)).encode()))
    elif head and reply.status not in _NO_BODY_STATUSES:
        # A HEAD answer announces the length a GET would have.
        headers.append((b"content-length", declared[0] if declared else str(len(reply.body)).encode()))
    elif reply.status == 304 and declared:
        headers.append((b"content-length", declared[0]))
    if not any(n.lower() == b"date" for n, _ in headers):
        headers.append((b"date", email.utils.formatdate(usegmt=True).encode()))
    if close:
        headers.append((b"connection", b"close"))
    events: list[h11.Event] = [h11.Response(status_code=reply.status, headers=headers, reason=reply.reason)]
    if send_body and reply.body:
        events.append(h11.Data(data=reply.body))
    events.append(h11.EndOfMessage())
    return events
