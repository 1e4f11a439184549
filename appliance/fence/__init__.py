"""Fencing that does not depend on the manager: the lease order it writes, the fencer that obeys it."""
