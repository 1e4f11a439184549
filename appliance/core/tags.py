"""A node's tags: Patroni's known ones read one way (core/flags), every tag kept as the operator gave it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from appliance.core.flags import failover_priority, tag_set

# The tags Patroni gives a meaning to (nostream is Patroni's too, but nothing here acts on it).
KNOWN = frozenset({"nofailover", "failover_priority", "nosync", "noloadbalance", "replicatefrom", "clonefrom"})


@dataclass(frozen=True)
class Tags:
    """The ``tags`` object of a member key, /patroni and the local config.

    ``values`` holds every tag verbatim (known and custom, the operator's loose values as given),
    because that is what Patroni publishes; the properties are the one reading of the known ones.
    """

    values: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, value: Any) -> Tags:
        """Tags from a decoded JSON/YAML ``tags`` value; anything but an object means no tags."""
        return cls(dict(value)) if isinstance(value, Mapping) else cls()

    def to_json(self) -> dict[str, Any]:
        """The ``tags`` object as published: exactly the values given."""
        return dict(self.values)

    def __bool__(self) -> bool:
        return bool(self.values)

    @property
    def nofailover(self) -> bool:
        return tag_set(self.values, "nofailover")

    @property
    def failover_priority(self) -> int:
        """Default 1, unparsable 1; 0 when tagged nofailover."""
        return failover_priority(self.values)

    @property
    def nosync(self) -> bool:
        return tag_set(self.values, "nosync")

    @property
    def noloadbalance(self) -> bool:
        return tag_set(self.values, "noloadbalance")

    @property
    def clonefrom(self) -> bool:
        return tag_set(self.values, "clonefrom")

    @property
    def replicatefrom(self) -> str | None:
        """The member to stream from instead of the leader (a name; anything else names nobody)."""
        value = self.values.get("replicatefrom")
        return value if isinstance(value, str) and value else None

    @property
    def custom(self) -> dict[str, Any]:
        """The tags Patroni gives no meaning to (zone, rack, ...), verbatim."""
        return {k: v for k, v in self.values.items() if k not in KNOWN}
