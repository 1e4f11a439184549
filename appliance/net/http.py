"""The one HTTP client of the appliance: TLS against the cluster CA, Basic auth, JSON bodies.

Peers' /patroni, the CLI's REST calls, the runtime's health waits and the tests all go through
``request()``; a node's certificate is verified against the cluster CA (``tls.ca_file``), never
skipped silently.
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from appliance.config.schema import LocalConfig

DEFAULT_TIMEOUT = 5.0


@dataclass(frozen=True)
class Client:
    """How to reach REST APIs: the CA to trust, a client certificate, Basic credentials."""

    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    insecure: bool = False  # do not verify the server's certificate (explicit, for --insecure)

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.cafile)
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.certfile:
            context.load_cert_chain(self.certfile, self.keyfile)
        return context

    def with_auth(self, username: str | None, password: str | None) -> Client:
        return Client(self.cafile, self.certfile, self.keyfile, username, password, self.insecure)


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        """The body as JSON; None when it is empty or not JSON."""
        try:
            return json.loads(self.body) if self.body.strip() else None
        except ValueError:
            return None


def request(url: str, client: Client | None = None, *, method: str = "GET", body: Any = None,
            timeout: float = DEFAULT_TIMEOUT, authenticate: bool = True) -> Answer:
    """One request; any HTTP status is an Answer (a 503 health answer carries a body too).
    Raises OSError (urllib.error.URLError included) when the server cannot be reached."""
    client = client or Client()
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if authenticate and client.username is not None:
        token = base64.b64encode(f"{client.username}:{client.password or ''}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    context = client.context() if url.startswith("https://") else None
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as response:
            return Answer(response.status, response.read(), dict(response.headers.items()))
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, exc.read(), dict(exc.headers.items()) if exc.headers else {})


def get_json(url: str, client: Client | None = None, timeout: float = DEFAULT_TIMEOUT) -> Any:
    """GET and parse; None for a non-JSON body. Raises OSError when unreachable."""
    return request(url, client, timeout=timeout).json()


def client_for(local: LocalConfig) -> Client:
    """The client a node's own programs use (a LocalConfig): trust ctl.cacert (default tls.ca_file),
    present the node certificate, authenticate as restapi.authentication."""
    auth = local.ctl.authentication or local.restapi.authentication
    return Client(cafile=local.ctl.cacert, certfile=local.ctl.certfile or local.tls.cert_file,
                  keyfile=local.ctl.keyfile or local.tls.key_file, username=auth.username if auth else None,
                  password=auth.password if auth else None, insecure=local.ctl.insecure)
