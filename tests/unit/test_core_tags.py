"""The Tags model: Patroni's loose values read one way, every tag published exactly as given."""

from __future__ import annotations

import json
from typing import Any

import pytest

from appliance.core.tags import Tags
from appliance.dcs import formats as f

READINGS: list[tuple[Any, dict[str, Any]]] = [
    # (tags value as found in JSON/YAML, the known tags as read)
    (None, {}),
    ([1, 2], {}),
    ("nofailover", {}),
    ({}, {}),
    ({"nofailover": True}, {"nofailover": True, "failover_priority": 0}),
    ({"nofailover": "on"}, {"nofailover": True, "failover_priority": 0}),
    ({"nofailover": "off"}, {"nofailover": False, "failover_priority": 1}),
    ({"nofailover": "nonsense"}, {"nofailover": False}),
    ({"nofailover": 0, "failover_priority": 3}, {"nofailover": False, "failover_priority": 3}),
    ({"nofailover": "yes", "failover_priority": 3}, {"failover_priority": 0}),
    ({"failover_priority": "2"}, {"failover_priority": 2}),
    ({"failover_priority": "x"}, {"failover_priority": 1}),
    ({"failover_priority": None}, {"failover_priority": 1}),
    ({"failover_priority": 0}, {"nofailover": False, "failover_priority": 0}),
    ({"nosync": "true", "noloadbalance": 1}, {"nosync": True, "noloadbalance": True}),
    ({"nosync": "false", "noloadbalance": ""}, {"nosync": False, "noloadbalance": False}),
    ({"clonefrom": True}, {"clonefrom": True}),
    ({"clonefrom": "no"}, {"clonefrom": False}),
    ({"replicatefrom": "node2"}, {"replicatefrom": "node2"}),
    ({"replicatefrom": ""}, {"replicatefrom": None}),
    ({"replicatefrom": 2}, {"replicatefrom": None}),
    ({"zone": "a"}, {"nofailover": False, "failover_priority": 1, "nosync": False, "noloadbalance": False,
                     "clonefrom": False, "replicatefrom": None}),
]


@pytest.mark.parametrize(("value", "known"), READINGS)
def test_known_tags_are_read_from_loose_values(value: Any, known: dict[str, Any]) -> None:
    tags = Tags.from_json(value)
    assert {name: getattr(tags, name) for name in known} == known


@pytest.mark.parametrize("value", [
    {}, {"nofailover": "on", "failover_priority": "2"}, {"nosync": 1, "zone": "a", "rack": {"row": [1, 2]}},
    {"replicatefrom": 2, "clonefrom": "yes", "noloadbalance": None, "custom": False},
])
def test_tags_round_trip_to_json_as_given(value: dict[str, Any]) -> None:
    tags = Tags.from_json(json.loads(json.dumps(value)))
    assert tags.to_json() == value
    assert json.dumps(tags.to_json()) == json.dumps(value)  # same keys, same order
    assert bool(tags) is bool(value)


def test_custom_tags_are_kept_verbatim_beside_the_known_ones() -> None:
    tags = Tags.from_json({"nofailover": "on", "zone": "eu-1", "weights": {"a": 1}})
    assert tags.custom == {"zone": "eu-1", "weights": {"a": 1}}
    assert tags.to_json() == {"nofailover": "on", "zone": "eu-1", "weights": {"a": 1}}


def test_to_json_is_a_copy() -> None:
    tags = Tags.from_json({"zone": "a"})
    tags.to_json()["zone"] = "b"
    assert tags.to_json() == {"zone": "a"}


@pytest.mark.parametrize("raw", [
    '{"nofailover":"yes","failover_priority":"2","zone":"a"}',
    '{"noloadbalance":1,"nosync":false,"replicatefrom":"n2","clonefrom":true}',
])
def test_member_key_tags_are_written_back_exactly(raw: str) -> None:
    value = ('{"conn_url":"postgres://h:5432/postgres","api_url":"http://h:8008/patroni","state":"running",'
             f'"role":"replica","version":"4.1.4","tags":{raw},"xlog_location":10,"timeline":1}}')
    member = f.decode_member("n", value)
    assert member.tags == Tags(json.loads(raw))
    assert f.encode_member(member) == value
