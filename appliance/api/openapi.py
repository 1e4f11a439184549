"""The OpenAPI 3 document of the REST API, served at GET /openapi.json (a unit test keeps it in step)."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, jsonify

from appliance import __version__
from appliance.config.patroni_keys import DYNAMIC_TOP_NOT_IMPLEMENTED
from appliance.config.schema import DynamicConfig

HEALTH_PATHS = (
    "primary", "master", "read-write", "leader", "standby-leader", "standby_leader", "replica", "read-only",
    "synchronous", "sync", "read-only-sync", "read-only-synchronous", "quorum", "read-only-quorum", "asynchronous",
    "async", "health",
)
STATUS_ONLY_PATHS = ("liveness", "readiness")  # even on GET: the status line, no body
TEXT = {"text/plain": {"schema": {"type": "string"}}}
Op = dict[str, Any]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _text(description: str) -> dict[str, Any]:
    return {"description": description, "content": TEXT}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": _json(_ref("Error"))}


def _body(name: str, required: bool) -> dict[str, Any]:
    schema: dict[str, Any] = _ref(name)
    if required:  # Patroni refuses an empty object where a body is required
        schema = {"allOf": [schema], "minProperties": 1}
    return {"required": required, "content": _json(schema)}


ACCESS = {
    "401": {"description": "restapi.authentication is set and the Basic credentials are missing or wrong",
            "headers": {"WWW-Authenticate": {"schema": {"type": "string", "example": 'Basic realm="Patroni"'}}},
            "content": _json(_ref("Error"))},
    "403": _error("the client is not in restapi.allowlist (`Access is denied`), or verify_client wants a "
                  "client certificate (`client certificate required`)"),
}
# What any request may get besides its own answers: an unknown path or method, a body over the size
# limit, a busy server (the lane's queue is full), a timeout, an internal error. All JSON.
COMMON = {"default": _error("404/405 (with Allow)/408/413/431/503 busy/500: `error` says which")}
BAD_BODY = {
    "400": _error("invalid JSON, not an object, an empty object, or a field of the wrong type"),
    "411": _error("a required body was sent without Content-Length"),
}


def _unsafe(summary: str, responses: dict[str, Any], body: dict[str, Any] | None = None) -> Op:
    op: Op = {"summary": summary, "security": [{}, {"basicAuth": []}],
              "responses": {**responses, **ACCESS, **COMMON}}
    if body is not None:
        op["requestBody"] = body
    return op


def _health_ops(summary: str) -> dict[str, Op]:
    answers = {"200": {"description": "check passed (GET: the /patroni document)",
                       "content": _json(_ref("PatroniStatus"))},
               "503": {"description": "check failed (GET: the /patroni document plus `reason`)",
                       "content": _json(_ref("PatroniStatus"))}}
    status_only = {"200": {"description": "check passed (status line only)"},
                   "503": {"description": "check failed (status line only)"}}
    params = [{"name": "lag", "in": "query", "schema": {"type": "string"}, "example": "16MB"},
              {"name": "replication_state", "in": "query", "schema": {"type": "string"}},
              # Patroni ignores a value it cannot read (a health answer is only ever 200 or 503).
              {"name": "mode", "in": "query", "schema": {"type": "string"}, "description": "apply (default) or write"}]
    return {"get": {"summary": summary, "parameters": params, "responses": {**answers, **COMMON}},
            "head": {"summary": summary + " (status only)", "responses": {**status_only, **COMMON}},
            "options": {"summary": summary + " (status only; HAProxy's bare `option httpchk`)",
                        "responses": {**status_only, **COMMON}}}


def _status_only_ops(name: str) -> dict[str, Op]:
    answers = {"200": {"description": f"{name} check passed (status line only)"},
               "503": {"description": f"{name} check failed (status line only)"}, **COMMON}
    params = [{"name": "lag", "in": "query", "schema": {"type": "string"}},
              {"name": "mode", "in": "query", "schema": {"type": "string"}}] if name == "readiness" else []
    return {method: {"summary": f"/{name} (status only)", "parameters": params, "responses": answers}
            for method in ("get", "head", "options")}


def _get(summary: str, schema: dict[str, Any], extra: dict[str, Any] | None = None,
         content: dict[str, Any] | None = None) -> dict[str, Op]:
    ok = {"description": "OK", "content": content or _json(schema)}
    return {"get": {"summary": summary, "responses": {"200": ok, **(extra or {}), **COMMON}}}


def _paths() -> dict[str, dict[str, Op]]:
    path_param = {"name": "path", "in": "path", "required": True,
                  "description": "a health check; Patroni matches substrings, so the aliases all work",
                  "schema": {"type": "string", "enum": list(HEALTH_PATHS)}}
    any_path = _health_ops("Health check named by the path")
    for op in any_path.values():
        op["parameters"] = [path_param, *op.get("parameters", [])]
    return {
        "/": _health_ops("Same as /primary"),
        "/{path}": any_path,
        **{f"/{name}": _status_only_ops(name) for name in STATUS_ONLY_PATHS},
        "/patroni": _get("This node's status (Patroni's shape)", _ref("PatroniStatus")),
        "/cluster": _get("Every member with role, state, lag", {"type": "object"}),
        "/history": _get("Timeline history", {"type": "array", "items": {"type": "array"}}),
        "/events": _get("Recent decisions of this node's manager", {"type": "array", "items": {"type": "object"}}),
        "/metrics": _get("Prometheus exposition", {}, content={"text/plain": {"schema": {"type": "string"}}}),
        "/openapi.json": _get("This document", {"type": "object"}),
        "/config": {**_get("The dynamic configuration from the DCS", _ref("DynamicConfig"),
                           {"502": _error("the DCS has no config key")}), **_config_ops()},
        "/switchover": _switchover_ops(),
        "/failover": {"post": _unsafe("Fail over to a named candidate (with `leader`: a switchover)", {
            **_switch_answers(), **BAD_BODY}, _body("FailoverRequest", True))},
        "/restart": _restart_ops(),
        "/reload": {"post": _unsafe("Re-read the local configuration (like SIGHUP)",
                                    {"202": _text("reload scheduled"), "503": _error("the manager is not running")})},
        "/failsafe": {
            **_get("The members a primary cut off from the DCS must reach (the failsafe key)",
                   {"type": "object", "additionalProperties": {"type": "string"}},
                   {"502": _error("failsafe_mode is off")}),
            "post": _unsafe("A primary cut off from the DCS asks to go on (failsafe mode)", {
                "200": _text("Accepted (header `lsn`: this node's WAL position)"),
                "500": _error("this node runs as primary: `Running as a leader`"),
                "502": _error("failsafe_mode is off"),
                "503": _error("the manager is not running"),
                **BAD_BODY}, _body("FailsafeRequest", True))},
        "/reinitialize": {"post": _unsafe("Wipe this replica and clone it again from the leader", {
            "200": _text("reinitialize started"),
            "503": _error("refused with a reason: this node is the leader, the cluster has no leader, "
                         "another action is in progress, or the manager is not running"),
            "400": _error("a field of the wrong type or an unknown key")},
            _body("ReinitializeRequest", False))},
    }


def _config_ops() -> dict[str, Op]:
    invalid = {"description": "the result would be invalid: nothing written; `field` names the bad key",
               "content": _json(_ref("ConfigError"))}
    return {
        "patch": _unsafe("JSON merge patch of the dynamic configuration (`null` deletes a key)", {
            "200": {"description": "the new full configuration", "content": _json(_ref("DynamicConfig"))},
            "400": invalid, "411": BAD_BODY["411"],
            "409": _error("the config key changed since it was read (CAS on mod_revision)"),
            "503": _error("the DCS has no config key yet, or is unreachable")},
            _body("ConfigPatch", True)),
        "put": _unsafe("Replace the whole dynamic configuration", {
            "200": {"description": "the configuration (no write when unchanged)",
                    "content": _json(_ref("DynamicConfig"))},
            "400": invalid, "411": BAD_BODY["411"],
            "409": _error("the config key kept changing while writing"),
            "502": _error("the DCS write failed"), "503": _error("the DCS is unreachable")},
            _body("ConfigPatch", True)),
    }


def _switch_answers() -> dict[str, Any]:
    return {
        "200": _text('`Successfully switched over to "node2"` or `Switched over to "node3" instead of "node2"`'),
        "202": _text("`Switchover scheduled`"),
        "400": _error("Patroni's refusals: missing leader/candidate, scheduled failover, paused, same target"),
        "412": {"description": "not feasible; `candidates` gives each candidate's rejection reason",
                "content": _json(_ref("Refusal"))},
        "422": _error("scheduled_at is in the past or unparsable"),
        "503": _error("`failed to write failover key into DCS`, `Switchover failed` or `Switchover status "
                     "unknown`, or the DCS is unreachable"),
    }


def _switchover_ops() -> dict[str, Op]:
    return {
        "post": _unsafe("Switch over from the leader (now, or at scheduled_at)", {**_switch_answers(), **BAD_BODY},
                        _body("SwitchoverRequest", True)),
        "delete": _unsafe("Delete a scheduled switchover", {
            "200": _text("scheduled switchover deleted"), "404": _error("no switchover is scheduled"),
            "409": _error("the failover key changed meanwhile (CAS)")}),
    }


def _restart_ops() -> dict[str, Op]:
    return {
        "post": _unsafe("Restart PostgreSQL on this node (now, or at schedule), if the filters match", {
            "200": _text("restarted successfully"),
            "202": _text("Restart scheduled"),
            "400": _error("unknown filter, bad role, bad postgres_version, timeout <= 0, schedule without tz"),
            "409": _error("Another restart is already scheduled"),
            "411": BAD_BODY["411"],
            "422": _error("schedule in the past or unparsable"),
            "500": _error("Can't schedule restart in the paused state"),
            "503": _error("restart failed, conditions not met (with the reason), or the manager is not running"),
        }, _body("RestartRequest", False)),
        "delete": _unsafe("Delete the scheduled restart", {
            "200": _text("scheduled restart deleted"), "404": _error("no restarts are scheduled")}),
    }


def _openapi30(node: Any, nullable: bool) -> Any:
    """A pydantic JSON Schema fragment as OpenAPI 3.0: ``anyOf [X, null]`` becomes X + nullable,
    $defs references point at components, titles and defaults dropped; with ``nullable`` every
    property also takes null (a merge patch deletes a key with it)."""
    if isinstance(node, list):
        return [_openapi30(item, nullable) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _openapi30(v, nullable) for k, v in node.items() if k not in ("title", "default", "description")}
    if "$ref" in out:
        out["$ref"] = out["$ref"].replace("#/$defs/", "#/components/schemas/Config")
    variants = out.pop("anyOf", None)
    if variants is not None:
        kept = [v for v in variants if v.get("type") != "null"]
        out.update(kept[0] if len(kept) == 1 else {"anyOf": kept})
        out["nullable"] = True
    if nullable and "properties" in out:
        for prop in out["properties"].values():
            prop["nullable"] = True
    return out


def config_schemas() -> dict[str, Any]:
    """The dynamic config as JSON Schema, from the very model that validates it."""
    raw = DynamicConfig.model_json_schema()
    defs = raw.pop("$defs", {})
    extra: dict[str, Any] = {key: {} for key in sorted(DYNAMIC_TOP_NOT_IMPLEMENTED)}  # Patroni keys kept, not acted on
    out: dict[str, Any] = {}
    # null deletes a key in a PATCH and means "not set" in a PUT (never stored).
    schema = _openapi30(raw, True)
    schema["properties"].update(extra)
    schema["additionalProperties"] = False
    out["ConfigPatch"] = schema
    for name, schema in defs.items():
        out[f"Config{name}"] = _openapi30(schema, True)
    return out


def _schemas() -> dict[str, Any]:
    string, boolean = {"type": "string"}, {"type": "boolean"}
    return {
        "Error": {"type": "object", "required": ["error"],
                  "properties": {"error": string, "field": {"type": "string", "nullable": True}}},
        "ConfigError": {"type": "object", "required": ["error"], "properties": {
            "error": string, "field": {"type": "string", "nullable": True}, "hint": string,
            "problems": {"type": "array", "items": {"type": "object", "properties": {
                "field": string, "reason": string}}}}},
        "Refusal": {"type": "object", "required": ["message", "candidates"], "properties": {
            "message": string, "detail": string,
            "candidates": {"type": "object", "additionalProperties": string,
                           "example": {"node2": "lag 5 MB exceeds maximum_lag_on_failover (1 MB)",
                                       "node3": "tagged nofailover"}}}},
        "SwitchoverRequest": {"type": "object", "required": ["leader"], "additionalProperties": False,
                              "properties": {"leader": string, "candidate": string, "member": string,
                                             "scheduled_at": {"type": "string", "format": "date-time"}}},
        "FailoverRequest": {"type": "object", "required": ["candidate"], "additionalProperties": False,
                            "properties": {"candidate": string, "member": string, "leader": string}},
        "RestartRequest": {"type": "object", "additionalProperties": False, "properties": {
            "restart_pending": boolean, "role": {"type": "string", "enum": ["primary", "replica", "standby_leader"]},
            "postgres_version": {"type": "string", "example": "15.2"},
            "timeout": {"oneOf": [{"type": "number"}, {"type": "string", "example": "60s"}]},
            "schedule": {"type": "string", "format": "date-time"}}},
        "FailsafeRequest": {"type": "object", "additionalProperties": False, "required": ["name"],
                            "properties": {"name": {"type": "string", "minLength": 1}, "conn_url": string,
                                           "api_url": string, "slots": {"type": "object"}}},
        "ReinitializeRequest": {"type": "object", "additionalProperties": False,
                                "properties": {"force": boolean, "from_leader": boolean}},
        "DynamicConfig": {"type": "object", "additionalProperties": True,
                          "example": {"ttl": 30, "loop_wait": 10, "maximum_lag_on_failover": 1048576,
                                      "pause": True, "postgresql": {"parameters": {"work_mem": "8MB"}}}},
        **config_schemas(),
        "PatroniStatus": {"type": "object", "additionalProperties": True, "properties": {
            "state": string, "role": string, "reason": string, "pending_restart": boolean,
            "pause": boolean, "patroni": {"type": "object"},
            # Beyond Patroni, only while the manager's state is stale: the fencer's sight of PostgreSQL.
            "postgres_writable": boolean}},
    }


def build_spec() -> dict[str, Any]:
    """The whole OpenAPI 3.0 document."""
    return {
        "openapi": "3.0.3",
        "info": {"title": "pgappliance REST API", "version": __version__,
                 "description": "Patroni-compatible health, status and control endpoints (docs/rest-api.md)."},
        "paths": _paths(),
        "components": {"schemas": _schemas(),
                       "securitySchemes": {"basicAuth": {"type": "http", "scheme": "basic"}}},
    }


def register(app: Flask) -> None:
    spec = build_spec()

    @app.get("/openapi.json")
    def openapi() -> Response:
        return jsonify(spec)
