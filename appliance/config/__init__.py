"""Configuration: schema, layering (defaults < dynamic < local YAML < env), provenance, validation."""
