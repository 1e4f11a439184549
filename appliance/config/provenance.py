"""Render the effective configuration as a flat table (key, value, source), secrets redacted."""

from __future__ import annotations

import json
from typing import Any

from appliance.config.effective import Effective, flat_view
from appliance.config.errors import redact


def provenance_rows(effective: Effective) -> list[tuple[str, str, str]]:
    """(dotted key, value as text, source) for every effective leaf, sorted by key."""
    view = flat_view(effective.local, effective.dynamic, effective.postgresql_parameters)
    return [(key, _text(redact(key, view[key])), effective.provenance.get(key, "default"))
            for key in sorted(view)]


def render_provenance(effective: Effective) -> str:
    """The rows as an aligned text table with a header, for ``show-config --provenance``."""
    rows = [("KEY", "VALUE", "SOURCE"), *provenance_rows(effective)]
    key_width = max(len(r[0]) for r in rows)
    value_width = min(max(len(r[1]) for r in rows), 60)
    return "\n".join(f"{k:<{key_width}}  {v:<{value_width}}  {s}".rstrip() for k, v, s in rows)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), sort_keys=True)
