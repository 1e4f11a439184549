"""The effective configuration: local layers resolved against the dynamic (DCS) config."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from appliance.config.dynamic import DCS_SOURCE, DynamicResult, check_dynamic, origin_of
from appliance.config.errors import ConfigError, redact
from appliance.config.local_layers import LocalLayers, derived_provenance, validate_local
from appliance.config.schema import DynamicConfig, LocalConfig, split_listen
from appliance.config.tree import MISSING, dotted, flatten, get_path, leaf_paths, same_setting, source_of

CLUSTER_WIDE_REASON = "cluster-wide: change it with edit-config / PATCH /config"
BOOTSTRAP_REASON = ("bootstrap.dcs seeds the DCS config only when the cluster is bootstrapped: "
                    "change it with edit-config / PATCH /config")
LISTEN_REASON = "set from postgresql.listen: change postgresql.listen instead"


@dataclass(frozen=True)
class NotApplied:
    """A local or env value this node does not apply; ``in_use`` is the value in effect."""

    key: str
    value: Any
    source: str
    reason: str
    in_use: Any = None

    def __str__(self) -> str:
        return (f"{self.key}={self.value!r} ({self.source}) not applied, {self.in_use!r} in use: "
                f"{self.reason}")


@dataclass(frozen=True)
class Effective:
    """What this node runs with.

    ``dynamic`` is defaults < bootstrap.dcs seed (only while the DCS has no config) < DCS config;
    ``postgresql_parameters`` what goes into postgresql.conf (dynamic < local < env, cluster-wide
    ones from the dynamic config only, listen_addresses/port from postgresql.listen);
    ``provenance`` the source of every leaf of the effective view (see :func:`flat_view`).
    """

    local: LocalConfig
    dynamic: DynamicConfig
    postgresql_parameters: dict[str, Any]
    provenance: dict[str, str]
    not_applied: tuple[NotApplied, ...]
    warnings: tuple[str, ...]

    @property
    def pg_hba(self) -> list[str] | None:
        """Local postgresql.pg_hba when set, else the dynamic one (Patroni's rule)."""
        local = self.local.postgresql.pg_hba
        return local if local is not None else self.dynamic.postgresql.pg_hba


def resolve(local_layers: LocalLayers, dynamic: Mapping[str, Any] | None,
            validated: tuple[LocalConfig, DynamicResult] | None = None) -> Effective:
    """Resolve the local layers against ``dynamic`` (the parsed DCS ``config`` key, or None when
    the DCS has none yet). Raises ConfigError for a bad local layer or a bad DCS document.
    ``validated``: what :func:`validate_local` returned for these layers (a caller that resolves
    the same layers again and again validates them once)."""
    return _resolve(local_layers, validated or validate_local(local_layers), dynamic, DCS_SOURCE)


def resolve_or_last_good(
    local_layers: LocalLayers, dynamic: Mapping[str, Any] | None, last_good: Mapping[str, Any] | None
) -> tuple[Effective, ConfigError | None]:
    """Like :func:`resolve`, but a bad DCS document does not stop the node: resolve against
    ``last_good`` (the last DCS document that resolved; None: the bootstrap.dcs seed) and return
    the error beside it for the caller to report. Local errors still raise: the operator fixes them.
    """
    validated = validate_local(local_layers)
    try:
        return _resolve(local_layers, validated, dynamic, DCS_SOURCE), None
    except ConfigError as exc:
        fallback = _resolve(local_layers, validated, last_good, f"{DCS_SOURCE} (last good)")
        note = "the last good DCS config" if last_good is not None else "the bootstrap.dcs seed"
        warnings = (f"DCS config rejected, running with {note}: {exc}", *fallback.warnings)
        return Effective(fallback.local, fallback.dynamic, fallback.postgresql_parameters,
                         fallback.provenance, fallback.not_applied, warnings), exc


def _resolve(
    layers: LocalLayers, validated: tuple[LocalConfig, DynamicResult], dynamic: Mapping[str, Any] | None,
    source: str,
) -> Effective:
    local, seeded = validated
    if dynamic is None:
        result = seeded
        warnings = layers.warnings
    elif not isinstance(dynamic, Mapping):
        raise ConfigError.one("", source, "the dynamic config must be a JSON object")
    else:
        result = check_dynamic(dynamic, origin_of(dict(dynamic), source), strict=False)
        warnings = layers.warnings + result.warnings
    params, param_sources, not_applied = _parameters(layers, local, result)
    if dynamic is not None:
        not_applied = _not_applied(layers, local, result) + not_applied
    view = flat_view(local, result.config, params)
    local_keys = set(flat_view(local, None, {}))
    local_prov = {**derived_provenance(layers, local), **layers.provenance}
    provenance = {}
    for key in view:
        name = key.removeprefix("postgresql.parameters.")
        if name != key and name in param_sources:
            provenance[key] = param_sources[name]
        elif key in local_keys:
            provenance[key] = local_prov.get(key, "default")
        else:
            provenance[key] = result.sources.get(key, "default")
    return Effective(local, result.config, params, provenance, tuple(not_applied), tuple(warnings))


def _parameters(
    layers: LocalLayers, local: LocalConfig, result: DynamicResult
) -> tuple[dict[str, Any], dict[str, str], list[NotApplied]]:
    params: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, value in result.config.postgresql.parameters.items():
        params[name.lower()] = value
        sources[name.lower()] = result.sources.get(f"postgresql.parameters.{name}", "default")
    for name, value in local.postgresql.parameters.items():
        if value is None:  # a local null unsets a dynamic parameter on this node
            params.pop(name.lower(), None)
            sources.pop(name.lower(), None)
            continue
        params[name.lower()] = value
        sources[name.lower()] = layers.provenance.get(f"postgresql.parameters.{name}", "default")
    addresses, port = split_listen(local.postgresql.listen)
    listen_source = f"{source_of(layers.provenance, 'postgresql.listen')} (postgresql.listen)"
    not_applied = []
    for name, value in (("listen_addresses", addresses), ("port", port)):
        if name in params and not same_setting(params[name], value):
            not_applied.append(NotApplied(f"postgresql.parameters.{name}", params[name], sources[name],
                                          LISTEN_REASON, value))
        params[name] = value
        sources[name] = listen_source
    return params, sources, not_applied


def _not_applied(layers: LocalLayers, local: LocalConfig, result: DynamicResult) -> list[NotApplied]:
    """Local/env dynamic-only values, and bootstrap.dcs values, that differ from the DCS config."""
    in_use_doc = result.config.model_dump(mode="json")
    out = []
    local_paths = leaf_paths(layers.dynamic)
    for path in local_paths:
        key = dotted(path)
        out += _differs(key, path, layers, in_use_doc, layers.dynamic, CLUSTER_WIDE_REASON)
    for path in leaf_paths(local.bootstrap.dcs):
        if any(path[: len(p)] == p or p[: len(path)] == path for p in local_paths):
            continue  # a local/env value for the same key is the one reported
        out += _differs(f"bootstrap.dcs.{dotted(path)}", path, layers, in_use_doc, local.bootstrap.dcs,
                        BOOTSTRAP_REASON)
    return out


def _differs(name: str, path: tuple[str, ...], layers: LocalLayers, in_use_doc: dict[str, Any],
             doc: dict[str, Any], reason: str) -> list[NotApplied]:
    value = get_path(doc, path)
    in_use = get_path(in_use_doc, path)
    in_use = None if in_use is MISSING else in_use
    if same_setting(value, in_use):
        return []
    source = layers.provenance.get(name, "default")
    return [NotApplied(name, redact(name, value), source, reason, redact(name, in_use))]


def flat_view(local: LocalConfig, dynamic: DynamicConfig | None, params: Mapping[str, Any]) -> dict[str, Any]:
    """The effective configuration as one flat mapping, dotted key -> value: dynamic leaves (ttl,
    postgresql.use_slots, ...), local leaves over them, then postgresql.parameters.<name>."""
    view: dict[str, Any] = {}
    if dynamic is not None:
        dyn = dynamic.model_dump(mode="json")
        dyn["postgresql"].pop("parameters", None)
        view.update(flatten(dyn))
    loc = local.model_dump(mode="json")
    loc["postgresql"].pop("parameters", None)
    if local.postgresql.pg_hba is None:
        loc["postgresql"].pop("pg_hba", None)
    view.update(flatten(loc))
    view.update({f"postgresql.parameters.{k}": v for k, v in params.items()})
    return view
