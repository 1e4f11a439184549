"""appliance.api.httpd on real loopback sockets: slow and hostile clients never delay the health checks."""

from __future__ import annotations

import datetime
import http.client
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs
from wsgiref.types import StartResponse, WSGIEnvironment

import h11
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from appliance.api.httpd import Limits, Server

pytestmark = pytest.mark.integration

Address = tuple[str, int]


class App:
    """A tiny WSGI app: a fast /health, a /slow that waits, /echo, /boom, /cert."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = 0
        self._lock = threading.Lock()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ["PATH_INFO"]
        if path == "/health":
            return _json(start_response, {"ok": True})
        if path == "/slow":
            with self._lock:
                self.entered += 1
            seconds = float(parse_qs(environ["QUERY_STRING"]).get("s", ["20"])[0])
            self.release.wait(seconds)
            return _json(start_response, {"slept": True})
        if path == "/boom":
            raise RuntimeError("boom: internal detail")
        if path == "/bad-header":
            start_response("200 OK", [("X-Bad", "a\r\nInjected: yes")])
            return [b"x"]
        if path == "/big":
            start_response("200 OK", [("Content-Type", "application/octet-stream")])
            return [b"z" * (15 * 1024 * 1024)]
        if path == "/cert":
            cert = environ.get("appliance.peercert")
            return _json(start_response, {"scheme": environ["wsgi.url_scheme"], "peercert": bool(cert),
                                          "subject": repr(cert.get("subject")) if cert else None})
        body = environ["wsgi.input"].read()
        return _json(start_response, {"method": environ["REQUEST_METHOD"], "path": path, "length": len(body),
                                      "query": environ["QUERY_STRING"], "protocol": environ["SERVER_PROTOCOL"]})

    def wait_entered(self, count: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while self.entered < count:
            assert time.monotonic() < deadline, f"only {self.entered} of {count} requests reached the app"
            time.sleep(0.01)


def _json(start_response: StartResponse, doc: Any, status: str = "200 OK") -> list[bytes]:
    start_response(status, [("Content-Type", "application/json")])
    return [json.dumps(doc).encode()]


def lane(method: str, path: str) -> str:
    return "control" if method == "POST" else "health"


@contextmanager
def running(limits: Limits, ssl_context: ssl.SSLContext | None = None) -> Iterator[tuple[Server, App]]:
    app = App()
    server = Server(app, ssl_context=ssl_context, limits=limits, lane=lane).start()
    try:
        yield server, app
    finally:
        app.release.set()
        server.close()


def request(address: Address, path: str, method: str = "GET", body: bytes | None = None, timeout: float = 10,
            context: ssl.SSLContext | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection."""
    if context is None:
        conn: http.client.HTTPConnection = http.client.HTTPConnection(*address, timeout=timeout)
    else:
        conn = http.client.HTTPSConnection(*address, timeout=timeout, context=context)
    try:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


