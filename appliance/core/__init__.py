"""The pure HA core: cluster view, local state, decide() -> actions. No I/O, no clock reads."""
