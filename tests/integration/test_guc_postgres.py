"""The GUC validator against the real PostgreSQL 15 binary: catalog, value checks, conf round trip."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from appliance.postgres.confsyntax import quote_conf_value
from appliance.postgres.guc import PostgresValueChecker, validate_parameters
from appliance.postgres.guc_catalog import INTERNAL_PARAMETERS, GucCatalog, load_catalog
from appliance.postgres.process import Runner
from tests.support.pg import PG_BIN, pg_available, postgres_tempdir

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not pg_available(), reason=f"{PG_BIN}/postgres is missing"),
]


@pytest.fixture(scope="module")
def runner() -> Runner:
    return Runner("postgres" if os.geteuid() == 0 else None)


@pytest.fixture(scope="module")
def workdir() -> Iterator[str]:
    path = postgres_tempdir("pgappl-guc-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def checker(runner: Runner, workdir: str) -> PostgresValueChecker:
    return PostgresValueChecker(PG_BIN, runner, work_parent=workdir)


@pytest.fixture(scope="module")
def catalog(runner: Runner) -> GucCatalog:
    return load_catalog(PG_BIN, runner)


def test_real_catalog(catalog: GucCatalog, runner: Runner) -> None:
    assert len(catalog) > 300
    work_mem = catalog.get("work_mem")
    assert work_mem is not None and (work_mem.vartype, work_mem.context) == ("INTEGER", "user")
    assert load_catalog(PG_BIN + "/", runner) is catalog  # cached per bin_dir


def test_bad_values_get_postgresqls_message(checker: PostgresValueChecker) -> None:
    [problem] = checker.check({"work_mem": "banana"})
    assert problem.name == "work_mem"
    assert 'invalid value for parameter "work_mem": "banana"' in problem.reason
    [problem] = checker.check({"wal_level": "banana"})
    assert "Available values: minimal, replica, logical." in problem.reason


def test_good_values_pass(checker: PostgresValueChecker) -> None:
    good = {"work_mem": "64MB", "wal_level": "logical", "shared_buffers": "1GB", "pg_stat_statements.max": "1000"}
    assert checker.check(good) == []


def test_every_bad_value_is_reported(checker: PostgresValueChecker) -> None:
    values = {"work_mem": "banana", "wal_level": "banana", "shared_buffers": "1GB", "max_connections": "0"}
    found = {p.name: p.reason for p in checker.check(values)}
    assert set(found) == {"work_mem", "wal_level", "max_connections"}
    assert "outside the valid range" in found["max_connections"]


def test_a_message_routed_away_by_another_parameter_is_recovered(checker: PostgresValueChecker) -> None:
    # log_destination=syslog in the same run swallows the FATAL; the per-parameter rerun has it.
    [problem] = checker.check({"log_destination": "syslog", "work_mem": "banana"})
    assert problem.name == "work_mem" and "banana" in problem.reason


def test_validate_parameters_end_to_end(catalog: GucCatalog, checker: PostgresValueChecker) -> None:
    params = {"WORK_MEM": "banana", "eval_bogus_param": "1", "work_mem\nprimary_slot_name": "evil",
              "shared_buffers": "128MB", "hot_standby": True, "archive_command": "cp %p /a/%f"}  # fmt: skip
    found = {p.name: p.reason for p in validate_parameters(params, layer="dynamic", catalog=catalog, checker=checker)}
    assert set(found) == {"WORK_MEM", "eval_bogus_param", "work_mem\nprimary_slot_name", "hot_standby",
                          "archive_command"}  # fmt: skip
    assert "banana" in found["WORK_MEM"]


def test_internal_list_is_read_only_in_postgresql(catalog: GucCatalog, checker: PostgresValueChecker) -> None:
    for name in sorted(INTERNAL_PARAMETERS):
        assert name not in catalog  # --describe-config leaves them out
        [problem] = checker.check({name: "1"})
        assert "cannot be changed" in problem.reason or "unrecognized" in problem.reason, (name, problem.reason)


def test_quoted_values_read_back_exactly(runner: Runner, workdir: str) -> None:
    """What quote_conf_value writes, PostgreSQL's own conf parser reads back unchanged."""
    values = ["it's", "C:\\dir\\", "'; primary_slot_name = 'evil", "a\tb # not a comment", "é ü \x01 \x7f", ""]
    conf_dir = postgres_tempdir("pgappl-gucconf-")
    try:
        for value in values:
            with open(os.path.join(conf_dir, "postgresql.conf"), "w", encoding="utf-8") as f:
                f.write(f"appliance_test.value = {quote_conf_value(value)}\n")
            if os.geteuid() == 0 and runner.owner:
                runner.owner.apply(os.path.join(conf_dir, "postgresql.conf"))
            os.chmod(conf_dir, 0o700)
            result = runner.run([f"{PG_BIN}/postgres", "-D", conf_dir, "-C", "appliance_test.value"], timeout=10)
            assert result.ok, result.output
            printed = [line for line in result.output.split("\n") if " LOG: " not in line]
            assert printed[0] == value
    finally:
        shutil.rmtree(conf_dir, ignore_errors=True)


def test_a_bad_parameter_from_the_environment_is_refused_naming_the_variable() -> None:
    """work_mem=banana used to start a container Docker called healthy while PostgreSQL never ran."""
    from appliance.config import build_local, load_local
    from appliance.postgres.validate import check_local

    layers = load_local(None, {"APPLIANCE_POSTGRESQL__PARAMETERS__WORK_MEM": "banana",
                               "APPLIANCE_POSTGRESQL__PARAMETERS__SHARED_BUFFERS": "256MB"})
    problems = check_local(build_local(layers), layers.provenance)
    assert [(p.key, p.source) for p in problems] == [
        ("postgresql.parameters.work_mem", "env APPLIANCE_POSTGRESQL__PARAMETERS__WORK_MEM")]
    assert 'invalid value for parameter "work_mem"' in problems[0].reason and "'banana'" in problems[0].reason