class Raw:
    """A raw socket with an h11 client parser for the answers (the requests are written by hand)."""

    def __init__(self, address: Address, source: str | None = None, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(address, timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.parser = h11.Connection(h11.CLIENT)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self, method: bytes = b"GET") -> tuple[int, dict[str, str], bytes]:
        """Read the next answer (a 1xx answer is returned alone)."""
        if self.parser.our_state is h11.DONE and self.parser.their_state is h11.DONE:
            self.parser.start_next_cycle()
        if self.parser.our_state is h11.IDLE:
            self.parser.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
            self.parser.send(h11.EndOfMessage())
        status, headers, body = 0, {}, b""
        while True:
            event = self.parser.next_event()
            if event is h11.NEED_DATA:
                self.parser.receive_data(self.sock.recv(65536))
            elif isinstance(event, h11.InformationalResponse):
                return event.status_code, {}, b""
            elif isinstance(event, h11.Response):
                status = event.status_code
                headers = {k.decode(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return status, headers, body

    def closed_within(self, seconds: float) -> bool:
        """True when the server closes the connection (EOF or reset) within seconds, any data dropped."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                if not self.sock.recv(65536):
                    return True
            except TimeoutError:
                return False
            except OSError:
                return True
        return False

    def close(self) -> None:
        self.sock.close()


def _error(body: bytes) -> str:
    doc = json.loads(body)
    assert doc["field"] is None
    return str(doc["error"])


def _healthy_fast(address: Address, context: ssl.SSLContext | None = None) -> float:
    started = time.monotonic()
    status, _, _ = request(address, "/health", context=context)
    elapsed = time.monotonic() - started
    assert status == 200
    assert elapsed < 0.2, f"/health took {elapsed * 1000:.0f} ms"
    return elapsed


# (a) ----------------------------------------------------------------------------------------------

def test_health_stays_fast_under_slowloris_slow_control_and_stalled_bodies() -> None:
    with running(Limits(max_per_client=256)) as (server, app):
        stop = threading.Event()
        loris = [Raw(server.address) for _ in range(64)]
        for sock in loris:
            sock.send(b"GET / HTTP/1.1\r\n")

        def trickle() -> None:
            n = 0
            while not stop.wait(3.0):
                n += 1
                for sock in loris:
                    with suppress(OSError):
                        sock.send(f"X-Trickle-{n}: 1\r\n".encode())

        threads = [threading.Thread(target=trickle, daemon=True)]
        threads += [threading.Thread(target=request, args=(server.address, "/slow", "POST", b"{}", 30), daemon=True)
                    for _ in range(8)]
        for thread in threads:
            thread.start()
        app.wait_entered(8)  # the control lane's 8 threads are all taken
        stalled = [Raw(server.address) for _ in range(4)]
        for sock in stalled:
            sock.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n123456789")

        latencies = []
        for _ in range(200):
            started = time.monotonic()
            status, _, _ = request(server.address, "/health")
            latencies.append(time.monotonic() - started)
            assert status == 200
            time.sleep(0.015)  # spread over > 3 s: the slowloris sockets trickle meanwhile
        latencies.sort()
        p99 = latencies[int(len(latencies) * 0.99) - 1]
        print(f"\n/health under attack: p50 {latencies[99] * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms, "
              f"max {latencies[-1] * 1000:.2f} ms")
        assert p99 < 0.2
        assert app.entered == 8  # the slow requests were still holding their lane throughout
        stop.set()
        app.release.set()
        for sock in loris + stalled:
            sock.close()
        for thread in threads:
            thread.join(10)


# (b) ----------------------------------------------------------------------------------------------

def test_slowloris_gets_408_after_the_total_header_timeout() -> None:
    with running(Limits(header_timeout=1.0)) as (server, _):
        sock = Raw(server.address)
        started = time.monotonic()
        sock.send(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        received = b""
        sock.sock.settimeout(0.25)
        for n in range(40):
            with suppress(OSError):
                sock.send(f"X-Keep-{n}: trickling\r\n".encode())
            try:
                chunk = sock.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            received += chunk
        elapsed = time.monotonic() - started
        assert received.startswith(b"HTTP/1.1 408 "), received
        assert b'"field": null' in received
        assert 0.9 <= elapsed < 3.0
        sock.close()
        _healthy_fast(server.address)


def test_stalled_body_gets_408_after_the_total_body_timeout() -> None:
    with running(Limits(body_timeout=0.5)) as (server, _):
        sock = Raw(server.address)
        started = time.monotonic()
        sock.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n123456789")
        for _ in range(3):
            time.sleep(0.2)
            sock.send(b"0")  # still trickling: the deadline is for the whole body
        status, _, body = sock.response(b"POST")
        assert status == 408 and "body" in _error(body)
        assert 0.45 <= time.monotonic() - started < 2.0
        sock.close()


# (c) ----------------------------------------------------------------------------------------------

def test_oversized_bodies_get_413_before_they_are_read() -> None:
    with running(Limits(max_body_bytes=64 * 1024)) as (server, _):
        sock = Raw(server.address)
        started = time.monotonic()
        sock.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10485760\r\n\r\n")
        status, headers, body = sock.response(b"POST")
        assert status == 413 and time.monotonic() - started < 0.5
        assert headers["content-type"] == "application/json"
        assert "10485760" in _error(body)
        sock.close()

        sock = Raw(server.address)
        sock.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10485760\r\nExpect: 100-continue\r\n\r\n")
        assert sock.response(b"POST")[0] == 413  # not 100: the body is never asked for
        sock.close()

        sock = Raw(server.address)
        sock.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n")
        assert sock.response(b"POST")[0] == 100
        sock.send(b"0123456789")
        status, _, body = sock.response(b"POST")
        assert status == 200 and json.loads(body)["length"] == 10
        sock.close()

        sock = Raw(server.address)
        sock.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"a" * 32 * 1024
        for _ in range(3):
            sock.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        sock.send(b"0\r\n\r\n")
        status, _, body = sock.response(b"POST")
        assert status == 413 and "exceeds 65536 bytes" in _error(body)
        sock.close()

        sock = Raw(server.address)
        sock.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        status, _, body = sock.response(b"POST")
        assert status == 200 and json.loads(body)["length"] == 5
        sock.close()


# (d) ----------------------------------------------------------------------------------------------

def test_oversized_headers_get_431() -> None:
    with running(Limits()) as (server, _):
        big = b"X-Big: " + b"a" * 20 * 1024 + b"\r\n"
        sock = Raw(server.address)
        sock.send(b"GET /health HTTP/1.1\r\nHost: x\r\n" + big + b"\r\n")  # complete, in one piece
        status, _, body = sock.response()
        assert status == 431 and _error(body)
        sock.close()

        sock = Raw(server.address)
        sock.send(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        with suppress(OSError):
            for _ in range(20):  # never complete, in pieces
                sock.send(b"X-Piece: " + b"b" * 1024 + b"\r\n")
                time.sleep(0.005)
        assert sock.response()[0] == 431
        sock.close()
        status, _, _ = request(server.address, "/health")
        assert status == 200


def test_malformed_request_gets_400_without_echoing_it(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="appliance.api.httpd")
    with running(Limits()) as (server, _):
        sock = Raw(server.address)
        sock.send(b"GET /health HTTP/1.1\r\nHost: x\r\nAuthorization Basic c2VjcmV0\r\n\r\n")
        status, _, body = sock.response()
        assert status == 400 and _error(body) == "malformed request: illegal header line"
        sock.close()
    assert not any("c2VjcmV0" in r.getMessage() for r in caplog.records)


# (e) ----------------------------------------------------------------------------------------------

def test_connection_limits_per_client_and_in_total() -> None:
    try:
        probe = socket.create_connection(("127.0.0.1", 9), timeout=0.1, source_address=("127.0.0.2", 0))
        probe.close()
    except ConnectionRefusedError:
        pass
    except OSError:
        pytest.skip("cannot bind 127.0.0.2 as a source address")
    with running(Limits(max_connections=40, idle_timeout=30)) as (server, _):
        held = []
        for source in ["127.0.0.1"] * 32 + ["127.0.0.2"] * 8:
            sock = Raw(server.address, source)
            sock.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.response()[0] == 200  # admitted, and stays open (keep-alive)
            held.append(sock)
        extra = Raw(server.address, "127.0.0.2")
        assert extra.closed_within(1.0), "a 41st connection was kept (max_connections 40)"
        extra.close()
        held.pop().close()  # one 127.0.0.2 slot free again: total 39

        same = Raw(server.address, "127.0.0.1")
        assert same.closed_within(1.0), "a 33rd connection from one client was kept (max_per_client 32)"
        same.close()
        other = Raw(server.address, "127.0.0.3")
        other.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert other.response()[0] == 200
        other.close()

        held.pop(0).close()
        time.sleep(0.2)
        again = Raw(server.address, "127.0.0.1")
        again.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert again.response()[0] == 200
        again.close()
        for sock in held:
            sock.close()


# (f) ----------------------------------------------------------------------------------------------

def test_keep_alive_pipelining_head_and_http10() -> None:
    with running(Limits()) as (server, _):
        conn = http.client.HTTPConnection(*server.address, timeout=5)
        conn.request("GET", "/echo?n=1")
        first = conn.getresponse()
        assert first.status == 200 and json.loads(first.read())["query"] == "n=1"
        sock_before = conn.sock
        conn.request("HEAD", "/echo?n=2")
        head = conn.getresponse()
        assert head.status == 200 and head.read() == b"" and int(head.getheader("Content-Length") or 0) > 0
        conn.request("POST", "/echo/%7Euser%20x", body=b"abc")
        second = conn.getresponse()
        assert json.loads(second.read()) == {"method": "POST", "path": "/echo/~user x", "length": 3,
                                             "query": "", "protocol": "HTTP/1.1"}
        assert conn.sock is sock_before  # one connection for all three
        conn.close()

        sock = Raw(server.address)
        sock.send(b"GET /echo?n=1 HTTP/1.1\r\nHost: x\r\n\r\nHEAD /echo?n=2 HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /echo?n=3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert json.loads(sock.response()[2])["query"] == "n=1"
        status, headers, body = sock.response(b"HEAD")
        assert status == 200 and body == b"" and int(headers["content-length"]) > 0
        status, headers, body = sock.response()
        assert json.loads(body)["query"] == "n=3" and headers["connection"] == "close"
        assert sock.closed_within(1.0)
        sock.close()

        sock = Raw(server.address)
        sock.send(b"GET /echo HTTP/1.0\r\n\r\n")
        status, _, body = sock.response()
        assert status == 200 and json.loads(body)["protocol"] == "HTTP/1.0"
        assert sock.closed_within(1.0)
        sock.close()


def test_idle_keep_alive_and_request_count_limits() -> None:
    with running(Limits(idle_timeout=0.5, max_requests_per_connection=2)) as (server, _):
        sock = Raw(server.address)
        sock.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.response()[0] == 200
        started = time.monotonic()
        assert sock.closed_within(2.0)
        assert 0.4 <= time.monotonic() - started < 1.5
        sock.close()

        sock = Raw(server.address)
        sock.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * 2)
        assert "connection" not in sock.response()[1]
        assert sock.response()[1]["connection"] == "close"
        assert sock.closed_within(1.0)
        sock.close()


def test_a_client_that_does_not_read_its_answer_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="appliance.api.httpd")
    with running(Limits(write_timeout=0.5)) as (server, _):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(server.address)
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        deadline = time.monotonic() + 5
        while not any("answer not read" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "the server kept a client that does not read"
            time.sleep(0.05)
        _healthy_fast(server.address)
        sock.close()


# (g) ----------------------------------------------------------------------------------------------

def test_full_control_lane_gets_503_while_health_stays_fast() -> None:
    limits = Limits(pools={"health": 2, "control": 1}, queue_bound=2)
    with running(limits) as (server, app):
        results: list[int] = []
        threads = [threading.Thread(target=lambda: results.append(request(server.address, "/slow?s=10", "POST",
                                                                          b"{}")[0]), daemon=True)
                   for _ in range(3)]
        for thread in threads:
            thread.start()
        app.wait_entered(1)
        time.sleep(0.3)  # the other two are queued by now
        status, headers, body = request(server.address, "/slow", "POST", b"{}")
        assert status == 503 and headers["content-type"] == "application/json"
        assert _error(body) == "server busy: 2 requests waiting"
        _healthy_fast(server.address)
        app.release.set()
        for thread in threads:
            thread.join(10)
        assert results == [200, 200, 200]


# (h) ----------------------------------------------------------------------------------------------

def test_application_errors_get_500_without_the_traceback(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="appliance.api.httpd")
    with running(Limits()) as (server, _):
        status, headers, body = request(server.address, "/boom")
        assert status == 500 and headers["content-type"] == "application/json"
        assert _error(body) == "internal server error" and b"boom" not in body
        assert any("boom: internal detail" in (r.exc_text or "") for r in caplog.records)
        status, _, body = request(server.address, "/bad-header")
        assert status == 500 and b"Injected" not in body
        _healthy_fast(server.address)


# (i) ----------------------------------------------------------------------------------------------

def _certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None,
                 issuer_key: ec.EllipticCurvePrivateKey | None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (x509.CertificateBuilder().subject_name(name)
               .issuer_name(issuer.subject if issuer else name).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True))
    if issuer is None:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
            decipher_only=False), critical=True)
    else:
        import ipaddress
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[str, str]:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return str(path.with_suffix(".crt")), str(path.with_suffix(".key"))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, str]]:
    base = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("test ca", ca_key, None, None)
    files = {"ca": _write(base / "ca", ca, ca_key)}
    for who in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        files[who] = _write(base / who, _certificate(who, key, ca, ca_key), key)
    return files


def test_tls_serving_handshake_timeout_and_client_certificates(pki: dict[str, tuple[str, str]]) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*pki["server"])
    context.load_verify_locations(pki["ca"][0])
    context.verify_mode = ssl.CERT_OPTIONAL
    client = ssl.create_default_context(cafile=pki["ca"][0])
    with running(Limits(handshake_timeout=1.0), ssl_context=context) as (server, _):
        status, _, body = request(server.address, "/cert", context=client)
        assert status == 200 and json.loads(body) == {"scheme": "https", "peercert": False, "subject": None}

        mute = Raw(server.address)  # connects and never sends a ClientHello
        started = time.monotonic()
        for _ in range(5):
            _healthy_fast(server.address, client)
        assert mute.closed_within(3.0), "a TLS client without a ClientHello was kept"
        assert 0.9 <= time.monotonic() - started < 3.0
        mute.close()

        with_cert = ssl.create_default_context(cafile=pki["ca"][0])
        with_cert.load_cert_chain(*pki["client"])
        status, _, body = request(server.address, "/cert", context=with_cert)
        doc = json.loads(body)
        assert status == 200 and doc["peercert"] is True and "client" in doc["subject"]


# (j) ----------------------------------------------------------------------------------------------

def test_stop_returns_promptly_with_idle_keep_alive_and_finishes_in_flight() -> None:
    app = App()
    server = Server(app, limits=Limits(idle_timeout=30), lane=lane).start()
    idle = []
    for _ in range(3):
        sock = Raw(server.address)
        sock.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.response()[0] == 200
        idle.append(sock)
    in_flight: list[tuple[int, dict[str, str], bytes]] = []
    thread = threading.Thread(target=lambda: in_flight.append(request(server.address, "/slow?s=1", "POST", b"")))
    thread.start()
    app.wait_entered(1)
    started = time.monotonic()
    server.close()
    elapsed = time.monotonic() - started
    assert elapsed < 3.0, f"serve took {elapsed:.1f} s to return"
    thread.join(5)
    assert in_flight and in_flight[0][0] == 200 and in_flight[0][1]["connection"] == "close"
    for sock in idle:
        assert sock.closed_within(0.5)
        sock.close()
    with pytest.raises(OSError):
        socket.create_connection(server.address, timeout=1).close()
