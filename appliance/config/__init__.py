"""Configuration: schema, layering (defaults < dynamic < local YAML < env), provenance, validation."""

from appliance.config.dynamic import validate_dynamic
from appliance.config.effective import Effective, NotApplied, flat_view, resolve, resolve_or_last_good
from appliance.config.errors import REDACTED, ConfigError, Problem, is_secret_key, redact
from appliance.config.local_layers import LocalLayers, bootstrap_dynamic, build_local, load_local
from appliance.config.provenance import provenance_rows, render_provenance

__all__ = [
    "REDACTED",
    "ConfigError",
    "Effective",
    "LocalLayers",
    "NotApplied",
    "Problem",
    "bootstrap_dynamic",
    "build_local",
    "flat_view",
    "is_secret_key",
    "load_local",
    "provenance_rows",
    "redact",
    "render_provenance",
    "resolve",
    "resolve_or_last_good",
    "validate_dynamic",
]
