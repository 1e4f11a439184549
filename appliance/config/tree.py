"""Nested-dict helpers shared by the layers: deep merge with provenance, flatten, path get/set."""

from __future__ import annotations

import copy
from typing import Any, TypeVar

Tree = dict[str, Any]
# dotted key -> where the value came from ("default", "file /x.yml:3", "env APPLIANCE_TTL", ...)
Provenance = dict[str, str]
MISSING: Any = object()
T = TypeVar("T")


def dotted(path: tuple[str, ...]) -> str:
    return ".".join(path)


def _under(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith(prefix + ".")


def drop_provenance(prov: dict[str, T], prefix: str) -> None:
    for key in [k for k in prov if _under(k, prefix)]:
        del prov[key]


def merge(
    dst: Tree,
    dst_prov: dict[str, T],
    src: Tree,
    src_prov: dict[str, T],
    *,
    null_deletes: bool = False,
    prefix: tuple[str, ...] = (),
) -> None:
    """Merge ``src`` over ``dst`` in place: mappings merge, anything else (lists too) replaces.

    ``dst_prov``/``src_prov`` map dotted keys to where each leaf came from and follow the merge.
    ``null_deletes`` gives JSON merge-patch semantics (RFC 7396, the DCS ``config`` key); in local
    YAML and env a null is a value like any other.
    """
    for key, value in src.items():
        path = (*prefix, key)
        name = dotted(path)
        if value is None and null_deletes:
            dst.pop(key, None)
            drop_provenance(dst_prov, name)
        elif isinstance(value, dict) and isinstance(dst.get(key), dict):
            merge(dst[key], dst_prov, value, src_prov, null_deletes=null_deletes, prefix=path)
        elif isinstance(value, dict) and null_deletes:
            # RFC 7396: an object patches an empty object, so its own nulls delete (are not stored).
            drop_provenance(dst_prov, name)
            dst[key] = {}
            if name in src_prov:
                dst_prov[name] = src_prov[name]
            merge(dst[key], dst_prov, value, src_prov, null_deletes=True, prefix=path)
        else:
            drop_provenance(dst_prov, name)
            dst[key] = copy.deepcopy(value)
            dst_prov.update({k: v for k, v in src_prov.items() if _under(k, name)})


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch, as a new value: an object patch merges key by key (null deletes,
    nested objects recurse), any other patch replaces the target. Neither argument is changed."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result: Tree = copy.deepcopy(target) if isinstance(target, dict) else {}
    merge(result, {}, patch, {}, null_deletes=True)
    return result


def flatten(tree: Tree, prefix: tuple[str, ...] = ()) -> dict[str, Any]:
    """Leaves by dotted key; lists and empty mappings are leaves."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = (*prefix, key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, path))
        else:
            out[dotted(path)] = value
    return out


def leaf_paths(tree: Tree, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths: list[tuple[str, ...]] = []
    for key, value in tree.items():
        path = (*prefix, key)
        if isinstance(value, dict) and value:
            paths.extend(leaf_paths(value, path))
        else:
            paths.append(path)
    return paths


def get_path(tree: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return MISSING
        tree = tree[key]
    return tree


def set_path(tree: Tree, path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        if not isinstance(tree.get(key), dict):
            tree[key] = {}
        tree = tree[key]
    tree[path[-1]] = value


def pop_path(tree: Tree, path: tuple[str, ...]) -> Any:
    parent = get_path(tree, path[:-1])
    if not isinstance(parent, dict):
        return MISSING
    return parent.pop(path[-1], MISSING)


def same_setting(a: Any, b: Any) -> bool:
    """Loose equality for PostgreSQL-style values: 100 == '100', True == 'on', 'Replica' == 'replica'."""
    return a == b or _norm(a) == _norm(b)


_TRUE = {"on", "true", "yes"}
_FALSE = {"off", "false", "no"}


def _norm(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    text = str(value).strip().lower()
    if text in _TRUE:
        return "on"
    return "off" if text in _FALSE else text


def source_of(prov: Provenance, key: str) -> str:
    """Where ``key`` came from: its own entry, else (a mapping, or a key that is missing) the
    nearest entry under it or under its closest ancestor, else "default"."""
    while True:
        if key in prov:
            return prov[key]
        children = sorted(k for k in prov if k.startswith(key + "."))
        if children:
            return prov[children[0]]
        if "." not in key:
            return "default"
        key = key.rsplit(".", 1)[0]
