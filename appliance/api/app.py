"""create_app(): the Flask application: health, status, control, config, metrics and the OpenAPI document."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as WerkzeugResponse

from appliance.api import config_routes, control, openapi
from appliance.api.auth import AccessPolicy, PolicySource, install
from appliance.api.context import ApiContext, ApiDCS, ConfigCheck, Probe, StateReader, Unavailable
from appliance.api.health import classify, evaluate
from appliance.api.metrics import register_metrics
from appliance.channel.state import StateCache, StateDoc, staleness
from appliance.config.schema import LocalConfig
from appliance.core.model import PgState, Role

HEALTH_METHODS = ["GET", "HEAD", "OPTIONS"]
log = logging.getLogger(__name__)


def create_app(run_dir: str | None = None, *, reader: StateReader | None = None,
               clock: Callable[[], float] = time.monotonic, dcs: ApiDCS | None = None,
               local: LocalConfig | None = None, sleep: Callable[[float], None] = time.sleep,
               wall: Callable[[], float] = time.time, probe: Probe | None = None,
               restart_wait: float = 120.0, pickup_wait: float = 15.0,
               policy: PolicySource | None = None, check_config: ConfigCheck | None = None,
               pg_writable: Callable[[], bool | None] | None = None) -> Flask:
    """Build the app. The state comes from ``<run_dir>/state.json`` unless a reader is injected.

    ``dcs`` (reads, the failover and config keys; never a lease) enables switchover, failover and
    config changes; ``run_dir`` enables restart, reload and reinitialize (intents to the manager);
    ``local`` gives the node name and the restapi access rules (allowlist, Basic auth, client certs);
    ``probe`` asks a candidate's own /patroni during a switchover feasibility check; ``policy``
    gives the current access rules when they may change while serving (else from ``local``);
    ``check_config`` checks the PostgreSQL parameters and pg_hba of a config change with this node's
    PostgreSQL before anything is written. ``pg_writable`` looks at this node's PostgreSQL the way the
    fencer does (a live postmaster, no standby.signal; None: it cannot look): /patroni always reports
    it, so that a leader race elsewhere does not promote beside a server that still accepts writes.
    """
    if reader is None:
        if run_dir is None:
            raise ValueError("create_app needs run_dir or reader")
        directory = run_dir

        reader = StateCache(directory).read

    ctx = ApiContext(reader=reader, clock=clock, run_dir=run_dir, dcs=dcs, sleep=sleep, wall=wall, probe=probe,
                     restart_wait=restart_wait, pickup_wait=pickup_wait, check_config=check_config)
    app = Flask("appliance.api", static_folder=None)
    app.config["STATE_READER"] = reader
    app.config["CLOCK"] = clock
    app.config["API_CONTEXT"] = ctx
    if policy is None:
        fixed = AccessPolicy.from_restapi(local.restapi) if local is not None else AccessPolicy()
        install(app, fixed, lambda: _member_urls(ctx))
    else:
        install(app, policy, lambda: _member_urls(ctx))
    _register_status(app, reader, clock, pg_writable)
    config_routes.register(app, ctx)
    control.register(app, ctx)
    register_metrics(app, reader, clock, wall=wall)
    openapi.register(app)
    _register_health(app, reader, clock)
    _register_errors(app)
    return app


def _not_a_health_path(app: Flask, path: str) -> Response:
    """404, or 405 with Allow when the path exists for other methods (GET /reload)."""
    adapter = app.url_map.bind("localhost")
    allowed = []
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        try:
            endpoint, _ = adapter.match(f"/{path}", method=method)
        except HTTPException:
            continue
        if endpoint not in ("health", "health_root"):
            allowed.append(method)
    if allowed:
        resp = jsonify({"error": f"405 Method Not Allowed: /{path} takes {', '.join(allowed)}", "field": None})
        resp.status_code = 405
        resp.headers["Allow"] = ", ".join(allowed)
        return resp
    resp = jsonify({"error": f"no such endpoint: /{path}", "field": None})
    resp.status_code = 404
    return resp


def _register_errors(app: Flask) -> None:
    """Every error the API answers is JSON ``{"error", "field"}`` (405 keeps its Allow header)."""

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> WerkzeugResponse:
        resp = exc.get_response()
        resp.set_data(json.dumps({"error": f"{exc.code} {exc.name}: {exc.description}", "field": None}))
        resp.mimetype = "application/json"
        return resp

    @app.errorhandler(Exception)
    def crash(exc: Exception) -> Response:  # the request boundary: log it, answer without internals
        log.exception("request failed: %s %s", request.method, request.path)
        resp = jsonify({"error": "internal error: see the API's log", "field": None})
        resp.status_code = 500
        return resp


def _member_urls(ctx: ApiContext) -> Iterable[str]:
    """Every member's api_url and conn_url (for restapi.allowlist_include_members)."""
    try:
        view = ctx.view()
        return [url for m in view.members for url in (m.api_url, m.conn_url) if url]
    except Unavailable:
        doc = ctx.reader() or {}
        members = ((doc.get("cluster") or {}).get("patroni_cluster") or {}).get("members") or []
        return [str(m.get("api_url")) for m in members if m.get("api_url")]


