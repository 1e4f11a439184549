"""The CLI's REST calls (through net/http, the one HTTP client): replies, one-line errors for 401/403/unreachable."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from appliance.cli.ctl.target import CtlError, Target
from appliance.net.http import Client, request

DEFAULT_TIMEOUT = 10.0


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status, the raw text, and the JSON body when there is one."""

    status: int
    text: str
    body: Any = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def message(self) -> str:
        """What the server said, in one line (Patroni answers text; our API may answer {"error": ...})."""
        if isinstance(self.body, dict):
            for key in ("message", "error", "reason"):
                said = self.body.get(key)
                if isinstance(said, str):
                    field = self.body.get("field")
                    return said + (f" (field {field})" if isinstance(field, str) and field else "")
        if isinstance(self.body, str):
            return self.body.strip()
        return " ".join(self.text.split())


def api_base(api_url: str) -> str:
    """A member's api_url (http://host:8008/patroni) as the API's base URL."""
    url = api_url.rstrip("/")
    return url[: -len("/patroni")] if url.endswith("/patroni") else url


def client_of(target: Target) -> Client:
    """The HTTP client for ``target``: its CA (or --insecure) and its Basic credentials."""
    return Client(cafile=target.cafile, username=target.username, password=target.password,
                  insecure=target.insecure)


def call(target: Target, method: str, url: str, body: Any = None, timeout: float = DEFAULT_TIMEOUT,
         auth_errors: bool = True) -> Reply:
    """One request. Raises CtlError when the API cannot be reached or refuses the credentials."""
    try:
        answer = request(url, client_of(target), method=method, body=body, timeout=timeout)
        reply = _reply(answer.status, answer.body)
    except OSError as exc:
        reason = getattr(exc, "reason", exc)
        raise CtlError(f"cannot reach the REST API at {url}: {reason}; is the node's api program running?") from None
    if auth_errors and reply.status == 401:
        raise CtlError(f"the REST API at {url} refused the credentials (401 {reply.message}): pass --username and "
                       "--password (APPLIANCE_API_USERNAME/APPLIANCE_API_PASSWORD) or use the node's config")
    if auth_errors and reply.status == 403:
        raise CtlError(f"the REST API at {url} denied access (403 {reply.message}): "
                       "check restapi.allowlist / client certificates")
    return reply


def _reply(status: int, raw: bytes) -> Reply:
    text = raw.decode("utf-8", "replace")
    try:
        body = json.loads(text) if text.strip() else None
    except ValueError:
        body = None
    return Reply(status, text, body)


def get_json(target: Target, url: str, timeout: float = DEFAULT_TIMEOUT) -> Any:
    reply = call(target, "GET", url, timeout=timeout)
    if not reply.ok:
        raise CtlError(f"GET {url} answered {reply.status}: {reply.message}")
    return reply.body
