"""The one HTTP client: the CLI's REST calls and the appliance's own requests send and read the same way."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from appliance.cli.ctl.rest import call
from appliance.cli.ctl.target import CtlError, Target
from appliance.net.http import Client, request

SEEN: list[tuple[str, str, str | None, bytes]] = []


class _Echo(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        SEEN.append((self.command, self.path, self.headers.get("Authorization"), body))
        status = 503 if self.path == "/down" else 200
        payload = json.dumps({"message": "down" if status == 503 else "ok"}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _answer

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    SEEN.clear()
    httpd = HTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize(("path", "body", "status"), [("/ok", None, 200), ("/ok", {"a": 1}, 200), ("/down", None, 503)])
def test_cli_and_appliance_requests_are_the_same_request(server: str, path: str, body: object, status: int) -> None:
    method = "GET" if body is None else "POST"
    answer = request(server + path, Client(username="admin", password="pw"), method=method, body=body)
    reply = call(Target(username="admin", password="pw"), method, server + path, body=body)
    assert answer.status == reply.status == status
    assert answer.json() == reply.body
    assert SEEN[0] == SEEN[1]
    assert SEEN[0][2] == "Basic YWRtaW46cHc="  # admin:pw


def test_unreachable_is_oserror_for_the_appliance_and_one_line_for_the_cli() -> None:
    with pytest.raises(OSError):
        request("http://127.0.0.1:1/patroni", timeout=1)
    with pytest.raises(CtlError, match="cannot reach the REST API"):
        call(Target(), "GET", "http://127.0.0.1:1/patroni", timeout=1)
