"""Unit tests of the GUC validator: describe-config parsing, every name rule, quoting, a property test."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.postgres.confsyntax import CUSTOM_NAME_RE, NAME_RE, quote_conf_value, render_value
from appliance.postgres.files import parse_appliance_conf
from appliance.postgres.guc import (
    FakeValueChecker,
    GucProblem,
    Layer,
    needs_restart,
    validate_parameters,
)
from appliance.postgres.guc_catalog import GucInfo, parse_describe_config, parse_describe_line

# Real lines of PostgreSQL 15's --describe-config (descriptions cut), plus one made-up internal entry.
_LINES = [
    "work_mem\tuser\tResource Usage / Memory\tINTEGER\t0\t64\t2147483647\tSets the maximum memory.\t",
    "wal_level\tpostmaster\tWrite-Ahead Log / Settings\tENUM\treplica\t\t\tSets the level of WAL.\t",
    "shared_buffers\tpostmaster\tResource Usage / Memory\tINTEGER\t0\t16\t1073741823\tShared buffers.\t",
    "random_page_cost\tuser\tQuery Tuning / Planner Cost Constants\tREAL\t0\t0\t1.79769e+308\tCost.\t",
    'search_path\tuser\tClient Connection Defaults / Statement Behavior\tSTRING\t"$user", public\t\t\tOrder.\t',
    "TimeZone\tuser\tClient Connection Defaults / Locale and Formatting\tSTRING\tGMT\t\t\tTime zone.\t",
    "log_connections\tsuperuser-backend\tReporting and Logging / What to Log\tBOOLEAN\tFALSE\t\t\tLogs.\t",
    "fake_internal_guc\tinternal\tPreset Options\tINTEGER\t8192\t8192\t8192\tMade up for the test.\t",
]
_IN_CATALOG = [
    "hot_standby", "archive_command", "restore_command", "archive_cleanup_command", "recovery_end_command",
    "ssl_passphrase_command", "archive_library", "dynamic_library_path", "shared_preload_libraries",
    "local_preload_libraries", "session_preload_libraries", "listen_addresses", "unix_socket_directories",
    "primary_conninfo", "primary_slot_name", "synchronous_standby_names", "recovery_target_time",
    "recovery_target_timeline", "recovery_target_action", "data_directory", "hba_file", "ident_file",
    "external_pid_file", "cluster_name", "ssl_cert_file", "ssl_key_file", "ssl_ca_file", "promote_trigger_file", "ssl",
]  # fmt: skip
SAMPLE = "\n".join(
    _LINES
    + [f"{n}\tsighup\tSome / Group\tSTRING\t\t\t\tA string.\tLonger text." for n in _IN_CATALOG]
    + ["port\tpostmaster\tConnections\tINTEGER\t0\t1\t65535\tPort.\t"]
)
CATALOG = parse_describe_config(SAMPLE)


def problems(params: dict[str, Any], layer: Layer = "local", **kwargs: Any) -> list[GucProblem]:
    return validate_parameters(params, layer=layer, catalog=CATALOG, checker=FakeValueChecker(), **kwargs)


def test_parser_reads_types_bounds_and_context() -> None:
    assert len(CATALOG) == len(_LINES) + len(_IN_CATALOG) + 1
    assert CATALOG.get("work_mem") == GucInfo("work_mem", "user", "INTEGER", 64, 2147483647)
    assert CATALOG.get("random_page_cost") == GucInfo("random_page_cost", "user", "REAL", 0.0, 1.79769e308)
    assert CATALOG.get("wal_level") == GucInfo("wal_level", "postmaster", "ENUM", None, None)
    timezone = CATALOG.get("timezone")
    assert timezone is not None and timezone.name == "TimeZone"
    assert "TIMEZONE" in CATALOG and "nope" not in CATALOG


def test_parser_skips_noise_and_refuses_malformed_lines() -> None:
    assert len(parse_describe_config("LOG:  some noise\n" + _LINES[0] + "\n\n")) == 1
    with pytest.raises(ValueError, match="fields"):
        parse_describe_line("work_mem\tuser\tgroup")
    with pytest.raises(ValueError, match="context"):
        parse_describe_line("work_mem\twhenever\tg\tINTEGER\t0\t1\t2\t")
    with pytest.raises(ValueError, match="min/max"):
        parse_describe_line("work_mem\tuser\tg\tINTEGER\t0\tlow\t2\t")
    with pytest.raises(ValueError, match="no parameters"):
        parse_describe_config("")


OK = ""
RULES: list[tuple[str, Any, Layer, str]] = [
    ("work_mem", "64MB", "local", OK),
    ("work_mem", "64MB", "dynamic", OK),
    ("WORK_MEM", 65536, "dynamic", OK),
    ("TimeZone", "UTC", "local", OK),
    ("random_page_cost", 1.1, "dynamic", OK),
    ("log_connections", True, "dynamic", OK),
    ("pg_stat_statements.max", 1000, "dynamic", OK),
    ("search_path", '"$user", public', "dynamic", OK),
    ("eval_bogus_param", "1", "local", "unknown parameter"),
    ("transaction_isolation", "serializable", "local", "unknown parameter"),
    ("include", "/etc/passwd", "local", "directive"),
    ("include_if_exists", "x.conf", "dynamic", "directive"),
    ("fake_internal_guc", 4096, "local", "read-only, set at initdb/compile time"),
    ("block_size", 4096, "local", "read-only"),
    ("server_version", "99", "dynamic", "read-only"),
    ("recovery_target_lsn", "0/1", "local", "managed by the appliance"),  # not in the sample: prefix rule
]
RULES += [(n, "x", layer, "managed by the appliance") for n in (
    "listen_addresses", "port", "unix_socket_directories", "primary_conninfo", "primary_slot_name",
    "synchronous_standby_names", "recovery_target_time", "recovery_target_timeline", "recovery_target_action",
    "hot_standby", "data_directory", "config_file", "hba_file", "ident_file", "external_pid_file",
    "cluster_name", "promote_trigger_file", "Port",
) for layer in ("local", "dynamic")]  # fmt: skip
RULES += [(n, "x", "dynamic", "node-local TLS setting") for n in (
    "ssl", "ssl_cert_file", "ssl_key_file", "ssl_ca_file")]  # fmt: skip
RULES += [(n, "x", "local", OK) for n in ("ssl_cert_file", "ssl_key_file", "ssl_ca_file")]
COMMAND_NAMES = (
    "archive_command", "restore_command", "archive_cleanup_command", "recovery_end_command",
    "ssl_passphrase_command", "archive_library", "dynamic_library_path",
)  # fmt: skip
RULES += [(n, "cp %p /x/%f", "local", OK) for n in COMMAND_NAMES]
RULES += [(n, "cp %p /x/%f", "dynamic", "local YAML/env only") for n in COMMAND_NAMES]
for _lib in ("shared_preload_libraries", "local_preload_libraries", "session_preload_libraries"):
    RULES += [
        (_lib, "pg_stat_statements, auto_explain", "dynamic", OK),
        (_lib, "pg_stat_statements, /tmp/evil.so", "dynamic", "local YAML/env only"),
        (_lib, '"$libdir/x"', "dynamic", "local YAML/env only"),
        (_lib, "pg_stat_statements, /tmp/evil.so", "local", OK),
    ]


@pytest.mark.parametrize(("name", "value", "layer", "expected"), RULES)
def test_rules(name: str, value: Any, layer: Layer, expected: str) -> None:
    found = problems({name: value}, layer)
    if expected == OK:
        assert found == []
    else:
        assert len(found) == 1 and found[0].name == name
        assert expected in found[0].reason, found[0].reason


def test_commands_from_dcs_only_with_the_explicit_flag() -> None:
    params = {"archive_command": "cp %p /a/%f", "shared_preload_libraries": "/opt/x.so"}
    assert len(problems(params, "dynamic")) == 2
    assert problems(params, "dynamic", allow_commands_from_dcs=True) == []


@pytest.mark.parametrize(
    "name",
    ["work_mem\nprimary_slot_name", "work_mem'", "work_mem=1", "work mem", "", "1work_mem", "a.b.c",
     "custom.bad$", "work-mem", "work_mem\n", "wor\u212a_mem", "\u00e9t\u00e9", "a.", ".a"],
)  # fmt: skip
def test_illegal_names_are_refused(name: str) -> None:
    [problem] = problems({name: "1"})
    assert problem.name == name and "not a parameter name" in problem.reason


def test_names_are_case_insensitive_and_duplicates_refused() -> None:
    assert problems({"Work_Mem": "1MB"}) == []
    [problem] = problems({"work_mem": "1MB", "WORK_MEM": "2MB"})
    assert problem.name == "WORK_MEM" and "more than once" in problem.reason


@pytest.mark.parametrize(
    "value", ["x\nprimary_slot_name = 'evil'", "a\rb", "nul\0", "a\x0bb", "a\x0cb", "a\u2028b", "\x85", "\ud800"]
)
def test_values_with_line_breaks_or_nul_are_refused(value: str) -> None:
    [problem] = problems({"search_path": value})
    assert problem.name == "search_path"
    with pytest.raises(ValueError):
        quote_conf_value(value)


@pytest.mark.parametrize("value", [["a", "b"], {"a": 1}, ("a",), b"bytes", object()])
def test_values_of_other_types_are_refused(value: Any) -> None:
    [problem] = problems({"search_path": value})
    assert "not a parameter value" in problem.reason


def test_none_means_unset_and_is_skipped() -> None:
    checker = FakeValueChecker()
    params = {"port": None, "work_mem": None}
    assert validate_parameters(params, layer="dynamic", catalog=CATALOG, checker=checker) == []
    assert checker.calls == []


def test_values_reach_the_checker_rendered_and_lower_cased_only_after_the_rules() -> None:
    checker = FakeValueChecker(reject=lambda n, v: "bad value" if v == "banana" else None)
    params = {"WORK_MEM": "banana", "log_connections": False, "random_page_cost": 1.5, "port": 5}
    found = validate_parameters(params, layer="local", catalog=CATALOG, checker=checker)
    assert checker.calls == [{"work_mem": "banana", "log_connections": "off", "random_page_cost": "1.5"}]
    assert [(p.name, p.reason) for p in found] == [("port", found[0].reason), ("WORK_MEM", "bad value")]


def test_needs_restart() -> None:
    assert needs_restart("shared_buffers", CATALOG) and needs_restart("WAL_LEVEL", CATALOG)
    assert not needs_restart("work_mem", CATALOG)
    assert not needs_restart("pg_stat_statements.max", CATALOG)


@pytest.mark.parametrize(
    ("value", "quoted"),
    [(True, "'on'"), (False, "'off'"), (5, "'5'"), (1.5, "'1.5'"), ("64MB", "'64MB'"), ("it's", "'it''s'"),
     ("C:\\x", "'C:\\\\x'"), ("", "''"), ("a\tb", "'a\tb'"), ('"$user", public', "'\"$user\", public'")],
)  # fmt: skip
def test_quote_conf_value(value: Any, quoted: str) -> None:
    from appliance.postgres.files import conf_value

    assert quote_conf_value(value) == quoted == conf_value(value)


def test_render_value_refuses_containers() -> None:
    assert render_value(0) == "0"
    with pytest.raises(ValueError):
        render_value([1])


# PostgreSQL's guc-file.l: ID, QUALIFIED_ID, '=', a quoted STRING (no newline; '' and \x escapes).
_PG_LINE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?) = '((?:[^'\\\n]|\\.|'')*)'")


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.one_of(
            st.text(max_size=12), st.sampled_from(sorted(CATALOG)), st.from_regex(CUSTOM_NAME_RE, fullmatch=True)
        ),
        st.one_of(st.text(max_size=20), st.integers(), st.booleans()),
        max_size=6,
    )
)
def test_accepted_parameters_render_as_exactly_one_assignment_each(params: dict[str, Any]) -> None:
    if problems(params, "local", allow_commands_from_dcs=True):
        return
    lines = []
    for name, value in params.items():
        lower = name.lower()
        builtin = NAME_RE.fullmatch(lower) and lower in CATALOG
        assert name.isascii() and (builtin or CUSTOM_NAME_RE.fullmatch(lower))
        text = render_value(value)
        assert not set(text) & set("\0\n\r")
        lines.append(f"{lower} = {quote_conf_value(value)}")
        assert _PG_LINE.fullmatch(lines[-1]), lines[-1]
    rendered = "\n".join(lines)
    assert len(rendered.split("\n")) == len(params) == len(rendered.splitlines()) or not params
    assert parse_appliance_conf(rendered) == {n.lower(): render_value(v) for n, v in params.items()}
