"""The local layers (YAML file or directory < env): load, validate, and the bootstrap.dcs seed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from appliance.config.classify import keeps_string, sort_local
from appliance.config.dynamic import DynamicResult, Origin, check_dynamic
from appliance.config.envvars import env_layer
from appliance.config.errors import ConfigError, Problem
from appliance.config.schema import LocalConfig
from appliance.config.security import derive
from appliance.config.tree import Provenance, Tree, dotted, get_path, leaf_paths, merge, source_of
from appliance.config.validation import problems_from
from appliance.config.yamlfile import expand_paths, read_files_checked

_BOOTSTRAP_DCS = "bootstrap.dcs."


@dataclass(frozen=True)
class LocalLayers:
    """The local file(s) merged with the environment, before defaults and validation.

    ``data`` holds the local settings (Patroni-shaped, Patroni keys we ignore removed);
    ``dynamic`` the cluster-wide settings found locally, which only seed bootstrap.dcs;
    ``provenance`` the source of every leaf of both, by dotted key.
    """

    data: Tree
    dynamic: Tree
    provenance: Provenance
    warnings: tuple[str, ...]
    files: tuple[str, ...]


def load_local(paths: Sequence[str] | str | None, env: Mapping[str, str]) -> LocalLayers:
    """Read the local YAML (a file, a directory of *.yml/*.yaml merged in name order, or several
    of those in order; None: no file) and the environment; raise ConfigError listing every problem
    (YAML syntax with file:line, unreadable *_FILE secrets, VAR and VAR_FILE both set, unknown keys).
    """
    files, problems = expand_paths(paths)
    loaded = read_files_checked(files)
    tree, prov, file_problems = loaded.tree, loaded.prov, loaded.problems
    env_tree, env_prov, env_problems = env_layer(env, keeps_string)
    merge(tree, prov, env_tree, env_prov)
    sorted_layers = sort_local(tree, prov)
    problems += file_problems + env_problems + sorted_layers.problems
    layers = LocalLayers(
        data=sorted_layers.local,
        dynamic=sorted_layers.dynamic,
        provenance=prov,
        warnings=(*loaded.warnings, *sorted_layers.warnings),
        files=tuple(files),
    )
    if problems:
        # One run shows every problem: the values of the keys that were read are checked too.
        try:
            validate_local(layers)
        except ConfigError as exc:
            problems += [p for p in exc.problems if p not in problems]
        raise ConfigError(problems)
    return layers


def build_local(layers: LocalLayers) -> LocalConfig:
    """The validated LocalConfig (defaults filled in). Also checks the bootstrap.dcs seed, so that a
    bad bootstrap value fails at start-up rather than at cluster bootstrap. Raises ConfigError."""
    return validate_local(layers)[0]


def validate_local(layers: LocalLayers) -> tuple[LocalConfig, DynamicResult]:
    """build_local, plus the validated bootstrap seed (what runs while the DCS has no config).

    The TLS keys of each channel left unset are derived from the ``tls`` section (config/security.py);
    their provenance is in :func:`derived_provenance`."""
    problems: list[Problem] = []
    config = None
    # Defaults are the lowest layer, merged key by key: a password alone keeps the default username.
    data: Tree = LocalConfig().model_dump(mode="json")
    merge(data, {}, layers.data, {})
    try:
        config = LocalConfig.model_validate(data)
    except ValidationError as exc:
        problems += problems_from(exc, lambda path: (dotted(path), source_of(layers.provenance, dotted(path))))
    seeded = None
    try:
        seeded = seed(layers)
    except ConfigError as exc:
        problems += [p for p in exc.problems if p not in problems]
    if problems or config is None or seeded is None:
        raise ConfigError(problems)
    return derive(config, layers.data)[0], seeded


def derived_provenance(layers: LocalLayers, config: LocalConfig) -> dict[str, str]:
    """Where the derived TLS keys of ``config`` (from validate_local) came from."""
    return derive(config, layers.data)[1]


def seed(layers: LocalLayers) -> DynamicResult:
    """DynamicConfig defaults < bootstrap.dcs < local/env dynamic-only values, validated strictly."""
    doc: Tree = {}
    origin: Origin = {}
    bootstrap_dcs = get_path(layers.data, ("bootstrap", "dcs"))
    if isinstance(bootstrap_dcs, dict):
        bootstrap_origin = {
            key[len(_BOOTSTRAP_DCS):]: (key, source)
            for key, source in layers.provenance.items() if key.startswith(_BOOTSTRAP_DCS)
        }
        merge(doc, origin, bootstrap_dcs, bootstrap_origin, null_deletes=True)
    local_origin = {dotted(p): (dotted(p), layers.provenance.get(dotted(p), "default"))
                    for p in leaf_paths(layers.dynamic)}
    merge(doc, origin, layers.dynamic, local_origin, null_deletes=True)
    return check_dynamic(doc, origin, strict=True)


def bootstrap_dynamic(local_layers: LocalLayers) -> dict[str, Any]:
    """The JSON document to write into the DCS ``config`` key when this node bootstraps the
    cluster: DynamicConfig defaults < bootstrap.dcs < local/env dynamic-only values, validated
    (unknown keys, minimums and the timing rule are errors). Raises ConfigError."""
    return seed(local_layers).config.model_dump(mode="json", exclude_none=True)
