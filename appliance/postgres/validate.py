"""PostgreSQL settings checked against the PostgreSQL that runs, before anything is written.

One entry point per layer: :func:`check_dynamic` for a dynamic (DCS) document (PATCH/PUT /config,
edit-config, and the manager before it applies what it reads), :func:`check_local` for the node's
own YAML and env at start-up. Each problem names the key as the operator wrote it and its source
(the env variable, the file line), so ``work_mem=banana`` fails fast naming
APPLIANCE_POSTGRESQL__PARAMETERS__WORK_MEM instead of a PostgreSQL that never starts.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from appliance.config.errors import Problem, shown
from appliance.config.schema import LocalConfig
from appliance.config.security import postgresql_tls_files
from appliance.postgres import hba
from appliance.postgres.guc import GucCheckError, Layer, PostgresValueChecker, ValueChecker, validate_parameters
from appliance.postgres.guc_catalog import GucCatalog, GucCatalogError, load_catalog
from appliance.postgres.process import Runner

# (catalog, checker) for a bin_dir: the real postgres binary, or fakes in unit tests.
Checks = Callable[[str], tuple[GucCatalog, ValueChecker]]


def postgres_checks(bin_dir: str) -> tuple[GucCatalog, ValueChecker]:
    """The catalog and value checker of ``bin_dir``'s postgres, run as PostgreSQL's OS user."""
    runner = Runner("postgres" if os.geteuid() == 0 else None)
    return load_catalog(bin_dir, runner), PostgresValueChecker(bin_dir, runner)


def _parameters(params: Mapping[str, Any], layer: Layer, local: LocalConfig, where: Callable[[str], tuple[str, str]],
                checks: Checks) -> list[Problem]:
    if not params:
        return []
    try:
        catalog, checker = checks(local.postgresql.bin_dir)
        found = validate_parameters(params, layer=layer, catalog=catalog, checker=checker,
                                    allow_commands_from_dcs=local.security.commands_from_dcs)
    except (GucCatalogError, GucCheckError) as exc:  # fail closed: nothing unchecked is written
        return [Problem("postgresql.parameters", "postgresql.bin_dir", f"cannot check the parameters: {exc}")]
    out = []
    for problem in found:
        key, source = where(str(problem.name))
        out.append(Problem(key, source, problem.reason + shown(key, params.get(problem.name))))
    return out


def _hba(lines: Any, key: str, source: str, ssl: bool) -> list[Problem]:
    if lines is None:
        return []
    if not isinstance(lines, list):
        return [Problem(key, source, "must be a list of pg_hba lines")]
    return [Problem(f"{key}[{index}]", source, f"pg_hba line {why}") for index, why in hba.problems(lines, ssl=ssl)]


def _section(doc: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = doc.get(key)
    return value if isinstance(value, Mapping) else {}


def check_dynamic(doc: Mapping[str, Any], local: LocalConfig, source: str,
                  checks: Checks = postgres_checks) -> list[Problem]:
    """The parameters and pg_hba of a dynamic document (``source`` names where it comes from)."""
    postgresql = _section(doc, "postgresql")
    params = _section(postgresql, "parameters")
    ssl = postgresql_tls_files(local) is not None
    problems = _parameters(params, "dynamic", local, lambda name: (f"postgresql.parameters.{name}", source), checks)
    return problems + _hba(postgresql.get("pg_hba"), "postgresql.pg_hba", source, ssl)


def check_local(local: LocalConfig, provenance: Mapping[str, str], checks: Checks = postgres_checks,
                bootstrap_dcs: Mapping[str, Any] | None = None) -> list[Problem]:
    """The node's own parameters and pg_hba lines (and the bootstrap.dcs seed, a dynamic document)."""
    def where(prefix: str) -> Callable[[str], tuple[str, str]]:
        return lambda name: (f"{prefix}{name}", provenance.get(f"{prefix}{name}", "default"))

    ssl = postgresql_tls_files(local) is not None
    problems = _parameters(local.postgresql.parameters, "local", local, where("postgresql.parameters."), checks)
    seed = bootstrap_dcs if bootstrap_dcs is not None else local.bootstrap.dcs
    seed_pg = _section(seed, "postgresql")
    seed_params = _section(seed_pg, "parameters")
    problems += _parameters(seed_params, "dynamic", local, where("bootstrap.dcs.postgresql.parameters."), checks)
    for key, lines in (("postgresql.pg_hba", local.postgresql.pg_hba), ("bootstrap.pg_hba", local.bootstrap.pg_hba),
                       ("bootstrap.dcs.postgresql.pg_hba", seed_pg.get("pg_hba"))):
        problems += _hba(lines, key, provenance.get(key, _first(provenance, key)), ssl)
    return problems


def _first(provenance: Mapping[str, str], key: str) -> str:
    found: Sequence[str] = [v for k, v in sorted(provenance.items()) if k.startswith(key)]
    return found[0] if found else "default"
