"""A software watchdog: stop a primary whose lease is about to expire even if the loop is stuck.

The HA loop demotes when the DCS has been unreachable for retry_timeout. If the loop itself hangs
(a stuck query, a slow disk), this thread still stops PostgreSQL before the lease can expire and
another node can promote, so at most one node accepts writes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class LeaseGuard(threading.Thread):
    """Calls ``fence()`` once when now > lease_ok_at + ttl - margin while we believe we lead."""

    def __init__(self, lease_ok_at: Callable[[], float | None], leading: Callable[[], bool],
                 ttl: Callable[[], float], fence: Callable[[], None], margin: float = 1.5,
                 clock: Callable[[], float] = time.monotonic, period: float = 0.2) -> None:
        super().__init__(name="lease-guard", daemon=True)
        self._lease_ok_at = lease_ok_at
        self._leading = leading
        self._ttl = ttl
        self._fence = fence
        self._margin = margin
        self._clock = clock
        self._period = period
        self._stop = threading.Event()
        self.fenced_at: float | None = None

    def check(self) -> bool:
        """One check; True when it fenced."""
        if not self._leading():
            self.fenced_at = None
            return False
        ok_at = self._lease_ok_at()
        deadline = (ok_at if ok_at is not None else float("-inf")) + self._ttl() - self._margin
        if self._clock() < deadline or self.fenced_at is not None:
            return False
        self.fenced_at = self._clock()
        log.error("leader lease about to expire and the HA loop did not demote: fencing PostgreSQL")
        try:
            self._fence()
        except Exception:
            log.exception("fencing failed")
        return True

    def run(self) -> None:
        while not self._stop.wait(self._period):
            self.check()

    def stop(self) -> None:
        self._stop.set()
