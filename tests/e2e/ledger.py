"""A writer that numbers its commits and remembers which ones were acknowledged, for fault tests.

Each INSERT commits on its own. An acknowledged id must survive every failover (strict synchronous
mode); an id whose commit got no answer proves nothing either way. Commits are never cancelled
from the client side: cancelling a wait for a synchronous standby makes PostgreSQL report the
commit as done although no standby has it, which is not what the test must measure.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

ATTEMPT_TIMEOUT = 10.0  # then the attempt is abandoned (it still counts if it is acknowledged later)


class Ledger:
    """``Ledger(connect, targets)``: writes ids 1, 2, ... through ``targets`` (nodes whose HAProxy
    port 5000 to use), moving to the next target when one fails."""

    def __init__(self, connect: Callable[[str], psycopg.Connection[Any]], targets: Sequence[str],
                 start_id: int = 1, pause: float = 0.02) -> None:
        self.connect = connect
        self.targets = list(targets)
        self.next_id = start_id
        self.pause = pause
        self.acked: dict[int, float] = {}
        self.errors: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection[Any] | None = None
        self._target = 0

    def start(self) -> Ledger:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(ATTEMPT_TIMEOUT + 5)
        self._drop()

    def retarget(self, targets: Sequence[str]) -> None:
        with self._lock:
            self.targets = list(targets)
            self._target = 0
        self._drop()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # a broken connection may fail to close: it is gone anyway
                conn.close()

    def _attempt(self, conn: psycopg.Connection[Any], ident: int, outcome: dict[str, Any]) -> None:
        try:
            conn.execute("INSERT INTO ledger (id) VALUES (%s)", (ident,))
        except psycopg.Error as exc:
            outcome["error"] = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return
        with self._lock:
            self.acked[ident] = time.monotonic()
        outcome["ok"] = True

    def _run(self) -> None:
        while not self._stop.is_set():
            ident = self.next_id
            self.next_id += 1
            outcome: dict[str, Any] = {}
            try:
                if self._conn is None:
                    with self._lock:
                        target = self.targets[self._target % len(self.targets)]
                    self._conn = self.connect(target)
                worker = threading.Thread(target=self._attempt, args=(self._conn, ident, outcome), daemon=True)
                worker.start()
                worker.join(ATTEMPT_TIMEOUT)
                if worker.is_alive():
                    outcome["error"] = "no answer (abandoned)"
                    self._conn = None  # left to its thread; never cancelled
            except psycopg.Error as exc:
                outcome["error"] = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if not outcome.get("ok"):
                self.errors.append((time.monotonic(), str(outcome.get("error"))))
                self._drop()
                with self._lock:
                    self._target += 1
                self._stop.wait(0.1)
            self._stop.wait(self.pause)

    def acked_ids(self) -> set[int]:
        with self._lock:
            return set(self.acked)

    def longest_gap(self, since: float, until: float | None = None) -> float:
        """Longest time without an acknowledged write from ``since`` (the fault) to ``until`` (now),
        an outage still going on included."""
        end = time.monotonic() if until is None else until
        with self._lock:
            times = sorted(t for t in self.acked.values() if since <= t <= end)
        return max(b - a for a, b in itertools.pairwise([since, *times, end]))

    def wait_acks_after(self, since: float, count: int, timeout: float) -> float:
        """Wait until ``count`` writes were acknowledged after ``since``; returns when the first was."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                after = sorted(t for t in self.acked.values() if t > since)
            if len(after) >= count:
                return after[0]
            time.sleep(0.2)
        recent = [e for t, e in self.errors if t > since][-3:]
        raise AssertionError(f"writes did not resume within {timeout:.0f} s; last errors: {recent}")
