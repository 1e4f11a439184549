"""Patroni's loose booleans read one way: boolean tags, failover_priority, synchronous_mode, "on"/"1" strings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})
QUORUM = "quorum"


def parse_bool(text: str) -> bool | None:
    """"on"/"yes"/"true"/"1" -> True, "off"/"no"/"false"/"0" -> False (any case, spaces ignored), else None."""
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    return False if word in FALSE_WORDS else None


def truthy(value: Any) -> bool:
    """A tag's value as Patroni reads it: a string is true only when it is one of TRUE_WORDS."""
    if isinstance(value, str):
        return parse_bool(value) is True
    return bool(value)


def tag_set(tags: Mapping[str, Any] | None, name: str) -> bool:
    """Whether the boolean tag ``name`` (nofailover, nosync, noloadbalance, ...) is on."""
    return truthy((tags or {}).get(name))


def failover_priority(tags: Mapping[str, Any] | None) -> int:
    """The failover_priority tag (default 1, unparsable 1); 0 when tagged nofailover."""
    tags = tags or {}
    if tag_set(tags, "nofailover"):
        return 0
    try:
        return int(tags.get("failover_priority", 1))
    except (TypeError, ValueError):
        return 1


def synchronous_mode(value: Any) -> tuple[bool, bool]:
    """(synchronous mode on, quorum mode) from the ``synchronous_mode`` value of a dynamic config."""
    if isinstance(value, str) and value.strip().lower() == QUORUM:
        return True, True
    return truthy(value), False
