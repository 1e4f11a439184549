"""create_app(): the Flask application serving health checks and status from the manager's state."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, jsonify, request

from appliance.api.health import classify, evaluate
from appliance.manager.channel import read_state, staleness

StateReader = Callable[[], dict[str, Any] | None]

HEALTH_METHODS = ["GET", "HEAD", "OPTIONS"]


def create_app(run_dir: str | None = None, *, reader: StateReader | None = None,
               clock: Callable[[], float] = time.monotonic) -> Flask:
    """Build the app. The state comes from ``<run_dir>/state.json`` unless a reader is injected."""
    if reader is None:
        if run_dir is None:
            raise ValueError("create_app needs run_dir or reader")
        directory = run_dir

        def reader() -> dict[str, Any] | None:
            return read_state(directory)

    app = Flask("appliance.api")
    app.config["STATE_READER"] = reader
    app.config["CLOCK"] = clock
    _register_status(app, reader, clock)
    _register_health(app, reader, clock)
    return app


def _patroni_body(doc: dict[str, Any] | None) -> dict[str, Any]:
    if doc is None:
        return {"state": "unknown", "role": "uninitialized"}
    return dict(doc.get("patroni_doc") or {"state": "unknown", "role": "uninitialized"})


def _register_status(app: Flask, reader: StateReader, clock: Callable[[], float]) -> None:
    @app.get("/patroni")
    def patroni() -> Response:
        doc = reader()
        body = _patroni_body(doc)
        why = staleness(doc, clock()) if doc is not None else "no state from the manager yet"
        if why:
            body["state"] = "unknown"
            body["reason"] = why
        return jsonify(body)

    @app.get("/cluster")
    def cluster() -> Response:
        doc = reader() or {}
        return jsonify((doc.get("cluster") or {}).get("patroni_cluster") or {"members": []})

    @app.get("/history")
    def history() -> Response:
        doc = reader() or {}
        return jsonify((doc.get("cluster") or {}).get("history") or [])

    @app.get("/config")
    def config() -> tuple[Response, int]:
        doc = reader() or {}
        cfg = (doc.get("cluster") or {}).get("config")
        if cfg is None:
            return jsonify({"error": "no dynamic configuration in the DCS"}), 502
        return jsonify(cfg), 200

    @app.get("/events")
    def events() -> Response:
        doc = reader() or {}
        return jsonify(doc.get("events") or [])


def _register_health(app: Flask, reader: StateReader, clock: Callable[[], float]) -> None:
    def health(path: str = "") -> Response:
        check = classify(path)
        if check is None:
            return Response(status=404)
        doc = reader()
        verdict = evaluate(check, request.args, doc, clock())
        if request.method != "GET" or check in ("liveness", "readiness"):
            return Response(status=verdict.code)
        body = _patroni_body(doc)
        if verdict.code != 200:
            body["reason"] = verdict.reason
        resp = jsonify(body)
        resp.status_code = verdict.code
        return resp

    app.add_url_rule("/", "health_root", health, methods=HEALTH_METHODS, provide_automatic_options=False)
    app.add_url_rule("/<path:path>", "health", health, methods=HEALTH_METHODS, provide_automatic_options=False)
