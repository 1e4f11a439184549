"""The local YAML loader against hostile or careless files: one-line errors with file:line, bounded work."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.config.errors import ConfigError
from appliance.config.yamlfile import (
    MAX_FILE_BYTES,
    MAX_VALUES,
    read_files,
    read_files_checked,
    read_yaml,
    read_yaml_checked,
)


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def refused(path: str) -> str:
    """The error message for a file that must be refused; every message is one line."""
    with pytest.raises(ConfigError) as err:
        read_yaml(path)
    message = str(err.value)
    assert "\n" not in message
    assert f"file {path}" in message
    return message


def billion_laughs(levels: int = 9) -> str:
    names = "abcdefghijklmnop"
    lines = ["a: &a [" + ", ".join(['"lol"'] * 9) + "]"]
    lines += [f"{names[i]}: &{names[i]} [" + ", ".join([f"*{names[i - 1]}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def merge_laughs() -> str:
    """Billion laughs through merge keys: few values come out, but merging is exponential."""
    names = "abcdefghi"
    lines = ["a: &a {x: 1}"]
    lines += [f"{names[i]}: &{names[i]} {{<<: [" + ", ".join([f"*{names[i - 1]}"] * 9) + "]}" for i in range(1, 9)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(("text", "line"), [
    ("scope: s\na: &x [1, *x]\n", 2),
    ("scope: s\na: &x\n  b:\n    c: *x\n", 4),
    ("a: &x\n  <<: *x\n", 2),
])
def test_recursive_alias_is_one_line_error(tmp_path: Path, text: str, line: int) -> None:
    path = write(tmp_path / "r.yml", text)
    assert f"file {path}:{line}: recursive YAML alias (&x refers to itself)" in refused(path)


@pytest.mark.parametrize("text", [
    billion_laughs(),
    merge_laughs(),
])
def test_billion_laughs_stops_early(tmp_path: Path, text: str) -> None:
    path = write(tmp_path / "lol.yml", text)
    # The refusal names the count it stopped at; a reader without the limit would walk 10^9 values
    # (the suite's timeout ends it). No wall-clock bound: it failed at 2 s on a loaded machine (0.07 s idle).
    message = refused(path)
    assert f"the file expands to more than {MAX_VALUES} values (YAML aliases?)" in message


def test_a_few_levels_of_aliases_are_fine(tmp_path: Path) -> None:
    tree, _prov = read_yaml(write(tmp_path / "lol.yml", billion_laughs(4)))
    assert tree["d"][8][8][8] == ["lol"] * 9


@pytest.mark.parametrize("text", [
    "a: " + "[" * 200 + "]" * 200 + "\n",
    "a:\n" + "".join(f"{'  ' * i}k{i}:\n" for i in range(1, 200)) + "  " * 200 + "v: 1\n",
    "".join(f"a{i}: &a{i} [{f'*a{i - 1}' if i else 1}]\n" for i in range(200)),  # deep only once expanded
    "".join(f"a{i}: &a{i} {{{f'<<: *a{i - 1}, ' if i else ''}k{i}: 1}}\n" for i in range(500)),  # merge chain
])
def test_deep_nesting_is_refused_without_recursion_error(tmp_path: Path, text: str) -> None:
    assert "nested more than 64 levels deep" in refused(write(tmp_path / "deep.yml", text))


def test_very_deep_flow_nesting_is_refused(tmp_path: Path) -> None:
    refused(write(tmp_path / "deep.yml", "a: " + "[" * 100_000 + "\n"))


ANCHORS = """\
defaults: &defaults
  ttl: 30
  loop_wait: 10
  postgresql:
    use_pg_rewind: true
bootstrap:
  dcs:
    <<: *defaults
    loop_wait: 5
tags: &tags {nofailover: false, clonefrom: true}
more_tags: *tags
first: &first {a: 1, b: 1}
second: &second {b: 2, c: 2}
both:
  <<: [*first, *second]
  c: 3
