"""Stand-ins for this PostgreSQL's parameter catalog and value checks (unit tests run no binary)."""

from __future__ import annotations

from collections.abc import Iterable

from appliance.postgres.guc import FakeValueChecker, ValueChecker
from appliance.postgres.guc_catalog import GucCatalog, GucInfo
from appliance.postgres.validate import Checks


class AnyCatalog(GucCatalog):
    """Knows every name as a user-settable string parameter."""

    def get(self, name: str) -> GucInfo | None:
        return GucInfo(name, "user", "STRING")

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str)


def fake_checks(reject: Iterable[str] = ()) -> Checks:
    """A ``Checks`` for validate.check_*: every name known; the values of ``reject`` refused."""
    refused = set(reject)
    checker = FakeValueChecker(reject=lambda name, _value: "invalid value (fake)" if name in refused else None)

    def checks(bin_dir: str) -> tuple[GucCatalog, ValueChecker]:
        return AnyCatalog(), checker

    return checks
