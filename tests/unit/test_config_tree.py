"""The one JSON merge patch (RFC 7396), table-tested with the RFC's appendix A, and who uses it."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from appliance.api import config_routes
from appliance.cli.ctl import config_cmds
from appliance.config import tree
from appliance.config.tree import merge, merge_patch

# RFC 7396, Appendix A: (original, patch, result).
RFC_7396_EXAMPLES: list[tuple[Any, Any, Any]] = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    # Beyond the appendix: a nested object over a scalar drops its own nulls too.
    ({"a": "foo"}, {"a": {"b": "c", "d": None}}, {"a": {"b": "c"}}),
]


@pytest.mark.parametrize(("original", "patch", "result"), RFC_7396_EXAMPLES)
def test_merge_patch_follows_rfc_7396(original: Any, patch: Any, result: Any) -> None:
    before = copy.deepcopy(original), copy.deepcopy(patch)
    assert merge_patch(original, patch) == result
    assert (original, patch) == before  # the inputs are left alone


@pytest.mark.parametrize(("original", "patch", "result"),
                         [e for e in RFC_7396_EXAMPLES if isinstance(e[0], dict) and isinstance(e[1], dict)])
def test_layer_merge_with_null_deletes_is_the_same_patch(original: Any, patch: Any, result: Any) -> None:
    """The DCS layer merges in place with provenance; it must give the same document."""
    dst, prov = copy.deepcopy(original), {}
    merge(dst, prov, patch, {tree.dotted(p): "dcs" for p in tree.leaf_paths(patch)}, null_deletes=True)
    assert dst == result
    assert all(tree.get_path(dst, tuple(k.split("."))) is not tree.MISSING for k in prov)


def test_api_and_cli_apply_the_same_merge_patch() -> None:
    assert config_routes.merge_patch is merge_patch
    assert config_cmds.merge_patch is merge_patch
