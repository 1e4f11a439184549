"""The OpenAPI document covers exactly the routes the app serves, and every reference resolves."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from flask import Flask

from appliance.api.health import classify
from appliance.api.openapi import HEALTH_PATHS, STATUS_ONLY_PATHS, build_spec
from tests.unit.api_fakes import make_app, standard_cluster

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def served(app: Flask) -> set[tuple[str, str]]:
    """(OpenAPI path, method) of every url_map rule; HEAD is implied by GET on both sides, and
    Flask's automatic OPTIONS answers are not API operations."""
    found = set()
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        automatic_options = getattr(rule, "provide_automatic_options", False)
        for method in rule.methods or ():
            if method == "HEAD" or (method == "OPTIONS" and automatic_options):
                continue
            found.add((path, method.lower()))
    return found


def documented(spec: dict[str, Any]) -> set[tuple[str, str]]:
    """/liveness and /readiness are documented on their own (status only) but served by /{path}."""
    own = {f"/{name}" for name in STATUS_ONLY_PATHS}
    return {("/{path}" if path in own else path, method) for path, ops in spec["paths"].items() for method in ops
            if method in HTTP_METHODS and method != "head"}


def test_the_document_and_the_url_map_agree(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path, standard_cluster())
    assert documented(build_spec()) == served(app)


def test_every_get_documents_head_where_health_checks_answer_it() -> None:
    spec = build_spec()
    for path in ("/", "/{path}"):
        assert {"get", "head", "options"} <= set(spec["paths"][path])


def test_served_at_openapi_json(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path)
    resp = app.test_client().get("/openapi.json")
    assert resp.status_code == 200
    doc = resp.get_json()
    assert doc["openapi"].startswith("3.")
    assert doc == build_spec()


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


def test_references_resolve_and_operations_answer() -> None:
    spec = build_spec()
    schemas = spec["components"]["schemas"]
    for ref in _refs(spec):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas, ref
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            assert op.get("summary") and op.get("responses"), (path, method)
            if method in {"post", "put", "patch", "delete"}:
                assert {"401", "403"} <= set(op["responses"]), (path, method)


def test_health_path_enum_names_real_checks() -> None:
    assert all(classify(p) is not None for p in HEALTH_PATHS)
