"""edit-config's pure parts: -s/-p parsing, null deletes, merge patches, the unified diff, validation."""

from __future__ import annotations

import pytest

from appliance.cli.ctl.config_cmds import new_config, validate
from appliance.cli.ctl.editing import (
    DELETE,
    EditError,
    apply_changes,
    load_document,
    parse_pg,
    parse_set,
    unified_diff,
)
from appliance.cli.ctl.target import CtlError
from appliance.config.tree import merge_patch

BASE = {"ttl": 30, "loop_wait": 10, "retry_timeout": 10,
        "postgresql": {"parameters": {"work_mem": "4MB", "max_connections": 100}, "use_slots": True}}


def test_parse_set_yaml_values() -> None:
    assert parse_set("loop_wait=5") == (("loop_wait",), 5)
    assert parse_set("synchronous_mode=true") == (("synchronous_mode",), True)
    assert parse_set("postgresql.use_slots = false") == (("postgresql", "use_slots"), False)
    assert parse_set("a.b=some text") == (("a", "b"), "some text")
    assert parse_set("ttl=null")[1] is DELETE
    assert parse_set("x=[1, 2]") == (("x",), [1, 2])


@pytest.mark.parametrize("bad", ["loop_wait", "=5", "a..b=1", ".a=1"])
def test_parse_set_rejects_malformed(bad: str) -> None:
    with pytest.raises(EditError, match=r"expected key\.path=value"):
        parse_set(bad)


def test_parse_pg() -> None:
    assert parse_pg("work_mem=16MB") == (("postgresql", "parameters", "work_mem"), "16MB")
    assert parse_pg("max_connections=200") == (("postgresql", "parameters", "max_connections"), 200)
    assert parse_pg("work_mem=null")[1] is DELETE
    with pytest.raises(EditError, match="parameter=value"):
        parse_pg("work_mem")
    with pytest.raises(EditError):
        parse_pg("a.b=1")


def test_apply_changes_sets_deletes_and_prunes_empty_parents() -> None:
    after = apply_changes(BASE, [parse_set("ttl=40"), parse_pg("work_mem=null"), parse_set("new.deep.key=1")])
    assert after["ttl"] == 40
    assert "work_mem" not in after["postgresql"]["parameters"]
    assert after["new"] == {"deep": {"key": 1}}
    assert BASE["ttl"] == 30  # the input is untouched
    pruned = apply_changes({"a": {"b": {"c": 1}}, "d": 2}, [parse_set("a.b.c=null")])
    assert pruned == {"d": 2}
    assert apply_changes(BASE, [parse_set("missing.key=null")]) == BASE


def test_merge_patch_null_deletes_objects_merge() -> None:
    patch = {"ttl": None, "postgresql": {"parameters": {"work_mem": "8MB", "max_connections": None}}, "pause": True}
    assert merge_patch(BASE, patch) == {
        "loop_wait": 10, "retry_timeout": 10, "pause": True,
        "postgresql": {"parameters": {"work_mem": "8MB"}, "use_slots": True},
    }


def test_load_document_errors_name_the_input() -> None:
    assert load_document("", "f") == {}
    with pytest.raises(EditError, match=r"--apply x\.yml line 1: not valid YAML"):
        load_document("a: [1,", "--apply x.yml")
    with pytest.raises(EditError, match="expected a mapping"):
        load_document("- 1", "--apply x.yml")


def test_unified_diff_of_yaml_renderings() -> None:
    diff = unified_diff(BASE, apply_changes(BASE, [parse_set("loop_wait=5")]))
    assert diff.startswith("--- before\n+++ after\n")
    assert "-loop_wait: 10\n+loop_wait: 5\n" in diff
    assert unified_diff(BASE, BASE) == ""


def test_new_config_from_flags_and_files() -> None:
    assert new_config(BASE, (), (), None, None) is None
    after = new_config(BASE, ("loop_wait=5",), ("work_mem=16MB",), None, None)
    assert after is not None and after["loop_wait"] == 5
    assert after["postgresql"]["parameters"]["work_mem"] == "16MB"
    with pytest.raises(CtlError, match="exclude each other"):
        new_config(BASE, (), (), "a", "b")
    with pytest.raises(CtlError, match=r"cannot read /nonexistent\.yml"):
        new_config(BASE, (), (), "/nonexistent.yml", None)


def test_validate_names_the_field() -> None:
    validate({"ttl": 30, "loop_wait": 10, "retry_timeout": 10})
    with pytest.raises(CtlError, match=r"max_connections \(edit-config\): must be at least 25"):
        validate({"postgresql": {"parameters": {"max_connections": 10}}})
    with pytest.raises(CtlError, match="loop_wait \\+ 2\\*retry_timeout must be <= ttl"):
        validate({"ttl": 10, "loop_wait": 10, "retry_timeout": 10})