"""


def test_anchors_and_merge_keys_load_with_provenance(tmp_path: Path) -> None:
    path = write(tmp_path / "a.yml", ANCHORS)
    tree, prov = read_yaml(path)
    assert tree["bootstrap"]["dcs"] == {"ttl": 30, "loop_wait": 5, "postgresql": {"use_pg_rewind": True}}
    assert tree["more_tags"] == {"nofailover": False, "clonefrom": True}
    assert tree["both"] == {"a": 1, "b": 1, "c": 3}  # earlier mappings in the list win, own keys win over all
    assert prov["bootstrap.dcs.ttl"] == f"file {path}:2"  # a merged key keeps the line it is written on
    assert prov["bootstrap.dcs.loop_wait"] == f"file {path}:9"
    assert prov["bootstrap.dcs.postgresql.use_pg_rewind"] == f"file {path}:5"
    assert prov["more_tags.nofailover"] == f"file {path}:10"
    assert prov["both.c"] == f"file {path}:16"
    assert prov["both.b"] == f"file {path}:12"


def test_own_key_overriding_a_merged_key_is_not_a_duplicate(tmp_path: Path) -> None:
    tree, _prov = read_yaml(write(tmp_path / "a.yml", "base: &b {ttl: 30}\nnode:\n  ttl: 20\n  <<: *b\n"))
    assert tree["node"] == {"ttl": 20}


@pytest.mark.parametrize(("text", "key", "lines"), [
    ("ttl: 30\nscope: s\nttl: 20\n", "ttl", (1, 3)),
    ("scope: s\nbootstrap:\n  dcs:\n    ttl: 30\n    loop_wait: 10\n    ttl: 20\n", "bootstrap.dcs.ttl", (4, 6)),
    ("base: &b\n  ttl: 1\n  ttl: 2\nnode:\n  <<: *b\n", "base.ttl", (2, 3)),
])
def test_duplicate_key_names_key_and_both_lines(tmp_path: Path, text: str, key: str, lines: tuple[int, int]) -> None:
    path = write(tmp_path / "d.yml", text)
    message = refused(path)
    name = key.rsplit(".", 1)[-1]
    assert f"{key} (file {path}:{lines[1]}): duplicate key '{name}' (lines {lines[0]} and {lines[1]})" in message


@pytest.mark.parametrize("key", ["1", "null", "true", "1.5", "2024-01-01", "[a, b]", "{a: 1}"])
def test_non_string_key_names_the_line(tmp_path: Path, key: str) -> None:
    path = write(tmp_path / "k.yml", f"scope: s\ntags:\n  ? {key}\n  : x\n")
    message = refused(path)
    assert f"file {path}:3" in message
    assert "key" in message


def test_quoted_keys_are_strings(tmp_path: Path) -> None:
    tree, _prov = read_yaml(write(tmp_path / "k.yml", "tags:\n  '1': x\n  \"null\": y\n  !!str true: z\n"))
    assert tree == {"tags": {"1": "x", "null": "y", "true": "z"}}


@pytest.mark.parametrize("text", ["", "\n\n", "# only\n# comments\n", "---\n", "~\n"])
def test_empty_file_gives_no_settings_and_a_warning(tmp_path: Path, text: str) -> None:
    path = write(tmp_path / "e.yml", text)
    assert read_yaml_checked(path) == ({}, {}, [f"file {path} is empty: no settings read"])
    assert read_yaml(path) == ({}, {})
    result = read_files_checked([path])
    assert (result.tree, result.prov, result.problems) == ({}, {}, [])
    assert result.warnings == [f"file {path} is empty: no settings read"]


def test_read_files_keeps_its_shape_and_reads_the_good_files(tmp_path: Path) -> None:
    good = write(tmp_path / "a.yml", "scope: s\n")
    bad = write(tmp_path / "b.yml", "a: &x [*x]\n")
    empty = write(tmp_path / "c.yml", "")
    tree, prov, problems = read_files([good, bad, empty])
    assert tree == {"scope": "s"}
    assert prov == {"scope": f"file {good}:1"}
    assert [p.source for p in problems] == [f"file {bad}:1"]
    assert read_files_checked([good, bad, empty]).warnings == [f"file {empty} is empty: no settings read"]


@pytest.mark.parametrize("text", [
    "a: !!python/object/apply:os.system [echo hi]\n",
    "a: !!python/name:os.system\n",
    "a: !!python/object:collections.OrderedDict {}\n",
    "a: !!set {x, y}\n",
    "a: !custom 1\n",
])
def test_tags_beyond_plain_values_are_refused(tmp_path: Path, text: str) -> None:
    path = write(tmp_path / "t.yml", text)
    assert f"a (file {path}:1): YAML tag" in refused(path)


@pytest.mark.parametrize(("text", "line", "reason"), [
    ("scope: s\nrestapi:\n\tlisten: x\n", 3, "YAML syntax error"),
    ("- a\n- b\n", 1, "the top level must be a mapping"),
    ("just a string\n", 1, "the top level must be a mapping"),
    ("a: 1\n---\nb: 2\n", 2, "YAML syntax error"),
    ("a: *nowhere\n", 1, "YAML syntax error"),
    ("a: 1\nb: \x00\n", 2, "control character #x0000"),
    ("a: 2024-13-45\n", 1, "cannot be read as '!!timestamp'"),
    ("a: <<\n", 1, "quote the value"),
])
def test_bad_files_name_file_and_line(tmp_path: Path, text: str, line: int, reason: str) -> None:
    path = write(tmp_path / "b.yml", text)
    message = refused(path)
    assert f"file {path}:{line}" in message
    assert reason in message


def test_invalid_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "u.yml"
    path.write_bytes(b"scope: s\nname: caf\xe9\n")
    assert f"file {path}:2: not valid UTF-8" in refused(str(path))


def test_oversized_file_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "big.yml"
    path.write_bytes(b"a: [" + b"1," * (MAX_FILE_BYTES // 2) + b"]\n")
    assert "larger than" in refused(str(path))


@pytest.mark.parametrize(("text", "secret"), [
    ("postgresql:\n  authentication:\n    superuser:\n      password: !!int s3cr3t-Value\n", "s3cr3t"),
    ("postgresql:\n  authentication:\n    superuser:\n      password: 2024-99-99\n", "2024-99-99"),
    ("restapi:\n  password: s3cr3t-Value\n  password: s3cr3t-Value\n", "s3cr3t"),
    ("restapi:\n  password: !vault s3cr3t-Value\n", "s3cr3t"),
])
def test_errors_never_echo_values(tmp_path: Path, text: str, secret: str) -> None:
    assert secret not in refused(write(tmp_path / "s.yml", text))


PLAIN_TYPES = (dict, list, str, int, float, bool, type(None), bytes, datetime.date)


def _all_plain(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _all_plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_all_plain(v) for v in value)
    return isinstance(value, PLAIN_TYPES)


# YAML-significant characters and tokens, so that examples reach the composer and the node walk.
TOKENS = [*"ab1:-?[]{},&*!<>|'\"#%@~.=\n \t\x00", "&x ", "*x", "<<: ", "!!int ", "!!str ", "!!binary ", "!!set ",
          "!!python/name:os.system ", "---\n", "\n  ", "- ", "a: ", "2024-13-45", "%TAG ! tag:x,2002:\n", "|\n"]
YAMLISH = st.lists(st.sampled_from(TOKENS), max_size=60).map("".join)
ANY_TEXT = st.one_of(YAMLISH, st.text(max_size=200))


@settings(max_examples=300, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(ANY_TEXT.map(lambda t: t.encode("utf-8")), st.binary(max_size=200)))
def test_any_file_loads_or_gives_a_config_error(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.getbasetemp() / "fuzz.yml"
    path.write_bytes(data)
    try:
        tree, prov = read_yaml(str(path))
    except ConfigError as exc:
        assert "\n" not in str(exc)
        assert all(p.source.startswith(f"file {path}") for p in exc.problems)
        return
    assert isinstance(tree, dict)
    assert _all_plain(tree)
    assert all(source.startswith(f"file {path}:") for source in prov.values())


JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
JSON_LIKE = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=1000)
@given(doc=st.dictionaries(st.text(max_size=10), JSON_LIKE, max_size=6))
def test_safe_dump_round_trips(tmp_path_factory: pytest.TempPathFactory, doc: dict[str, Any]) -> None:
    path = tmp_path_factory.getbasetemp() / "roundtrip.yml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    tree, _prov = read_yaml(str(path))
    assert tree == doc
