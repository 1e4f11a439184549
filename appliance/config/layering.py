"""The configuration layering API in one place: load, validate, resolve, seed, render."""

from appliance.config.dynamic import validate_dynamic
from appliance.config.effective import Effective, NotApplied, flat_view, resolve, resolve_or_last_good
from appliance.config.errors import ConfigError, Problem
from appliance.config.layers import LocalLayers, bootstrap_dynamic, build_local, load_local
from appliance.config.provenance import provenance_rows, render_provenance

__all__ = [
    "ConfigError",
    "Effective",
    "LocalLayers",
    "NotApplied",
    "Problem",
    "bootstrap_dynamic",
    "build_local",
    "flat_view",
    "load_local",
    "provenance_rows",
    "render_provenance",
    "resolve",
    "resolve_or_last_good",
    "validate_dynamic",
]