def state_age(doc: StateDoc, now: float) -> float:
    """Seconds since the manager published ``doc`` (beyond Patroni: a quorum vote counts only from
    an answer published after the leader key was freed, core/election.py)."""
    return round(max(0.0, now - float(doc.get("updated_mono") or 0.0)), 3)


def _patroni_body(doc: StateDoc | None) -> dict[str, Any]:
    if doc is None:
        return {"state": PgState.UNKNOWN, "role": Role.UNINITIALIZED}
    return dict(doc.get("patroni_doc") or {"state": PgState.UNKNOWN, "role": Role.UNINITIALIZED})


def _register_status(app: Flask, reader: StateReader, clock: Callable[[], float],
                     pg_writable: Callable[[], bool | None] | None) -> None:
    @app.get("/patroni")
    def patroni() -> Response:
        doc = reader()
        body = _patroni_body(doc)
        why = staleness(doc, clock()) if doc is not None else "no state from the manager yet"
        if why:
            body["state"] = PgState.UNKNOWN
            body["reason"] = why
        elif doc is not None:
            body["state_age"] = state_age(doc, clock())
        sight = pg_writable() if pg_writable is not None else None
        if sight is not None:
            # What the fencer sees, now: a leader race elsewhere must not promote beside a server
            # that accepts writes, whatever the manager's state (up to a loop old) says: it may have
            # promoted since it published, or froze before a resume left its lease order unfenced.
            body["postgres_writable"] = sight
        return jsonify(body)

    @app.get("/cluster")
    def cluster() -> Response:
        doc = reader() or {}
        return jsonify((doc.get("cluster") or {}).get("patroni_cluster") or {"members": []})

    @app.get("/history")
    def history() -> Response:
        doc = reader() or {}
        return jsonify((doc.get("cluster") or {}).get("history") or [])

    @app.get("/failsafe")
    def failsafe_members() -> Response:
        doc = reader() or {}
        if not doc.get("failsafe_mode"):
            resp = jsonify({"error": "failsafe_mode is not enabled", "field": None})
            resp.status_code = 502
            return resp
        return jsonify(doc.get("failsafe") or {})

    @app.get("/events")
    def events() -> Response:
        doc = reader() or {}
        return jsonify(doc.get("events") or [])


def _register_health(app: Flask, reader: StateReader, clock: Callable[[], float]) -> None:
    def health(path: str = "") -> Response:
        check = classify(path)
        if check is None:
            return _not_a_health_path(app, path)
        doc = reader()
        verdict = evaluate(check, request.args, doc, clock())
        if request.method != "GET" or check in ("liveness", "readiness"):
            resp = Response(status=verdict.code)
            del resp.headers["Content-Type"]  # the status line is the whole answer (as in Patroni)
            return resp
        body = _patroni_body(doc)
        if verdict.code != 200:
            body["reason"] = verdict.reason
        resp = jsonify(body)
        resp.status_code = verdict.code
        return resp

    app.add_url_rule("/", "health_root", health, methods=HEALTH_METHODS, provide_automatic_options=False)
    app.add_url_rule("/<path:path>", "health", health, methods=HEALTH_METHODS, provide_automatic_options=False)
