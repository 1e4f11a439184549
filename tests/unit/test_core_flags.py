"""One reading of Patroni's loose booleans: every place that reads a tag or synchronous_mode agrees."""

from __future__ import annotations

from typing import Any

import pytest

from appliance.api.health import _replica
from appliance.api.switchover_checks import CandidateCheck
from appliance.cli.ctl.formatting import is_synchronous
from appliance.config.dynamic import check_dynamic, origin_of
from appliance.config.schema import DynamicConfig, LocalConfig
from appliance.core.flags import failover_priority, parse_bool, synchronous_mode, tag_set, truthy
from appliance.core.model import ClusterView, Member
from appliance.core.tags import Tags
from appliance.manager.peers import parse_status
from appliance.manager.settings import ha_settings

TAG_VALUES: list[tuple[Any, bool]] = [
    (True, True), (False, False), (None, False), (1, True), (0, False),
    ("true", True), ("True", True), (" yes ", True), ("on", True), ("1", True),
    ("false", False), ("off", False), ("no", False), ("0", False), ("", False), ("nonsense", False),
]


@pytest.mark.parametrize(("value", "expected"), TAG_VALUES)
def test_every_reader_of_a_tag_agrees(value: Any, expected: bool) -> None:
    tags = {"nofailover": value, "nosync": value, "noloadbalance": value}
    assert truthy(value) is expected
    assert tag_set(tags, "nofailover") is expected
    member = Member("n1", tags=Tags(tags))
    assert (member.tags.nofailover, member.tags.nosync, member.tags.noloadbalance) == (expected,) * 3
    peer = parse_status("n1", {"tags": tags})
    assert peer.tags.nofailover is expected
    ha = ha_settings(DynamicConfig(), LocalConfig.model_validate({"name": "n1", "tags": tags}))
    assert ha.tags.nofailover is expected
    assert (ha.tags.failover_priority == 0) is expected
    verdict = _replica({"postgres": {"running": True, "role": "replica"}, "tags": tags}, {}, 0.0)
    assert (verdict.code == 503) is expected


@pytest.mark.parametrize(("tags", "priority"), [
    ({}, 1), ({"failover_priority": 3}, 3), ({"failover_priority": "2"}, 2), ({"failover_priority": "x"}, 1),
    ({"failover_priority": 0}, 0), ({"failover_priority": 5, "nofailover": "on"}, 0),
])
def test_failover_priority_is_read_one_way(tags: dict[str, Any], priority: int) -> None:
    assert failover_priority(tags) == priority
    assert Member("n1", tags=Tags(tags)).tags.failover_priority == priority
    assert parse_status("n1", {"tags": tags}).tags.failover_priority == priority


SYNC_VALUES: list[tuple[Any, tuple[bool, bool]]] = [
    (True, (True, False)), (False, (False, False)), (None, (False, False)),
    ("on", (True, False)), ("off", (False, False)), ("OFF", (False, False)), ("yes", (True, False)),
    ("quorum", (True, True)), (" Quorum ", (True, True)), ("nonsense", (False, False)),
]


@pytest.mark.parametrize(("value", "expected"), SYNC_VALUES)
def test_every_reader_of_synchronous_mode_agrees(value: Any, expected: tuple[bool, bool]) -> None:
    assert synchronous_mode(value) == expected
    view = ClusterView(config={"synchronous_mode": value})
    assert is_synchronous(view) is expected[0]
    check = CandidateCheck(view, None)
    assert (check.sync_mode, check.quorum) == expected


@pytest.mark.parametrize(("value", "expected"), [("on", True), ("off", False), ("yes", True), ("0", False)])
def test_the_dynamic_config_reads_boolean_strings_the_same_way(value: str, expected: bool) -> None:
    assert parse_bool(value) is expected
    doc = {"synchronous_mode": value}
    assert check_dynamic(doc, origin_of(doc, "dcs"), strict=False).config.synchronous_mode is expected


@pytest.mark.parametrize(("value", "stored", "sync", "quorum"), [
    ("quorum", "quorum", True, True), (" Quorum ", "quorum", True, True), (True, True, True, False),
    ("on", True, True, False), (False, False, False, False)])
def test_synchronous_mode_quorum_is_acted_on(value: Any, stored: Any, sync: bool, quorum: bool) -> None:
    """A DCS document with synchronous_mode quorum (any case, as Patroni reads it) reaches the HA
    settings as quorum mode: accepted means acted on."""
    doc = {"synchronous_mode": value}
    dynamic = check_dynamic(doc, origin_of(doc, "dcs"), strict=False).config
    assert dynamic.synchronous_mode == stored
    ha = ha_settings(dynamic, LocalConfig.model_validate({"name": "n1", "scope": "s"}))
    assert (ha.synchronous_mode, ha.synchronous_quorum, ha.sync_only) == (sync, quorum, sync and not quorum)


def test_our_own_writes_take_quorum_only_spelled_as_patroni_writes_it() -> None:
    assert DynamicConfig.model_validate({"synchronous_mode": "quorum"}).synchronous_mode == "quorum"
    for bad in ("QUORUM", "maybe", 1):
        with pytest.raises(ValueError, match='must be true, false or "quorum"'):
            DynamicConfig.model_validate({"synchronous_mode": bad})
