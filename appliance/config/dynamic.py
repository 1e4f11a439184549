"""The dynamic layer (DCS ``config`` key): clean, validate (timing rule, minimums), keep provenance."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from appliance.config.errors import ConfigError, Problem, shown
from appliance.config.patroni_keys import DYNAMIC_POSTGRESQL_IGNORED, DYNAMIC_TOP_NOT_IMPLEMENTED
from appliance.config.schema import CLUSTER_WIDE_MINIMUMS, DynamicConfig, DynamicPostgresql
from appliance.config.tree import Tree, dotted, flatten, leaf_paths, merge
from appliance.config.validation import problems_from
from appliance.core.flags import QUORUM, parse_bool

DCS_SOURCE = "dcs config"
DYNAMIC_TOP_KEYS = frozenset(DynamicConfig.model_fields) - {"postgresql"}
DYNAMIC_POSTGRESQL_KEYS = frozenset(DynamicPostgresql.model_fields)
# dotted key in the dynamic document -> (key as the user wrote it, source)
Origin = dict[str, tuple[str, str]]


@dataclass(frozen=True)
class DynamicResult:
    """A validated dynamic config, the source of each of its leaves, and what was adjusted."""

    config: DynamicConfig
    sources: dict[str, str]
    warnings: tuple[str, ...]


def origin_of(doc: Tree, source: str, prefix: str = "") -> Origin:
    """Every leaf of ``doc`` coming from one ``source``; ``prefix`` is how the user spelled its root."""
    return {dotted(p): (prefix + dotted(p), source) for p in leaf_paths(doc)}


def clean_dynamic(doc: Mapping[str, Any], origin: Origin, *, strict: bool) -> tuple[Tree, list[str], list[Problem]]:
    """Drop Patroni keys we ignore (with a warning). Unknown keys are problems when ``strict``;
    otherwise they warn, and stay at the top level (DynamicConfig keeps extras) but not under
    ``postgresql`` (which does not)."""
    out: Tree = {}
    warnings: list[str] = []
    problems: list[Problem] = []
    for key, value in doc.items():
        if key == "postgresql" and isinstance(value, Mapping):
            out[key] = {}
            for pkey, pvalue in value.items():
                name = f"postgresql.{pkey}"
                if pkey in DYNAMIC_POSTGRESQL_KEYS:
                    out[key][pkey] = copy.deepcopy(pvalue)
                elif pkey in DYNAMIC_POSTGRESQL_IGNORED:
                    warnings.append(_ignored(origin, name, "not a dynamic setting of pgappliance"))
                else:
                    _unknown(origin, name, strict, warnings, problems)
            continue
        if key in DYNAMIC_TOP_NOT_IMPLEMENTED:
            warnings.append(_ignored(origin, key, "Patroni setting not implemented (kept in the document)"))
        elif key not in DynamicConfig.model_fields:
            _unknown(origin, key, strict, warnings, problems)
            if strict:
                continue
        out[key] = copy.deepcopy(value)
    return out, warnings, problems


def _unknown(origin: Origin, name: str, strict: bool, warnings: list[str], problems: list[Problem]) -> None:
    key, source = _find(origin, name)
    if strict:
        problems.append(Problem(key, source, "unknown key: not a dynamic (cluster-wide) setting"))
    else:
        warnings.append(f"{key} ({source}): unknown key, ignored")


def _ignored(origin: Origin, name: str, why: str) -> str:
    key, source = _find(origin, name)
    return f"{key} ({source}): accepted but ignored: {why}"


def _find(origin: Origin, name: str) -> tuple[str, str]:
    if name in origin:
        return origin[name]
    for key in sorted(origin):
        if key.startswith(name + "."):
            display, source = origin[key]
            return display[: len(display) - len(key) + len(name)], source
    return name, DCS_SOURCE


def check_dynamic(doc: Mapping[str, Any], origin: Origin, *, strict: bool) -> DynamicResult:
    """Defaults < ``doc``, validated. Values under a Patroni minimum are problems when ``strict``
    (our own writes: PATCH, bootstrap), else raised to the minimum with a warning, like Patroni."""
    cleaned, warnings, problems = clean_dynamic(doc, origin, strict=strict)
    merged: Tree = DynamicConfig().model_dump(mode="json")
    sources: dict[str, tuple[str, str]] = {}
    merge(merged, sources, cleaned, origin, null_deletes=True)
    if not strict:
        warnings += _coerce_strings(merged, sources)
    problems += _apply_minimums(merged, sources, warnings, strict=strict)
    try:
        config = DynamicConfig.model_validate(merged)
    except ValidationError as exc:
        problems += problems_from(exc, lambda path: _locate(sources, path), lambda path: _timing_note(sources, path))
        config = None
    if problems or config is None:
        raise ConfigError(problems)
    flat: dict[str, str] = {}
    for key in flatten(config.model_dump(mode="json")):
        display, source = _find(sources, key) if _has(sources, key) else (key, "default")
        flat[key] = source if display == key else f"{source} ({display})"
    return DynamicResult(config, flat, tuple(warnings))


def _coerce_strings(merged: Tree, sources: Origin) -> list[str]:
    """A DCS document written by another tool may hold "30" or "on": read them as Patroni does (our
    own writes refuse them, so they never come from us), each with a warning."""
    warnings = []
    for key, field in DynamicConfig.model_fields.items():
        value = merged.get(key)
        if not isinstance(value, str):
            continue
        text = value.strip().lower()
        if field.annotation is int and text.lstrip("-").isdigit():
            merged[key] = int(text)
        elif field.annotation is bool and parse_bool(text) is not None:
            merged[key] = parse_bool(text)
        elif key == "synchronous_mode" and (text == QUORUM or parse_bool(text) is not None):
            coerced = QUORUM if text == QUORUM else parse_bool(text)
            if coerced == value:
                continue
            merged[key] = coerced
        else:
            continue
        name, source = _locate(sources, (key,))
        warnings.append(f"{name} ({source}): the string {value!r} read as {merged[key]!r}")
    return warnings


def _has(sources: Origin, key: str) -> bool:
    return key in sources or any(k.startswith(key + ".") for k in sources)


def _locate(sources: Origin, path: tuple[str, ...]) -> tuple[str, str]:
    if not path:
        # The only whole-document rule is the timing rule: it is reported on ttl.
        path = ("ttl",)
    name = dotted(path)
    return _find(sources, name) if _has(sources, name) else (name, "default")


def _timing_note(sources: Origin, path: tuple[str, ...]) -> str:
    if path:
        return ""
    terms = ", ".join(f"{k} from {_locate(sources, (k,))[1]}" for k in ("loop_wait", "retry_timeout"))
    return f" ({terms})"


def _apply_minimums(merged: Tree, sources: Origin, warnings: list[str], *, strict: bool) -> list[Problem]:
    problems: list[Problem] = []
    postgresql = merged.get("postgresql")
    params = postgresql.get("parameters") if isinstance(postgresql, dict) else None
    if not isinstance(params, dict):
        return problems
    for name, minimum in CLUSTER_WIDE_MINIMUMS.items():
        if name not in params:
            continue
        key, source = _locate(sources, ("postgresql", "parameters", name))
        try:
            value = int(str(params[name]).strip())
        except ValueError:
            problems.append(Problem(key, source, "must be an integer" + shown(key, params[name])))
            continue
        if value >= minimum:
            continue
        if strict:
            problems.append(Problem(key, source, f"must be at least {minimum} (got {value})"))
            continue
        params[name] = minimum
        warnings.append(f"{key} ({source}): {value} is below the minimum {minimum}; using {minimum}")
        sources[f"postgresql.parameters.{name}"] = (key, f"{source}, raised to the minimum {minimum}")
    return problems


def validate_dynamic(doc: Mapping[str, Any], source: str = DCS_SOURCE) -> DynamicConfig:
    """Validate a whole dynamic config (the DCS key, or a PATCH/PUT result) strictly.

    Raises ConfigError naming each bad key with ``source``: unknown keys, values under the
    PostgreSQL minimums, and the timing rule loop_wait + 2*retry_timeout <= ttl.
    """
    if not isinstance(doc, Mapping):
        raise ConfigError.one("", source, "the dynamic config must be a JSON object")
    return check_dynamic(doc, origin_of(dict(doc), source), strict=True).config
