"""Serve the API with gunicorn in-process: one worker with threads (the state lives in a file), HTTPS optional."""

from __future__ import annotations

import json
import os
import ssl
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from gunicorn.app.base import BaseApplication

from appliance.api.app import create_app
from appliance.config.schema import RestApi
from appliance.core.model import ClusterView, Failover, Member
from appliance.dcs.base import DCS

PROBE_TIMEOUT = 2.0  # Patroni's healthiest-node probe timeout
EXIT_CONFIG = 2
_CERT_REQS = {None: ssl.CERT_NONE, "none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL,
              "required": ssl.CERT_REQUIRED}


class _Gunicorn(BaseApplication):
    def __init__(self, app: Any, options: dict[str, Any]) -> None:
        self._app = app
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return self._app


class LazyDCS:
    """The API's DCS client, built on first use in the process that uses it: gunicorn forks its
    worker after the app is loaded, and a gRPC channel must not cross a fork. It never takes a lease."""

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


def http_probe(member: Member, timeout: float = PROBE_TIMEOUT) -> dict[str, Any]:
    """GET a member's /patroni (a 503 answer still carries the document)."""
    context = None
    if member.api_url.startswith("https://"):
        # Only a status document is read; peers' certificates may come from a private CA.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(member.api_url, timeout=timeout, context=context) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        raw = exc.read()
    doc = json.loads(raw or b"{}")
    if not isinstance(doc, dict):
        raise ValueError("its /patroni answer is not a JSON object")
    return doc


def tls_problems(restapi: RestApi) -> list[str]:
    """Files named by restapi.certfile/keyfile/cafile that cannot be read."""
    problems = []
    for key in ("certfile", "keyfile", "cafile"):
        path = getattr(restapi, key)
        if path and not os.access(path, os.R_OK):
            problems.append(f"restapi.{key}: cannot read {path}")
    return problems


def gunicorn_options(restapi: RestApi) -> dict[str, Any]:
    """gunicorn settings for restapi: bind, one threaded worker, and HTTPS when certfile is set."""
    options: dict[str, Any] = {
        "bind": restapi.listen,
        "workers": 1,
        "threads": 8,
        "worker_class": "gthread",
        "timeout": 30,
        "graceful_timeout": 5,
        "keepalive": 5,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
    }
    if restapi.certfile:
        options["certfile"] = restapi.certfile
        if restapi.keyfile:
            options["keyfile"] = restapi.keyfile
        if restapi.cafile:
            options["ca_certs"] = restapi.cafile
        options["cert_reqs"] = _CERT_REQS[restapi.verify_client]
    return options


def serve(config_path: str) -> None:
    """Load the node's configuration and serve the API on restapi.listen until stopped."""
    from appliance.config.layering import resolve
    from appliance.dcs.etcd import EtcdDCS
    from appliance.manager.settings import load_node_config

    layers, local = load_node_config(config_path)
    problems = tls_problems(local.restapi)
    if problems:
        print("configuration error: " + "; ".join(problems), file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    dynamic = resolve(layers, None).dynamic

    def etcd() -> DCS:
        return EtcdDCS(hosts=list(local.etcd3.hosts), scope=local.scope, namespace=local.namespace,
                       name=local.name, ttl=dynamic.ttl, retry_timeout=dynamic.retry_timeout,
                       username=local.etcd3.username, password=local.etcd3.password)

    app = create_app(local.appliance.run_dir, dcs=LazyDCS(etcd), local=local, probe=http_probe)
    _Gunicorn(app, gunicorn_options(local.restapi)).run()
