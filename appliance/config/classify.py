"""Sort merged local layers into local settings, dynamic-only settings and ignored Patroni keys."""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from pydantic import BaseModel

from appliance.config.dynamic import DYNAMIC_TOP_KEYS, clean_dynamic
from appliance.config.errors import Problem
from appliance.config.patroni_keys import ignored_keys, why_ignored
from appliance.config.schema import (
    CLUSTER_WIDE_PARAMETERS,
    DynamicConfig,
    DynamicPostgresql,
    LocalConfig,
    Postgresql,
)
from appliance.config.tree import Provenance, Tree, dotted, drop_provenance, flatten, set_path, source_of

# postgresql.use_pg_rewind and postgresql.use_slots: cluster-wide in Patroni too.
DYNAMIC_ONLY_POSTGRESQL = frozenset(DynamicPostgresql.model_fields) - frozenset(Postgresql.model_fields)
UNKNOWN_KEY = "unknown key: not a pgappliance or Patroni setting (config/appliance.yml lists every key)"


@dataclass
class Sorted:
    local: Tree = field(default_factory=dict)
    dynamic: Tree = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def sort_local(tree: Tree, prov: Provenance) -> Sorted:
    """Split the merged file+env tree. ``prov`` is updated: ignored keys leave it."""
    out = Sorted()
    _normalize_etcd3(tree, prov, out.warnings)
    _walk(tree, (), LocalConfig, prov, out, out.local)
    return out


def _walk(node: Tree, path: tuple[str, ...], model: type[BaseModel], prov: Provenance, out: Sorted,
          dst: Tree) -> None:
    ignored = ignored_keys(path, node)
    dynamic_here = DYNAMIC_TOP_KEYS if not path else DYNAMIC_ONLY_POSTGRESQL if path == ("postgresql",) else ()
    for key, value in node.items():
        sub = (*path, key)
        name = dotted(sub)
        if key in model.model_fields:
            child = _model_in(model.model_fields[key].annotation)
            if sub == ("postgresql", "parameters") and isinstance(value, dict):
                dst[key] = _split_parameters(value, prov, out)
            elif sub == ("bootstrap", "dcs") and isinstance(value, dict):
                dst[key] = _clean_bootstrap_dcs(value, prov, out)
            elif child is not None and isinstance(value, dict):
                dst[key] = {}
                _walk(value, sub, child, prov, out, dst[key])
            else:
                dst[key] = value
        elif key in dynamic_here:
            set_path(out.dynamic, sub, value)
        elif key in ignored:
            out.warnings.append(f"{name} ({source_of(prov, name)}): accepted but ignored: {why_ignored(path)}")
            drop_provenance(prov, name)
        else:
            out.problems.append(Problem(name, source_of(prov, name), UNKNOWN_KEY))


def _split_parameters(params: Tree, prov: Provenance, out: Sorted) -> Tree:
    local: Tree = {}
    for name, value in params.items():
        lower = name.lower()
        if lower not in CLUSTER_WIDE_PARAMETERS:
            local[name] = value
            continue
        set_path(out.dynamic, ("postgresql", "parameters", lower), value)
        if lower != name:
            prov[f"postgresql.parameters.{lower}"] = prov.pop(f"postgresql.parameters.{name}", "default")
    return local


def _clean_bootstrap_dcs(doc: Tree, prov: Provenance, out: Sorted) -> Tree:
    prefix = "bootstrap.dcs."
    origin = {k[len(prefix):]: (k, v) for k, v in prov.items() if k.startswith(prefix)}
    cleaned, warnings, problems = clean_dynamic(doc, origin, strict=True)
    out.warnings += warnings
    out.problems += problems
    kept = {prefix + k for k in flatten(cleaned)}
    for key in [k for k in prov if k.startswith(prefix) and k not in kept]:
        del prov[key]
    return cleaned


def _normalize_etcd3(tree: Tree, prov: Provenance, warnings: list[str]) -> None:
    """Patroni's etcd3.host (one endpoint for discovery) becomes our etcd3.hosts list."""
    etcd3 = tree.get("etcd3")
    if not isinstance(etcd3, dict) or "host" not in etcd3:
        return
    host = etcd3.pop("host")
    source = prov.pop("etcd3.host", "default")
    if "hosts" in etcd3:
        warnings.append(f"etcd3.host ({source}): ignored because etcd3.hosts is set")
        return
    etcd3["hosts"] = [host] if isinstance(host, str) else host
    prov["etcd3.hosts"] = source


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def keeps_string(path: tuple[str, ...]) -> bool:
    """True when the schema wants a string at ``path`` (env values there are not JSON-parsed)."""
    model: type[BaseModel] | None = LocalConfig
    if path[:2] == ("bootstrap", "dcs"):
        model, path = DynamicConfig, path[2:]
    elif path[:1] and (path[0] in DYNAMIC_TOP_KEYS or path[:2] in {("postgresql", k) for k in DYNAMIC_ONLY_POSTGRESQL}):
        model = DynamicConfig
    annotation: Any = None
    for key in path:
        if model is None or key not in model.model_fields:
            return False  # free-form (parameters, tags) or unknown: parse as JSON
        annotation = model.model_fields[key].annotation
        model = _model_in(annotation)
    return _accepts_str(annotation)


def _accepts_str(annotation: Any) -> bool:
    if annotation is str:
        return True
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return all(isinstance(arg, str) for arg in typing.get_args(annotation))
    if origin in (Union, types.UnionType):
        args = typing.get_args(annotation)
        # A boolean or a word (synchronous_mode: true or "quorum"): parsed as JSON, so that "true"
        # is the boolean and "quorum", which is no JSON, stays the word.
        return not any(arg is bool for arg in args) and any(_accepts_str(arg) for arg in args)
    return False
