"""GET/PATCH/PUT /config: the DCS ``config`` key, validated before any write, CAS on its mod_revision."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, jsonify

from appliance.api.body import json_body
from appliance.api.context import ApiContext, Unavailable
from appliance.api.control import answered
from appliance.config import validate_dynamic
from appliance.config.errors import ConfigError
from appliance.config.tree import merge_patch

PUT_ATTEMPTS = 3


def _without_nulls(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: _without_nulls(v) if isinstance(v, dict) else v for k, v in doc.items() if v is not None}


def _json(status: int, doc: Any) -> Response:
    resp = jsonify(doc)
    resp.status_code = status
    return resp


def invalid(exc: ConfigError, source: str) -> Response:
    """400 naming the first bad key, with every problem found."""
    first = exc.problems[0] if exc.problems else None
    return _json(400, {
        "error": str(exc),
        "field": first.key if first else None,
        "problems": [{"field": p.key, "reason": p.reason} for p in exc.problems],
        "hint": f"nothing was written; fix the {source} body and send it again",
    })


def _refusal(ctx: ApiContext, doc: dict[str, Any], source: str) -> Response | None:
    """A 400 naming every bad key (schema, bounds, timing rule, then this PostgreSQL's own checks of
    parameters and pg_hba), or None when ``doc`` may be written."""
    try:
        validate_dynamic(doc, source=source)
        problems = ctx.check_config(doc, source) if ctx.check_config is not None else []
        if problems:
            raise ConfigError(problems)
    except ConfigError as exc:
        return invalid(exc, source)
    return None


def register(app: Flask, ctx: ApiContext) -> None:
    def get_config() -> Response:
        if ctx.dcs is not None:
            try:
                view = ctx.view()
            except Unavailable:
                view = None
            if view is not None and view.config is not None:
                return _json(200, view.config)
        doc = ctx.reader() or {}
        cfg = (doc.get("cluster") or {}).get("config")
        if cfg is None:
            return _json(502, {"error": "no dynamic configuration in the DCS"})
        return _json(200, cfg)

    def patch_config() -> Response:
        patch = json_body(required=True)
        view = ctx.view()
        if view.config is None or not view.config_revision:
            return _json(503, {"error": "the DCS has no config key yet (the leader seeds it from bootstrap.dcs): "
                                        "retry once the cluster is initialized"})
        merged = merge_patch(view.config, patch)
        refused = _refusal(ctx, merged, "PATCH /config")
        if refused is not None:
            return refused
        if merged != view.config:
            revision = view.config_revision
            if not ctx.dcs_call(lambda d: d.write_config(merged, revision)):
                return _json(409, {"error": "the config key changed since it was read (CAS on mod_revision "
                                            "failed): GET /config and send the PATCH again"})
        return _json(200, merged)

    def put_config() -> Response:
        doc = _without_nulls(json_body(required=True))  # null means "not set": never stored as such
        refused = _refusal(ctx, doc, "PUT /config")
        if refused is not None:
            return refused
        for _ in range(PUT_ATTEMPTS):
            view = ctx.view()
            if view.config == doc:
                return _json(200, doc)
            revision = view.config_revision or None
            try:
                written = ctx.dcs_call(lambda d: d.write_config(doc, revision))  # noqa: B023 (called at once)
            except Unavailable as exc:
                return _json(502, {"error": f"could not write the config key: {exc}"})
            if written:
                return _json(200, doc)
        return _json(409, {"error": f"the config key kept changing during {PUT_ATTEMPTS} attempts: retry"})

    app.add_url_rule("/config", "config_get", answered(get_config), methods=["GET"])
    app.add_url_rule("/config", "config_patch", answered(patch_config), methods=["PATCH"],
                     provide_automatic_options=False)
    app.add_url_rule("/config", "config_put", answered(put_config), methods=["PUT"],
                     provide_automatic_options=False)
