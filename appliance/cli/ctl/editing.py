"""edit-config's pure parts: -s/-p parsing, applying changes, the unified diff."""

from __future__ import annotations

import copy
import difflib
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from appliance.cli.ctl.formatting import dump_config

Change = tuple[tuple[str, ...], Any]
DELETE = object()


class EditError(ValueError):
    """A malformed -s/-p/--apply argument; the message names it."""


def parse_value(text: str) -> Any:
    """YAML scalar semantics (10 -> int, true -> bool, null -> delete), a plain string when not YAML."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if value is None:
        return DELETE
    return value


def parse_set(item: str) -> Change:
    """``-s key.path=value``: dotted path into the dynamic config."""
    key, sep, value = item.partition("=")
    path = tuple(key.strip().split("."))
    if not sep or not key.strip() or any(not part for part in path):
        raise EditError(f"-s {item!r}: expected key.path=value, e.g. -s loop_wait=2 or -s ttl=null")
    return path, parse_value(value.strip())


def parse_pg(item: str) -> Change:
    """``-p name=value``: a PostgreSQL parameter (postgresql.parameters.<name>)."""
    name, sep, value = item.partition("=")
    name = name.strip()
    if not sep or not name or "." in name:
        raise EditError(f"-p {item!r}: expected parameter=value, e.g. -p work_mem=16MB or -p work_mem=null")
    return ("postgresql", "parameters", name), parse_value(value.strip())


def apply_changes(config: Mapping[str, Any], changes: Iterable[Change]) -> dict[str, Any]:
    """A copy of ``config`` with each change set (DELETE removes the key and then-empty parents)."""
    result: dict[str, Any] = copy.deepcopy(dict(config))
    for path, value in changes:
        if value is DELETE:
            _delete(result, path)
            continue
        node = result
        for key in path[:-1]:
            child = node.get(key)
            if not isinstance(child, dict):
                child = node[key] = {}
            node = child
        node[path[-1]] = value
    return result


def _delete(tree: dict[str, Any], path: tuple[str, ...]) -> None:
    trail = [tree]
    for key in path[:-1]:
        child = trail[-1].get(key)
        if not isinstance(child, dict):
            return
        trail.append(child)
    trail[-1].pop(path[-1], None)
    for depth in range(len(path) - 1, 0, -1):
        if trail[depth]:
            break
        trail[depth - 1].pop(path[depth - 1], None)


def load_document(text: str, what: str) -> dict[str, Any]:
    """A YAML (or JSON) mapping from an editor buffer or an --apply/--replace file."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise EditError(f"{what}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise EditError(f"{what}: expected a mapping of settings, got {type(doc).__name__}")
    return doc


def unified_diff(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> str:
    """The change as a unified diff of the YAML renderings (printed as is: no pager needed)."""
    old = dump_config(dict(before or {})).splitlines(keepends=True)
    new = dump_config(dict(after or {})).splitlines(keepends=True)
    return "".join(difflib.unified_diff(old, new, fromfile="before", tofile="after"))
