"""Timing rules of the HA loop that must hold whatever the dynamic config does (pure)."""

from __future__ import annotations


def safe_loop_wait(loop_wait: float, lease_ttl: float, retry_timeout: float) -> float:
    """How long the loop may sleep: loop_wait, but never longer than the lease in effect tolerates.

    Right after a ttl change the leader key still sits on a lease of the old ttl until the next
    keepalive grants one of the new ttl; a longer loop_wait taken at once would let the old lease
    expire (an unplanned failover). Patroni's rule loop_wait + 2*retry_timeout <= ttl is applied to
    the lease that really exists. At least one second.
    """
    return float(max(1.0, min(loop_wait, lease_ttl - 2 * retry_timeout)))
