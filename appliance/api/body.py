"""Request bodies and answers of the control endpoints: JSON parsing (411/400) and Patroni-style replies."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from flask import Response, jsonify, request


class BadInput(Exception):
    """Malformed input: answered with ``{"error": ..., "field": ...}``; nothing has been changed."""

    def __init__(self, message: str, field: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.status = status

    def response(self) -> Response:
        resp = jsonify({"error": self.message, "field": self.field})
        resp.status_code = self.status
        return resp


def json_body(required: bool) -> dict[str, Any]:
    """The request's JSON object, as Patroni reads it.

    Required: no Content-Length → 411; invalid JSON, a non-object or ``{}`` → 400. Optional: no
    body (or an empty one) is ``{}``; a body that is there must still be a JSON object.
    """
    if "Content-Length" not in request.headers:
        if required:
            raise BadInput("this request needs a JSON body sent with a Content-Length header", status=411)
        return {}
    if request.content_length == 0 and not required:
        return {}
    raw = request.get_data(cache=True)
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadInput(f"the request body is not valid JSON: {exc}") from None
    except RecursionError:  # json's own limit is ~1000 levels deep; ours is lower
        raise BadInput(f"the request body is nested deeper than {MAX_DEPTH} levels") from None
    if _depth(doc) > MAX_DEPTH:
        raise BadInput(f"the request body is nested deeper than {MAX_DEPTH} levels")
    if not isinstance(doc, dict):
        raise BadInput(f"the request body must be a JSON object, not {type(doc).__name__}")
    if required and not doc:
        raise BadInput("the request body is an empty JSON object: say what to change")
    return doc


MAX_DEPTH = 32


def _depth(doc: Any, limit: int = MAX_DEPTH + 1) -> int:
    """How deep ``doc`` nests (stops counting past ``limit``; no recursion)."""
    deepest, stack = 0, [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return deepest


def optional_str(body: Mapping[str, Any], key: str) -> str | None:
    """A string field; null and absent are None; anything else is a 400 naming the field."""
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadInput(f"{key} must be a string (got {json.dumps(value)})", field=key)
    return value or None


def optional_bool(body: Mapping[str, Any], key: str) -> bool:
    """A boolean field (Patroni's parse_bool: true/false, on/off, yes/no, 1/0); absent is False."""
    value = body.get(key)
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise BadInput(f"{key} must be a boolean (got {json.dumps(value)})", field=key)


_TRUE = frozenset({"true", "on", "yes", "1"})
_FALSE = frozenset({"false", "off", "no", "0"})


def reject_unknown(body: Mapping[str, Any], allowed: frozenset[str], what: str) -> None:
    for key in body:
        if key not in allowed:
            raise BadInput(f"unknown key {key!r} for {what}: expected one of {', '.join(sorted(allowed))}",
                           field=key)


def text(status: int, message: str) -> Response:
    """Patroni answers its control requests with a plain-text message; an error (4xx/5xx) carries the
    same message as ``{"error": ..., "field": null}``, like every other error of the API."""
    if status >= 400:
        resp = jsonify({"error": message, "field": None})
        resp.status_code = status
        return resp
    return Response(message, status=status, mimetype="text/plain")
