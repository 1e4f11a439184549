"""Serve the API: the Flask app on the slow-client-proof server (api/httpd.py), HTTPS with reload."""

from __future__ import annotations

import os
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from appliance.api import httpd
from appliance.api.app import create_app
from appliance.api.auth import AccessPolicy
from appliance.api.health import classify
from appliance.config.schema import LocalConfig, RestApi
from appliance.core.model import ClusterView, Failover, Member
from appliance.dcs.base import DCS
from appliance.net.http import Client, client_for, request

PROBE_TIMEOUT = 2.0  # Patroni's healthiest-node probe timeout
EXIT_CONFIG = 2
_CERT_REQS = {None: ssl.CERT_NONE, "none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL,
              "required": ssl.CERT_REQUIRED}


class LazyDCS:
    """The API's DCS client, built on first use in the process that uses it (a gRPC channel must not
    cross a fork, and an API that never changes the cluster never connects). It never takes a lease."""

    def __init__(self, factory: Callable[[], DCS]) -> None:
        self._factory = factory
        self._dcs: DCS | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def _get(self) -> DCS:
        with self._lock:
            if self._dcs is None or self._pid != os.getpid():
                self._dcs, self._pid = self._factory(), os.getpid()
            return self._dcs

    def read(self) -> ClusterView:
        return self._get().read()

    def write_failover(self, failover: Failover, expected_revision: int | None) -> bool:
        return self._get().write_failover(failover, expected_revision)

    def clear_failover(self, expected_revision: int | None) -> bool:
        return self._get().clear_failover(expected_revision)

    def write_config(self, config: dict[str, Any], expected_revision: int | None) -> bool:
        return self._get().write_config(config, expected_revision)


def http_probe(member: Member, client: Client | None = None, timeout: float = PROBE_TIMEOUT) -> dict[str, Any]:
    """GET a member's /patroni (a 503 answer still carries the document), its certificate verified
    against the cluster CA: a candidate's answer decides a switchover."""
    doc = request(member.api_url, client, timeout=timeout, authenticate=False).json()
    if not isinstance(doc, dict):
        raise ValueError("its /patroni answer is not a JSON object")
    return doc


# Answered from the state file alone (fast, never the DCS): they share the health checks' lane.
_STATE_PATHS = frozenset({"/patroni", "/cluster", "/history", "/events", "/failsafe", "/metrics", "/openapi.json"})
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def api_lane(method: str, path: str) -> str:
    """Which thread pool serves a request: control requests (a switchover waits up to a minute) and
    DCS reads can never hold up the health checks HAProxy routes by."""
    if method in UNSAFE:
        return "control"
    if path in _STATE_PATHS or classify(path) is not None:
        return "health"
    return "read"


def split_address(listen: str) -> tuple[str, int]:
    """``0.0.0.0:8008`` / ``[::]:8008`` -> (host, port) for the listening socket."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


class ReloadingPolicy:
    """The access rules of restapi (allowlist, credentials, client certificates), re-read from the
    node's configuration when the file changes, so a rotated REST password takes effect without a
    restart (and without a moment of failing health checks). A bad file keeps the last good rules."""

    def __init__(self, config_path: str, local: LocalConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = config_path
        self.policy = AccessPolicy.from_restapi(local.restapi)
        self._clock = clock
        self._checked = clock()
        self._stamp = self._mtime()
        self._lock = threading.Lock()

    def _mtime(self) -> float | None:
        try:
            return os.stat(self.path).st_mtime
        except OSError:
            return None

    def __call__(self) -> AccessPolicy:
        with self._lock:
            if self._clock() - self._checked >= 2.0:
                self._checked = self._clock()
                stamp = self._mtime()
                if stamp != self._stamp:
                    self._reload(stamp)
            return self.policy

    def _reload(self, stamp: float | None) -> None:
        from appliance.config.errors import ConfigError
        from appliance.manager.settings import load_node_config

        try:
            _, local = load_node_config(self.path)
        except (ConfigError, OSError) as exc:
            print(f"WARNING: {self.path} changed but cannot be used, keeping the access rules: {exc}", file=sys.stderr)
            return
        self._stamp = stamp
        self.policy = AccessPolicy.from_restapi(local.restapi)
        print("REST API access rules reloaded", file=sys.stderr)


class ReloadingTls:
    """The API's server TLS context; a replaced certificate or key file (rotation) is loaded into the
    same context, so new connections get it without a restart."""

    def __init__(self, restapi: RestApi, clock: Callable[[], float] = time.monotonic) -> None:
        if not restapi.certfile:
            raise ValueError("restapi.certfile is not set")
        self.certfile, self.keyfile = restapi.certfile, restapi.keyfile
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.context.verify_mode = _CERT_REQS[restapi.verify_client]
        if restapi.cafile:
            self.context.load_verify_locations(restapi.cafile)
        self._clock = clock
        self._stamp = self._mtimes()
        self._checked = clock()
        self.context.load_cert_chain(self.certfile, self.keyfile)

    def _mtimes(self) -> tuple[float, ...]:
        return tuple(os.stat(p).st_mtime for p in (self.certfile, self.keyfile) if p)

    def check(self) -> bool:
        """Reload when the files changed (checked at most every 5 s); True when it reloaded."""
        if self._clock() - self._checked < 5.0:
            return False
        self._checked = self._clock()
        try:
            stamp = self._mtimes()
            if stamp == self._stamp:
                return False
            self.context.load_cert_chain(self.certfile, self.keyfile)
        except (OSError, ssl.SSLError) as exc:  # half-written pair: keep serving the old one
            print(f"WARNING: cannot load the new REST API certificate yet: {exc}", file=sys.stderr)
            return False
        self._stamp = stamp
        print("REST API certificate reloaded", file=sys.stderr)
        return True


def serve(config_path: str, listen_fd: int | None = None) -> None:
    """Load the node's configuration and serve the API on restapi.listen until stopped."""
    from appliance.config import resolve
    from appliance.config.errors import ConfigError
    from appliance.dcs.factory import etcd_from_config
    from appliance.manager.settings import check_security, load_node_config

    layers, local = load_node_config(config_path)
    try:
        insecure = check_security(layers, local)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    for warning in insecure:
        print(f"WARNING: {warning}", file=sys.stderr)
    dynamic = resolve(layers, None).dynamic

    def etcd() -> DCS:
        return etcd_from_config(local, name=local.name, ttl=dynamic.ttl, retry_timeout=dynamic.retry_timeout)

    client = client_for(local)
    from appliance.fence.daemon import writable_sight
    from appliance.postgres.validate import check_dynamic

    app = create_app(local.appliance.run_dir, dcs=LazyDCS(etcd), local=local,
                     probe=lambda member: http_probe(member, client), policy=ReloadingPolicy(config_path, local),
                     check_config=lambda doc, source: check_dynamic(doc, local, source),
                     pg_writable=lambda: writable_sight(local.postgresql.data_dir))
    tls = ReloadingTls(local.restapi) if local.restapi.certfile else None
    host, port = split_address(local.restapi.listen)

    def lane(method: str, path: str) -> str:
        if tls is not None:
            tls.check()
        return api_lane(method, path)

    sock = None
    if listen_fd is not None:
        sock = socket.socket(fileno=listen_fd)
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) != 1:
            print(f"configuration error: file descriptor {listen_fd} is not a listening socket", file=sys.stderr)
            sys.exit(EXIT_CONFIG)
    httpd.serve(app, host, port, ssl_context=tls.context if tls else None, lane=lane, sock=sock)
